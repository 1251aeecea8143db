"""The PEX reactor's dialing: the ensure-peers routine, dials with back-off, the seeds.

Implements behaviour.md §4.6 (CometBFT v0.38 ``ensurePeersRoutine``, ``ensurePeers``,
``dialPeer``, ``dialSeeds``) on the asyncio Switch. One job: keep
``max_num_outbound_peers`` outbound peers, dialing what the sans-IO
:class:`~cometp2p.pex.core.PexCore` plans (subject to its back-off), falling back to the
seeds, and asking a random peer for more addresses when the book needs them (v0.38
strategy). It also puts the persistent peers in the book, as Go's Switch does.

The :class:`~cometp2p.pex.reactor.PEXReactor` owns one :class:`PexDialer`; the seed-mode
crawler dials through it too. Dial tasks run in the reactor's task set.
"""

from __future__ import annotations

import asyncio
import logging

from cometp2p.errors import CometP2PError, LocalProtocolError, RejectedError, RejectReason
from cometp2p.pex.config import PEX_CHANNEL
from cometp2p.pex.core import DialVerdict
from cometp2p.pex.errors import AddrBookError
from cometp2p.pex.host import PexHost, guarded, wait_for_event, wait_switch_running
from cometp2p.pex.peers import register_listen_address
from cometp2p.switch.peer import Peer
from cometp2p.switch.switch import AlreadyConnectedError, Switch
from cometp2p.wire.netaddress import NetAddress

__all__ = ["PexDialer"]

logger = logging.getLogger("cometp2p.pex.reactor")  # the reactor's log, as before the split


class PexDialer:
    """Dials, seed dials and the ensure-peers routine of one PEX reactor.

    Args:
        host: the reactor.

    Attributes:
        wake: set to run an ensure-peers round before the period ends (a seed answered).
    """

    def __init__(self, host: PexHost) -> None:
        self._host = host
        self.wake = asyncio.Event()
        self._dialing_seeds = False
        self._persistent_added = False

    # -- dials ----------------------------------------------------------------------------

    async def dial_peer(self, addr: NetAddress) -> Peer | None:
        """Dial ``addr`` subject to its back-off; the Peer on success, else ``None``."""
        host = self._host
        switch = host._switch()
        if not switch.is_running:
            return None
        verdict = host.core.check_dial(
            addr, persistent=switch.is_peer_persistent(addr), now=host.now()
        )
        if verdict is not DialVerdict.DIAL:
            logger.debug("[%s] not dialing %s: %s", addr.id, addr, verdict.value)
            return None
        host.counters.dials += 1
        try:
            peer = await switch.dial_peer_with_address(addr)
        except (AlreadyConnectedError, LocalProtocolError):
            return None  # connected already, or the Switch is stopping: not a failure
        except RejectedError as exc:
            if exc.reason is RejectReason.SELF:
                logger.info("[%s] %s is ourselves; never dialing it again", addr.id, addr)
                host.core.dialed_ourselves(addr)
            elif exc.reason is not RejectReason.DUPLICATE:
                self._dial_failed(addr, exc)
            return None
        except CometP2PError as exc:
            self._dial_failed(addr, exc)
            return None
        finally:
            host._notify()
        host.core.dial_succeeded(addr)
        return peer

    def _dial_failed(self, addr: NetAddress, exc: CometP2PError) -> None:
        host = self._host
        host.counters.dials_failed += 1
        attempts = host.core.dial_failed(addr, host.now())
        # A refusal (another chain or block version, a wrong ID, ...) is news for the
        # operator: INFO (issue #12). An address that does not answer is routine: DEBUG.
        level = logging.INFO if isinstance(exc, RejectedError) else logging.DEBUG
        logger.log(level, "[%s] dial %s failed (attempt %d): %s", addr.id, addr, attempts, exc)

    async def _dial_peer_task(self, addr: NetAddress) -> None:
        await self.dial_peer(addr)

    async def dial_seeds(self) -> bool:
        """Dial seeds in random order until one connects (behaviour.md §4.6 dialSeeds).

        Returns:
            True if a seed is connected (or already was); False if none connected, the
            Switch is stopping, or seeds are being dialed already.
        """
        if self._dialing_seeds:
            return False
        self._dialing_seeds = True
        host = self._host
        try:
            seeds = list(host.core.seed_addrs)
            host.rng.shuffle(seeds)
            switch = host._switch()
            for seed in seeds:
                connected = await self._dial_seed(switch, seed)
                if connected is not None:
                    return connected
            if seeds:
                logger.warning("couldn't connect to any seeds")
            return False
        finally:
            self._dialing_seeds = False
            host._notify()

    async def _dial_seed(self, switch: Switch, seed: NetAddress) -> bool | None:
        """One seed dial: True connected, False stop trying, ``None`` try the next."""
        if not switch.is_running:
            return False
        self._host.counters.seed_dials += 1
        try:
            await switch.dial_peer_with_address(seed)
            return True
        except AlreadyConnectedError:
            return True
        except LocalProtocolError:
            return False  # the Switch is stopping
        except RejectedError as exc:
            if exc.reason is RejectReason.DUPLICATE:
                return True
            logger.warning("error dialing seed %s: %s", seed, exc)
        except CometP2PError as exc:
            logger.warning("error dialing seed %s: %s", seed, exc)
        return None

    async def _dial_seeds_task(self) -> None:
        await self.dial_seeds()

    # -- the ensure-peers routine ---------------------------------------------------------

    async def routine(self) -> None:
        """Run an ensure-peers round every ``ensure_peers_period_s`` (after a random
        first delay when peers exist), and an extra one whenever :attr:`wake` is set."""
        host = self._host
        switch = host._switch()
        if not await wait_switch_running(switch):
            return
        period = host.config.ensure_peers_period_s
        out, inbound, dialing = switch.num_peers()
        if out + inbound + dialing > 0:
            await asyncio.sleep(host.rng.uniform(0, period))  # avoid a thundering herd
        loop = asyncio.get_running_loop()
        await guarded(self.ensure_peers, True)
        next_tick = loop.time() + period
        while True:
            woken = await wait_for_event(self.wake, next_tick - loop.time())
            if woken and loop.time() < next_tick:
                await guarded(self.ensure_peers, False)
                continue
            next_tick = max(next_tick + period, loop.time())
            await guarded(self.ensure_peers, True)

    async def ensure_peers(self, period_elapsed: bool) -> None:
        """One ensure-peers round (behaviour.md §4.6).

        Args:
            period_elapsed: a periodic round (not one woken early): only those ask a
                random peer for addresses (v0.38 strategy).
        """
        host = self._host
        switch = host._switch()
        if not switch.is_running:
            return
        if not self._persistent_added:
            self._add_persistent_peers(switch)
        else:
            register_listen_address(host.book, host.core, switch)
        out, _inbound, dialing = switch.num_peers()
        seeds_dialed = self._seed_fallback(out)
        num_to_dial = switch.max_num_outbound_peers - (out + dialing)
        if num_to_dial <= 0:
            return
        to_dial = host.core.plan_dials(num_to_dial, out, switch.is_dialing_or_existing_address)
        for addr in to_dial:
            host._spawn(self._dial_peer_task(addr), f"pex-dial-{addr.id[:8]}")
        if to_dial:
            # Let the dials register with the Switch (num_peers' "dialing") before the
            # next round counts them: a wake event already set would otherwise start
            # that round at once and dial past max_num_outbound_peers.
            await asyncio.sleep(0)
        book = host.book
        if book.need_more_addrs():
            book.reinstate_bad_peers(host.now())
        if not book.need_more_addrs():
            return
        if host.scheduler is None and period_elapsed:
            self._ask_a_random_peer(switch)
        if not to_dial and host.core.seed_addrs and not self._dialing_seeds and not seeds_dialed:
            host._spawn(self._dial_seeds_task(), "pex-dial-seeds")

    def _seed_fallback(self, num_outbound: int) -> bool:
        """Dial the seeds again when we have had no outbound peer for too long; True if
        that dial was started."""
        host = self._host
        idle_s = host.core.seed_fallback_due(num_outbound, host.now())
        if idle_s is None or self._dialing_seeds:
            return False
        logger.info(
            "no outbound peer for %.1f s while the address book holds %d addresses; "
            "dialing the seeds again",
            idle_s,
            len(host.book),
        )
        host._spawn(self._dial_seeds_task(), "pex-dial-seeds")
        return True

    def _ask_a_random_peer(self, switch: Switch) -> None:
        """v0.38: ask one random peer that may be asked now for addresses."""
        host = self._host
        now = host.now()
        candidates = [
            p
            for p in switch.peers.list()
            if p.has_channel(PEX_CHANNEL) and host.core.can_request(p.id, now)
        ]
        if candidates:
            host.request_addrs(host.rng.choice(candidates))

    def _add_persistent_peers(self, switch: Switch) -> None:
        """Go's Switch puts the persistent peers in the book, with us as the source."""
        self._persistent_added = True
        host = self._host
        src = register_listen_address(host.book, host.core, switch)
        if src is None:
            return
        now = host.now()
        for addr in switch.persistent_peers:
            if addr.id == src.id:
                continue
            try:
                host.book.add_address(addr, src, now)
            except AddrBookError as exc:
                logger.debug("persistent peer %s not added to the book: %s", addr, exc)
