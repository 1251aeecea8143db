"""Outbound dials of the Switch (behaviour.md §1.7, §1.10): dialing, the cooldown of
incompatible peers, and the persistent-peer reconnect loops.

One job: decide whether and when to dial an address, dial it and hand the upgraded
connection to the Switch's admission. The Switch owns one :class:`Dialer` (composition)
and keeps the public methods of the same names; the dial and reconnect tasks run in the
Switch's dial TaskGroup (``_spawn``), which :meth:`Switch.stop` cancels and awaits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from cometp2p.aio.resolve import check_address, resolve_address
from cometp2p.aio.transport import Transport, UpgradedConnection
from cometp2p.errors import (
    CometP2PError,
    LocalProtocolError,
    NetAddressLookupError,
    RejectedError,
    RejectReason,
)
from cometp2p.switch.reconnect import ReconnectPolicy, ReconnectSchedule
from cometp2p.switch.registry import PeerRegistry
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, split_address

if TYPE_CHECKING:
    from cometp2p.switch.peer import Peer

__all__ = ["AlreadyConnectedError", "DialOwner", "Dialer"]

logger = logging.getLogger("cometp2p.switch.switch")  # the Switch's log, as before the split

MAX_COOLDOWN_ENTRIES: Final = 4096
"""Most node IDs whose incompatible refusals are remembered at once."""


class AlreadyConnectedError(CometP2PError):
    """The address is being dialed already, or its ID or IP is already a peer.

    The reconnect and PEX logic treat this as success (behaviour.md §1.7).
    """


class DialOwner(Protocol):
    """What the dialer needs of the Switch that owns it."""

    rng: random.Random
    reconnect_policy: ReconnectPolicy
    dial_jitter_s: float
    transport: Transport
    registry: PeerRegistry
    self_addresses: set[NetAddress]
    listen_address: tuple[str, int] | None

    @property
    def is_running(self) -> bool: ...

    @property
    def node_id(self) -> NodeID: ...

    def is_dialing_or_existing_address(self, address: NetAddress) -> bool: ...

    def _spawn(
        self, coro: Coroutine[object, object, None], name: str
    ) -> asyncio.Task[None] | None: ...

    async def _add_upgraded(self, upgraded: UpgradedConnection) -> Peer: ...


class Dialer:
    """Dials, cooldowns and reconnect loops of one Switch.

    Args:
        owner: the Switch.
    """

    def __init__(self, owner: DialOwner) -> None:
        self._owner = owner
        self.reconnecting: set[NodeID] = set()
        self._cooldown_until: dict[NodeID, float] = {}
        self.refusals: dict[NodeID, tuple[int, float]] = {}  # (in a row, last at)
        self._short_lived: dict[NodeID, int] = {}  # persistent peers' quick deaths in a row

    # ------------------------------------------------------------------ cooldown

    def cooldown_remaining(self, node_id: str) -> float:
        """Seconds before ``node_id`` may be dialed again after an incompatible refusal."""
        until = self._cooldown_until.get(NodeID(node_id.lower()))
        if until is None:
            return 0.0
        left = until - asyncio.get_running_loop().time()
        if left <= 0:
            del self._cooldown_until[NodeID(node_id.lower())]
            return 0.0
        return left

    def end_cooldown(self, node_id: str) -> None:
        """Allow dials to ``node_id`` again at once."""
        self._cooldown_until.pop(NodeID(node_id.lower()), None)
        self.refusals.pop(NodeID(node_id.lower()), None)

    def cool_down(self, node_id: str | None, error: CometP2PError) -> None:
        """Start (or lengthen) ``node_id``'s cooldown if ``error`` is an incompatible refusal."""
        if node_id is None or not isinstance(error, RejectedError):
            return
        if error.reason is not RejectReason.INCOMPATIBLE:
            return
        policy = self._owner.reconnect_policy
        now = asyncio.get_running_loop().time()
        key = NodeID(node_id.lower())
        count, last = self.refusals.get(key, (0, now))
        if now - last > 2 * policy.incompatible_cooldown_max_s:
            count = 0  # a refusal long after the last one starts the cooldowns afresh
        period = policy.incompatible_cooldown(count + 1)
        if period <= 0:
            return
        if len(self.refusals) >= MAX_COOLDOWN_ENTRIES:
            self._prune_cooldowns(now)
        self.refusals[key] = (count + 1, now)
        self._cooldown_until[key] = now + period
        logger.info(
            "[%s] incompatible (refusal %d in a row): %s; not dialing it for %g s",
            node_id,
            count + 1,
            error,
            period,
        )

    def _prune_cooldowns(self, now: float) -> None:
        """Bound the cooldown state (IDs that churn must not grow it without end)."""
        horizon = 2 * self._owner.reconnect_policy.incompatible_cooldown_max_s
        for key, (_, last) in list(self.refusals.items()):
            if now - last > horizon:
                del self.refusals[key]
        for key, until in list(self._cooldown_until.items()):
            if until <= now:
                del self._cooldown_until[key]
        while len(self.refusals) >= MAX_COOLDOWN_ENTRIES:  # oldest first
            key = next(iter(self.refusals))
            del self.refusals[key]
            self._cooldown_until.pop(key, None)

    # ------------------------------------------------------------------ dialing

    def dial_peers_async(self, addresses: Sequence[NetAddress | str]) -> None:
        """See :meth:`Switch.dial_peers_async`."""
        owner = self._owner
        order = list(addresses)
        for item in order:
            check_address(item)
        owner.rng.shuffle(order)
        for item in order:
            if isinstance(item, NetAddress) and self._is_own_address(item):
                continue
            node_id = item.id if isinstance(item, NetAddress) else split_address(item)[0]
            owner._spawn(self._dial_later(item), f"dial-{node_id[:12]}")

    def _is_own_address(self, address: NetAddress) -> bool:
        owner = self._owner
        if address.id == owner.node_id or address in owner.self_addresses:
            return True
        listen = owner.listen_address
        return listen is not None and address.port == listen[1] and str(address.ip) == listen[0]

    async def _dial_later(self, item: str | NetAddress) -> None:
        try:
            address = await resolve_address(item)
        except NetAddressLookupError as exc:
            logger.warning("skipping dial_peers entry %r: %s", item, exc)
            return
        if self._is_own_address(address):
            return
        jitter = self._owner.dial_jitter_s
        if jitter > 0:
            await asyncio.sleep(self._owner.rng.uniform(0, jitter))
        try:
            await self.dial_peer_with_address(address)
        except AlreadyConnectedError as exc:
            logger.debug("[%s] not dialing: %s", address.id, exc)
        except CometP2PError as exc:
            logger.info("[%s] dial failed: %s", address.id, exc)

    async def dial_peer_with_address(self, address: NetAddress) -> Peer:
        """See :meth:`Switch.dial_peer_with_address`."""
        owner = self._owner
        if not owner.is_running:
            raise LocalProtocolError(f"cannot dial {address}: the Switch is not running")
        if address.id == owner.node_id:
            owner.self_addresses.add(address)
            raise RejectedError(RejectReason.SELF, f"{address} is our own ID", node_id=address.id)
        if owner.is_dialing_or_existing_address(address):
            raise AlreadyConnectedError(f"{address} is already dialing or connected")
        left = self.cooldown_remaining(address.id)
        if left > 0:
            raise RejectedError(
                RejectReason.INCOMPATIBLE,
                f"refused as incompatible recently; not dialing for another {left:.1f} s",
                node_id=address.id,
            )
        dialing = owner.registry.dialing
        dialing.add(address.id)
        try:
            try:
                upgraded = await owner.transport.dial(address)
            except CometP2PError as exc:
                self._after_dial_failure(address, exc)
                raise
            return await owner._add_upgraded(upgraded)
        finally:
            dialing.discard(address.id)

    def _after_dial_failure(self, address: NetAddress, exc: CometP2PError) -> None:
        owner = self._owner
        if isinstance(exc, RejectedError) and exc.reason is RejectReason.SELF:
            logger.info("[%s] %s is ourselves; not dialing it again", address.id, address)
            owner.self_addresses.add(address)
            return
        self.cool_down(address.id, exc)
        if owner.registry.is_persistent(address) and owner.is_running:
            self.start_reconnect(address, first_attempt_done=True)

    # ------------------------------------------------------------------ reconnect

    def start_reconnect(
        self, address: NetAddress, *, first_attempt_done: bool = False, delay_s: float = 0.0
    ) -> None:
        """Start ``address``'s reconnect loop unless one runs (or the Switch stopped)."""
        if address.id in self.reconnecting or not self._owner.is_running:
            return
        self.reconnecting.add(address.id)
        task = self._owner._spawn(
            self._reconnect(address, first_attempt_done, delay_s), f"reconnect-{address.id[:12]}"
        )
        if task is None:  # the dial group is closed: no loop runs
            self.reconnecting.discard(address.id)

    def short_lived_delay(self, peer: Peer) -> float:
        """The wait before redialing ``peer`` (0 unless its connection was short-lived)."""
        policy = self._owner.reconnect_policy
        lived = time.monotonic() - peer.created_at
        if lived >= policy.short_lived_s:
            self._short_lived.pop(peer.id, None)
            return 0.0
        deaths = self._short_lived.get(peer.id, 0) + 1
        self._short_lived[peer.id] = deaths
        wait = policy.short_lived_wait(deaths)
        logger.info(
            "[%s] connection lived %.1f s (short-lived %d in a row); redialing in %g s",
            peer.id,
            lived,
            deaths,
            wait,
        )
        return wait

    async def _reconnect(
        self, address: NetAddress, first_attempt_done: bool, delay_s: float = 0.0
    ) -> None:
        """Redial ``address`` on the schedule of behaviour.md §1.10 (quirks fixed), after
        ``delay_s`` seconds (the back-off of a short-lived connection)."""
        if delay_s > 0:
            try:
                await asyncio.sleep(delay_s)
            except BaseException:
                self.reconnecting.discard(address.id)
                raise
        schedule = ReconnectSchedule(
            self._owner.reconnect_policy,
            self._owner.rng,
            first_attempt_done=first_attempt_done,
            cooled_down=self.cooldown_remaining(address.id) > 0,
        )
        try:
            while self._owner.is_running:
                wait = schedule.next_wait(self.cooldown_remaining(address.id))
                if wait is None:
                    logger.warning("[%s] giving up reconnecting to %s", address.id, address)
                    return
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self._owner.is_running or await self._redial(address, schedule):
                    return
        finally:
            self.reconnecting.discard(address.id)

    async def _redial(self, address: NetAddress, schedule: ReconnectSchedule) -> bool:
        """One reconnect attempt; True when the loop is over (connected, or ourselves)."""
        try:
            await self.dial_peer_with_address(address)
            return True
        except AlreadyConnectedError:
            return True
        except RejectedError as exc:
            if exc.reason is RejectReason.SELF:
                return True
            if exc.reason is RejectReason.INCOMPATIBLE:
                schedule.cool_down()
            logger.info("[%s] reconnect attempt %d failed: %s", address.id, schedule.attempts, exc)
        except CometP2PError as exc:
            logger.info("[%s] reconnect attempt %d failed: %s", address.id, schedule.attempts, exc)
        return False
