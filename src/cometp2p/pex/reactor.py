"""PEXReactor: peer exchange on channel 0x00, and the routine that keeps us connected.

Implements behaviour.md §4 (CometBFT v0.38 ``p2p/pex/pex_reactor.go``) on the asyncio Switch:
answering PexRequests (rate limited), asking peers for addresses, feeding the AddrBook,
dialing addresses until ``max_num_outbound_peers`` is reached (with back-off per address),
falling back to seeds, and seed mode (crawl, answer once, disconnect). The optional
adaptive strategy of the v0.35 design (behaviour.md §9.1) replaces v0.38's "ask a random
peer each round" with a round-robin request loop (:mod:`cometp2p.pex.strategy`).

Every decision is made by the sans-IO :class:`~cometp2p.pex.core.PexCore` and
:class:`~cometp2p.pex.strategy.RoundRobinScheduler`; this module only sends messages, runs
the timers and calls the Switch. The AddrBook is saved by an
:class:`~cometp2p.pex.service.AddrBookSaver` when the reactor has a file.

What the Switch does for CometBFT's book and ours does not, the reactor does: it registers
our own addresses and the private peer IDs with the book, adds the persistent peers to it,
and, when a dial reaches ourselves, removes that address and remembers it as ours.
A dial refused as a duplicate connection is not counted as a failed attempt (we are
connected to that node).

Tendermint v0.35 peers (:mod:`cometp2p.pex.dialect`) are asked with ``PexRequestV2`` and
held to v0.35's rules; their requests are answered in the kind they came in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cometp2p.config import Config
from cometp2p.errors import (
    CometP2PError,
    ConfigError,
    LocalProtocolError,
    NetAddressError,
    NetAddressLookupError,
    RejectedError,
    RejectReason,
)
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook
from cometp2p.pex.config import PEX_CHANNEL, PexConfig, RequestStrategy
from cometp2p.pex.core import (
    AddrsReport,
    DialVerdict,
    Offence,
    PeerRef,
    PexCore,
    PexMessage,
    PexMisbehaviourError,
    decode_pex_message,
    encode_pex_addrs,
    encode_pex_request,
    encode_pex_response_v2,
)
from cometp2p.pex.dialect import PexDialect, dialect_of_version
from cometp2p.pex.errors import AddrBookError
from cometp2p.pex.service import AddrBookSaver
from cometp2p.pex.strategy import RoundRobinScheduler
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import AlreadyConnectedError, Switch
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo
from cometp2p.wire.proto.tendermint.p2p import pex_pb2

__all__ = ["MAX_MSG_SIZE_BYTES", "Clock", "PEXReactor", "PexCounters", "monotonic_utc_clock"]

logger = logging.getLogger(__name__)

MAX_ADDRESS_SIZE_BYTES: Final = 256
"""Over-estimate of one encoded address (behaviour.md §4.1)."""
MAX_MSG_SIZE_BYTES: Final = MAX_ADDRESS_SIZE_BYTES * 250
"""Largest PEX message accepted: 64 000 bytes (behaviour.md §4.1)."""

_PEER_KEY: Final = "pex.peer"
_CRAWL_CONCURRENCY: Final = 8
_START_WAIT_S: Final = 60.0
_CADENCE_HISTORY: Final = 1000

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime."""


def monotonic_utc_clock() -> Clock:
    """A clock that reads as UTC wall time at creation and then advances monotonically.

    Rate limits and back-offs never see time go backwards when the system clock is set.
    """
    wall0 = datetime.now(UTC)
    mono0 = time.monotonic()
    return lambda: wall0 + timedelta(seconds=time.monotonic() - mono0)


@dataclass(slots=True)
class PexCounters:
    """What the reactor did since it was created (for tests, logs and metrics).

    Attributes:
        requests_sent: PexRequests we sent.
        requests_answered: PexRequests we answered.
        addrs_received: solicited PexAddrs processed.
        addresses_added: addresses new to the book from those.
        addresses_refused: addresses the book refused from those.
        dials: dials started by PEX (ensure-peers and crawl).
        dials_failed: of those, the ones that failed.
        seed_dials: seed dials.
        violations: peers disconnected, by :class:`~cometp2p.pex.core.Offence`.
        sent_by_dialect: requests we sent, by the peer's dialect (``"v0.35"``, ``"v0.38"``).
        received_by_dialect: requests peers sent us, by their dialect.
        refused_by_dialect: of those, the ones refused as too soon.
        v2_requests_received: of those, the ``PexRequestV2`` ones.
        sent_times: when recent requests were sent (reactor clock), by dialect: the
            cadence (at most :data:`_CADENCE_HISTORY` per dialect).
    """

    requests_sent: int = 0
    requests_answered: int = 0
    addrs_received: int = 0
    addresses_added: int = 0
    addresses_refused: int = 0
    dials: int = 0
    dials_failed: int = 0
    seed_dials: int = 0
    violations: Counter[Offence] = field(default_factory=Counter)
    sent_by_dialect: Counter[str] = field(default_factory=Counter)
    received_by_dialect: Counter[str] = field(default_factory=Counter)
    refused_by_dialect: Counter[str] = field(default_factory=Counter)
    v2_requests_received: int = 0
    sent_times: dict[str, deque[datetime]] = field(default_factory=dict)

    def record_sent(self, dialect: PexDialect, now: datetime) -> None:
        """Count one request sent to a peer of ``dialect`` at ``now``."""
        self.requests_sent += 1
        self.sent_by_dialect[dialect.value] += 1
        times = self.sent_times.setdefault(dialect.value, deque(maxlen=_CADENCE_HISTORY))
        times.append(now)

    def summary(self) -> str:
        """One line: requests sent/received/refused by dialect, the median gap between
        consecutive requests sent, by dialect, then the answers we took in and the
        addresses they added to the book."""
        parts = []
        for dialect in (PexDialect.V035.value, PexDialect.V038.value):
            times = list(self.sent_times.get(dialect, ()))
            gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(times))
            median = f"{gaps[len(gaps) // 2]:.1f}s" if gaps else "-"
            parts.append(
                f"{dialect}: sent={self.sent_by_dialect[dialect]} median_gap={median} "
                f"received={self.received_by_dialect[dialect]} "
                f"refused={self.refused_by_dialect[dialect]}"
            )
        parts.append(
            f"v2_received={self.v2_requests_received} "
            f"answers={self.addrs_received} added={self.addresses_added}"
        )
        return "; ".join(parts)


def _listen_address(info: NodeInfo) -> NetAddress | None:
    try:
        return info.net_address(resolve=False)
    except NetAddressError:
        return None


def _parse_no_dns(text: str) -> NetAddress | None:
    try:
        return NetAddress.parse(text, resolve=False)
    except NetAddressError:
        return None


class PEXReactor(Reactor):
    """Peer exchange and the ensure-peers routine (behaviour.md §4, §9.1).

    Register it with ``switch.add_reactor("PEX", reactor)`` and list channel 0x00 in the
    NodeInfo. Start and stop come from the Switch.

    Args:
        book: the address book (e.g. from :func:`~cometp2p.pex.addrbook_store.load_addrbook`).
        config: PEX settings; v0.38 defaults when omitted.
        book_file: where to save ``book`` periodically and on stop; not saved when ``None``.
        rng: randomness for the book-independent choices (jitter, random peer, seed order).
        clock: the time source; :func:`monotonic_utc_clock` by default.

    Attributes:
        book: the AddrBook.
        config: the :class:`~cometp2p.pex.config.PexConfig`.
        core: the sans-IO rules.
        scheduler: the round-robin scheduler (adaptive strategy only, else ``None``).
        saver: the :class:`~cometp2p.pex.service.AddrBookSaver` (``None`` without a file).
        counters: :class:`PexCounters`.
    """

    name = "PEX"

    def __init__(
        self,
        book: AddrBook,
        config: PexConfig | None = None,
        *,
        book_file: str | os.PathLike[str] | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.book = book
        self.config = config if config is not None else PexConfig()
        self.rng = rng if rng is not None else random.Random()
        self._clock = clock if clock is not None else monotonic_utc_clock()
        self.core = PexCore(book, self.config, rng=self.rng)
        self.scheduler: RoundRobinScheduler | None = (
            RoundRobinScheduler(self.config)
            if self.config.strategy is RequestStrategy.ADAPTIVE and not self.config.seed_mode
            else None
        )
        self.counters = PexCounters()
        self.saver = (
            AddrBookSaver(book, book_file, interval_s=self.config.save_interval_s)
            if book_file is not None
            else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._ensure_wake = asyncio.Event()
        self._request_wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._dialing_seeds = False
        self._persistent_added = False
        self._started = False

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        pex: PexConfig | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> PEXReactor:
        """A reactor whose book is loaded from, and saved to, ``config.addr_book_path``.

        Args:
            config: the node configuration (``[p2p]`` gives seeds, seed mode, strictness).
            pex: PEX settings; ``PexConfig.from_p2p(config.p2p)`` when omitted.
            rng: randomness for the book and the reactor.
            clock: the time source.

        Raises:
            AddrBookFileError: the address book file exists but is unusable.
        """
        rng = rng if rng is not None else random.Random()
        book = load_addrbook(config.addr_book_path, strict=config.p2p.addr_book_strict, rng=rng)
        settings = pex if pex is not None else PexConfig.from_p2p(config.p2p)
        return cls(book, settings, book_file=config.addr_book_path, rng=rng, clock=clock)

    # -- Reactor API ---------------------------------------------------------------------

    def get_channels(self) -> list[ChannelDescriptor]:
        """Channel 0x00: priority 1, 10 queued messages, messages up to 64 000 bytes."""
        return [
            ChannelDescriptor(
                id=PEX_CHANNEL,
                priority=1,
                send_queue_capacity=10,
                recv_message_capacity=MAX_MSG_SIZE_BYTES,
            )
        ]

    def decode(self, channel_id: int, data: bytes) -> PexMessage:
        """Decode and unwrap one PEX message.

        Raises:
            PexMisbehaviourError: UNDECODABLE or UNKNOWN_MESSAGE; the Switch then stops the
                peer (no ban, as in CometBFT).
        """
        try:
            return decode_pex_message(data)
        except PexMisbehaviourError as exc:
            self.counters.violations[exc.offence] += 1
            self._notify()
            raise

    async def start(self) -> None:
        """Resolve the seeds, prepare the book, start the routines and the saver.

        Raises:
            ConfigError: a seed address is malformed, or no seed resolves while the book
                is empty (CometBFT refuses to start then).
            LocalProtocolError: the reactor is not registered with a Switch.
        """
        switch = self._switch()
        seeds = await self._resolve_seeds()
        if self.config.seeds and not seeds and self.book.empty():
            raise ConfigError("address book is empty and couldn't resolve any seed nodes")
        self.core.seed_addrs = seeds
        self.book.add_private_ids(switch.private_peer_ids)  # includes private_peer_ids
        self._register_configured_addresses(switch)
        self._started = True
        logger.info(
            "PEX started: strategy %s%s",
            self.config.strategy.value,
            " (seed mode)" if self.config.seed_mode else "",
        )
        if self.saver is not None:
            self.saver.start()
        if self.config.seed_mode:
            self._spawn(self._crawl_peers_routine(), "pex-crawl")
        else:
            self._spawn(self._ensure_peers_routine(), "pex-ensure-peers")
            if self.scheduler is not None:
                self._spawn(self._request_routine(), "pex-requests")

    async def stop(self) -> None:
        """Stop the routines, then save the book one last time (when it has a file)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.saver is not None and self._started:
            await self.saver.stop()
        if self._started:
            logger.info("PEX requests: %s", self.counters.summary())
        self._started = False

    def init_peer(self, peer: Peer) -> None:
        self._ref(peer)

    async def add_peer(self, peer: Peer) -> None:
        """Outbound: ask it for addresses if the book needs more (v0.38 strategy).
        Inbound: it is its own source; offer its listen address to the book."""
        ref = await self._resolve_ref(peer)
        if peer.is_outbound:
            if self.scheduler is None and self.book.need_more_addrs():
                self.request_addrs(peer)
        else:
            outcome = self.core.learn_inbound_peer(ref, self._clock())
            if isinstance(outcome, AddrBookError):
                logger.debug("[%s] inbound peer address not added: %s", peer.id, outcome)
        # The peer may have gone while we awaited; only a connected one joins the queue.
        if self.scheduler is not None and self._switch().peers.get(peer.id) is peer:
            self.scheduler.add_peer(peer.id)
            self._request_wake.set()
        self._notify()

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.core.forget_peer(peer.id)
        if self.scheduler is not None:
            self.scheduler.remove_peer(peer.id)
        self._notify()

    async def receive(self, envelope: Envelope) -> None:
        """Answer a PexRequest or take in a PexAddrs; a violation stops (and may ban) the peer."""
        peer = envelope.src
        message = envelope.message
        now = self._clock()
        try:
            if isinstance(message, pex_pb2.PexRequestV2 | pex_pb2.PexResponseV2):
                self._speaks_v035(peer)
            if isinstance(message, pex_pb2.PexRequest | pex_pb2.PexRequestV2):
                await self._on_request(peer, now, v2=isinstance(message, pex_pb2.PexRequestV2))
            elif isinstance(message, pex_pb2.PexAddrs | pex_pb2.PexResponseV2):
                self._on_addrs(peer, message, now)
            else:
                raise PexMisbehaviourError(
                    Offence.UNKNOWN_MESSAGE,
                    f"expected a PEX request or response, got {type(message).__name__}",
                )
        except PexMisbehaviourError as exc:
            self.counters.violations[exc.offence] += 1
            logger.info("[%s] %s%s", peer.id, exc, "; address banned" if exc.ban else "")
            await self._switch().stop_peer_for_error(peer, exc)
        finally:
            self._notify()

    def mark_peer_as_good(self, peer: Peer) -> None:
        """Called by ``Switch.mark_peer_as_good``: the book moves the peer to an old bucket."""
        self.book.mark_good(peer.id, self._clock())

    # -- public helpers ------------------------------------------------------------------

    def now(self) -> datetime:
        """The reactor's current time (aware UTC), as given to the book and the rules."""
        return self._clock()

    def request_addrs(self, peer: Peer) -> bool:
        """Ask ``peer`` for addresses unless a request is outstanding or too recent.

        Never waits: a request that finds the channel's queue full is not sent (and not
        recorded), and the peer stays eligible.

        Returns:
            True if a PexRequest was queued.
        """
        now = self._clock()
        if not self.core.can_request(peer.id, now):
            return False
        dialect = self._ref(peer).dialect
        self.core.request_sent(peer.id, now)  # before sending: a fast answer is solicited
        if not peer.try_send(PEX_CHANNEL, encode_pex_request(v2=dialect is PexDialect.V035)):
            self.core.request_not_sent(peer.id)
            return False
        self.counters.record_sent(dialect, now)
        return True

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true, re-checking after every PEX event
        (peer added or removed, message handled, dial finished). Unbounded: wrap it in
        ``asyncio.timeout``."""
        while not predicate():
            changed = self._changed
            await changed.wait()

    # -- internals: plumbing -------------------------------------------------------------

    def _switch(self) -> Switch:
        switch = self.switch
        if not isinstance(switch, Switch):
            raise LocalProtocolError("the PEXReactor is not registered with a Switch")
        return switch

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("PEX task %s failed", task.get_name(), exc_info=exc)

    def _ref(self, peer: Peer) -> PeerRef:
        ref = peer.get(_PEER_KEY)
        if isinstance(ref, PeerRef):
            return ref
        ref = PeerRef(
            peer.id,
            peer.is_outbound,
            peer.socket_address,
            _listen_address(peer.node_info),
            dialect_of_version(peer.node_info.version),
        )
        peer.set(_PEER_KEY, ref)
        return ref

    def _speaks_v035(self, peer: Peer) -> None:
        """The peer sent a V2 message: from now on it is held to v0.35's rules."""
        ref = self._ref(peer)
        if ref.dialect is not PexDialect.V035:
            logger.debug("[%s] sent a V2 PEX message: treated as tendermint v0.35", peer.id)
            peer.set(_PEER_KEY, dataclasses.replace(ref, dialect=PexDialect.V035))

    async def _resolve_ref(self, peer: Peer) -> PeerRef:
        """The peer's ref, resolving a host name in its listen address off the loop."""
        ref = self._ref(peer)
        if ref.listen_address is not None:
            return ref
        try:
            peer.node_info.net_address(resolve=False)
        except NetAddressLookupError:
            try:
                resolved = await asyncio.to_thread(peer.node_info.net_address)
            except NetAddressError:
                return ref
            ref = dataclasses.replace(ref, listen_address=resolved)
            peer.set(_PEER_KEY, ref)
        except NetAddressError:
            pass
        return ref

    async def _resolve_seeds(self) -> tuple[NetAddress, ...]:
        seeds: list[NetAddress] = []
        for text in self.config.seeds:
            try:
                seeds.append(NetAddress.parse(text, resolve=False))
                continue
            except NetAddressLookupError:
                pass
            except NetAddressError as exc:
                raise ConfigError(f"seed node configuration has error: {exc}") from exc
            try:
                seeds.append(await asyncio.to_thread(NetAddress.parse, text))
            except NetAddressLookupError as exc:
                logger.error("seed %s does not resolve: %s", text, exc)
            except NetAddressError as exc:
                raise ConfigError(f"seed node configuration has error: {exc}") from exc
        return tuple(seeds)

    def _register_configured_addresses(self, switch: Switch) -> None:
        """Our configured addresses never enter the book (Go: node setup)."""
        our_id = switch.node_info.node_id
        self.book.add_our_id(our_id)
        for host_port in (switch.config.external_address, switch.config.laddr):
            if host_port:
                addr = _parse_no_dns(f"{our_id}@{host_port.split('://', 1)[-1]}")
                if addr is not None:
                    self.book.add_our_address(addr)
        self._register_listen_address(switch)

    def _register_listen_address(self, switch: Switch) -> NetAddress | None:
        """Our advertised address (known only once the Switch listens) is ours too."""
        ours = _listen_address(switch.node_info)
        if ours is not None:
            self.book.add_our_address(ours)
            if ours.port != 0:  # port 0: configured, not yet listening
                self.core.self_address = ours
        return ours

    def _add_persistent_peers(self, switch: Switch) -> None:
        """Go's Switch puts the persistent peers in the book, with us as the source."""
        self._persistent_added = True
        src = self._register_listen_address(switch)
        if src is None:
            return
        now = self._clock()
        for addr in switch.persistent_peers:
            if addr.id == src.id:
                continue
            try:
                self.book.add_address(addr, src, now)
            except AddrBookError as exc:
                logger.debug("persistent peer %s not added to the book: %s", addr, exc)

    async def _wait_for_event(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait for ``event`` at most ``timeout_s`` seconds; True if it was set (and clear it)."""
        if timeout_s > 0 and not event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await event.wait()
        fired = event.is_set()
        event.clear()
        return fired

    async def _wait_switch_running(self) -> bool:
        """The Switch starts reactors before it listens and admits peers: wait (bounded)."""
        started = self._switch().lifecycle.started
        try:
            async with asyncio.timeout(_START_WAIT_S):
                await started.wait()
        except TimeoutError:
            logger.error("the Switch did not start; PEX routine not running")
            return False
        return True

    # -- internals: receiving ------------------------------------------------------------

    async def _on_request(self, peer: Peer, now: datetime, *, v2: bool) -> None:
        ref = self._ref(peer)
        self.counters.received_by_dialect[ref.dialect.value] += 1
        self.counters.v2_requests_received += v2
        if self.core.self_address is None and ref.dialect is PexDialect.V035:
            self._register_listen_address(self._switch())
        try:
            decision = self.core.on_request(ref, now, v2=v2)
        except PexMisbehaviourError:
            self.counters.refused_by_dialect[ref.dialect.value] += 1
            raise
        if decision.reply is None:
            return
        self.counters.requests_answered += 1
        reply = (
            encode_pex_response_v2(decision.reply)
            if decision.v2
            else encode_pex_addrs(decision.reply)
        )
        await peer.send(PEX_CHANNEL, reply)
        if decision.disconnect_after_reply:
            self._spawn(self._switch().stop_peer_gracefully(peer), f"pex-bye-{peer.id[:8]}")

    def _on_addrs(
        self, peer: Peer, message: pex_pb2.PexAddrs | pex_pb2.PexResponseV2, now: datetime
    ) -> None:
        report: AddrsReport = self.core.on_addrs(self._ref(peer), message, now)
        counters = self.counters
        counters.addrs_received += 1
        counters.addresses_added += report.added
        counters.addresses_refused += report.refused
        if report.refused:
            logger.debug(
                "[%s] %d of %d addresses refused: %s",
                peer.id,
                report.refused,
                report.received,
                {reason.name: n for reason, n in report.refusals.items()},
            )
        if self.scheduler is not None:
            self.scheduler.on_response(
                peer.id,
                known_before=report.book_size_before,
                received=report.added + report.already_known,
                recaptured=report.already_known,
                known_after=self.book.size(),
                need_more=self.book.need_more_addrs(),
            )
            self._request_wake.set()
        if report.from_seed:
            self._ensure_wake.set()  # dial what the seed told us right away (Go #2093)

    # -- internals: dialing (behaviour.md §4.6) ------------------------------------------

    async def _dial_peer(self, addr: NetAddress) -> Peer | None:
        """Dial ``addr`` subject to its back-off; the Peer on success, else ``None``."""
        switch = self._switch()
        if not switch.is_running:
            return None
        verdict = self.core.check_dial(
            addr, persistent=switch.is_peer_persistent(addr), now=self._clock()
        )
        if verdict is not DialVerdict.DIAL:
            logger.debug("[%s] not dialing %s: %s", addr.id, addr, verdict.value)
            return None
        self.counters.dials += 1
        try:
            peer = await switch.dial_peer_with_address(addr)
        except (AlreadyConnectedError, LocalProtocolError):
            return None  # connected already, or the Switch is stopping: not a failure
        except RejectedError as exc:
            if exc.reason is RejectReason.SELF:
                logger.info("[%s] %s is ourselves; never dialing it again", addr.id, addr)
                self.core.dialed_ourselves(addr)
            elif exc.reason is not RejectReason.DUPLICATE:
                self._dial_failed(addr, exc)
            return None
        except CometP2PError as exc:
            self._dial_failed(addr, exc)
            return None
        finally:
            self._notify()
        self.core.dial_succeeded(addr)
        return peer

    def _dial_failed(self, addr: NetAddress, exc: CometP2PError) -> None:
        self.counters.dials_failed += 1
        attempts = self.core.dial_failed(addr, self._clock())
        # A refusal (another chain or block version, a wrong ID, ...) is news for the
        # operator: INFO (issue #12). An address that does not answer is routine: DEBUG.
        level = logging.INFO if isinstance(exc, RejectedError) else logging.DEBUG
        logger.log(level, "[%s] dial %s failed (attempt %d): %s", addr.id, addr, attempts, exc)

    async def _dial_peer_task(self, addr: NetAddress) -> None:
        await self._dial_peer(addr)

    async def _dial_seeds(self) -> bool:
        """Dial seeds in random order until one connects (behaviour.md §4.6 dialSeeds)."""
        if self._dialing_seeds:
            return False
        self._dialing_seeds = True
        switch = self._switch()
        try:
            seeds = list(self.core.seed_addrs)
            self.rng.shuffle(seeds)
            for seed in seeds:
                if not switch.is_running:
                    return False
                self.counters.seed_dials += 1
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
            if seeds:
                logger.warning("couldn't connect to any seeds")
            return False
        finally:
            self._dialing_seeds = False
            self._notify()

    async def _dial_seeds_task(self) -> None:
        await self._dial_seeds()

    def _has_peers_or_dialing(self) -> bool:
        out, inbound, dialing = self._switch().num_peers()
        return out + inbound + dialing > 0

    async def _ensure_peers_routine(self) -> None:
        if not await self._wait_switch_running():
            return
        period = self.config.ensure_peers_period_s
        if self._has_peers_or_dialing():
            await asyncio.sleep(self.rng.uniform(0, period))  # avoid a thundering herd
        loop = asyncio.get_running_loop()
        await self._guarded(self._ensure_peers, True)
        next_tick = loop.time() + period
        while True:
            woken = await self._wait_for_event(self._ensure_wake, next_tick - loop.time())
            if woken and loop.time() < next_tick:
                await self._guarded(self._ensure_peers, False)
                continue
            next_tick = max(next_tick + period, loop.time())
            await self._guarded(self._ensure_peers, True)

    async def _guarded(self, step: Callable[[bool], Coroutine[Any, Any, None]], arg: bool) -> None:
        try:
            await step(arg)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("PEX round failed; continuing")

    async def _ensure_peers(self, period_elapsed: bool) -> None:
        """One ensure-peers round (behaviour.md §4.6)."""
        switch = self._switch()
        if not switch.is_running:
            return
        if not self._persistent_added:
            self._add_persistent_peers(switch)
        else:
            self._register_listen_address(switch)
        out, _inbound, dialing = switch.num_peers()
        seeds_dialed = False
        idle_s = self.core.seed_fallback_due(out, self._clock())
        if idle_s is not None and not self._dialing_seeds:
            logger.info(
                "no outbound peer for %.1f s while the address book holds %d addresses; "
                "dialing the seeds again",
                idle_s,
                len(self.book),
            )
            self._spawn(self._dial_seeds_task(), "pex-dial-seeds")
            seeds_dialed = True
        num_to_dial = switch.max_num_outbound_peers - (out + dialing)
        if num_to_dial <= 0:
            return
        to_dial = self.core.plan_dials(num_to_dial, out, switch.is_dialing_or_existing_address)
        for addr in to_dial:
            self._spawn(self._dial_peer_task(addr), f"pex-dial-{addr.id[:8]}")
        if to_dial:
            # Let the dials register with the Switch (num_peers' "dialing") before the
            # next round counts them: a wake event already set would otherwise start
            # that round at once and dial past max_num_outbound_peers.
            await asyncio.sleep(0)
        if self.book.need_more_addrs():
            self.book.reinstate_bad_peers(self._clock())
        if not self.book.need_more_addrs():
            return
        if self.scheduler is None and period_elapsed:
            now = self._clock()
            candidates = [
                p
                for p in switch.peers.list()
                if p.has_channel(PEX_CHANNEL) and self.core.can_request(p.id, now)
            ]
            if candidates:
                self.request_addrs(self.rng.choice(candidates))
        if not to_dial and self.core.seed_addrs and not self._dialing_seeds and not seeds_dialed:
            self._spawn(self._dial_seeds_task(), "pex-dial-seeds")

    # -- internals: adaptive requests (behaviour.md §9.1) --------------------------------

    async def _request_routine(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or not await self._wait_switch_running():
            return
        switch = self._switch()
        while True:
            now = self._clock()

            def eligible(peer_id: NodeID, now: datetime = now) -> bool:
                peer = switch.peers.get(peer_id)
                return (
                    peer is not None
                    and peer.has_channel(PEX_CHANNEL)
                    and self.core.can_request(peer_id, now)
                )

            chosen = scheduler.next_request(now, eligible, need_more=self.book.need_more_addrs())
            if chosen is not None:
                peer = switch.peers.get(chosen)
                if peer is None or not self.request_addrs(peer):
                    scheduler.request_not_sent(chosen)
            deadline = scheduler.get_timer()
            wait_s = (
                (deadline - self._clock()).total_seconds()
                if deadline is not None
                else self.config.adaptive_no_peers_retry_s
            )
            await self._wait_for_event(self._request_wake, wait_s)

    # -- internals: seed mode (behaviour.md §4.7) ----------------------------------------

    async def _crawl_peers_routine(self) -> None:
        if not await self._wait_switch_running():
            return
        if self.core.seed_addrs:
            await self._dial_seeds()
        else:
            await self._crawl(self.book.get_selection())
        while True:
            await asyncio.sleep(self.config.crawl_period_s)
            try:
                self._attempt_disconnects()
                await self._crawl(self.book.get_selection())
                self.core.expire_crawl_records(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("PEX crawl failed; continuing")

    async def _crawl(self, addrs: list[NetAddress]) -> None:
        targets = self.core.crawl_targets(addrs, self._clock())
        if not targets:
            return
        limit = asyncio.Semaphore(_CRAWL_CONCURRENCY)

        async def crawl_one(addr: NetAddress) -> None:
            async with limit:
                peer = await self._dial_peer(addr)
                if peer is not None:
                    self.request_addrs(peer)

        await asyncio.gather(*(crawl_one(addr) for addr in targets))

    def _attempt_disconnects(self) -> None:
        """Seed mode: let go of non-persistent peers held longer than the wait period."""
        switch = self._switch()
        now = time.monotonic()
        for peer in switch.peers.list():
            if peer.is_persistent or now - peer.created_at < self.config.seed_disconnect_wait_s:
                continue
            self._spawn(switch.stop_peer_gracefully(peer), f"pex-release-{peer.id[:8]}")
