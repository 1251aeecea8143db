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
:class:`~cometp2p.pex.service.AddrBookSaver` when the reactor has a file. The reactor owns
its parts by composition: the dialer (:mod:`cometp2p.pex.dialing`: ensure-peers, seeds),
the seed-mode crawler (:mod:`cometp2p.pex.seed_mode`), the peer refs and our own
addresses (:mod:`cometp2p.pex.peers`), the counters (:mod:`cometp2p.pex.counters`); it
keeps the message handling, the adaptive request loop and the task set.

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
import logging
import os
import random
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Final

from cometp2p.config import Config
from cometp2p.errors import ConfigError, LocalProtocolError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook
from cometp2p.pex.config import PEX_CHANNEL, PexConfig, RequestStrategy
from cometp2p.pex.core import (
    AddrsReport,
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
from cometp2p.pex.counters import Clock, PexCounters, monotonic_utc_clock
from cometp2p.pex.dialect import PexDialect
from cometp2p.pex.dialing import PexDialer
from cometp2p.pex.errors import AddrBookError
from cometp2p.pex.host import wait_for_event, wait_switch_running
from cometp2p.pex.peers import (
    peer_ref,
    register_configured_addresses,
    register_listen_address,
    resolve_peer_ref,
    resolve_seeds,
    speaks_v035,
)
from cometp2p.pex.seed_mode import SeedModeCrawler
from cometp2p.pex.service import AddrBookSaver
from cometp2p.pex.strategy import RoundRobinScheduler
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2

__all__ = ["MAX_MSG_SIZE_BYTES", "Clock", "PEXReactor", "PexCounters", "monotonic_utc_clock"]

logger = logging.getLogger(__name__)

MAX_ADDRESS_SIZE_BYTES: Final = 256
"""Over-estimate of one encoded address (behaviour.md §4.1)."""
MAX_MSG_SIZE_BYTES: Final = MAX_ADDRESS_SIZE_BYTES * 250
"""Largest PEX message accepted: 64 000 bytes (behaviour.md §4.1)."""


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
        dialer: the :class:`~cometp2p.pex.dialing.PexDialer` (ensure-peers, seed dials).
        crawler: the :class:`~cometp2p.pex.seed_mode.SeedModeCrawler` (its routine runs
            in seed mode only).
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
        self.dialer = PexDialer(self)
        self.crawler = SeedModeCrawler(self, self.dialer)
        self._tasks: set[asyncio.Task[None]] = set()
        self._request_wake = asyncio.Event()
        self._changed = asyncio.Event()
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
        seeds = await resolve_seeds(self.config.seeds)
        if self.config.seeds and not seeds and self.book.empty():
            raise ConfigError("address book is empty and couldn't resolve any seed nodes")
        self.core.seed_addrs = seeds
        self.book.add_private_ids(switch.private_peer_ids)  # includes private_peer_ids
        register_configured_addresses(self.book, self.core, switch)
        self._started = True
        logger.info(
            "PEX started: strategy %s%s",
            self.config.strategy.value,
            " (seed mode)" if self.config.seed_mode else "",
        )
        if self.saver is not None:
            self.saver.start()
        if self.config.seed_mode:
            self._spawn(self.crawler.routine(), "pex-crawl")
        else:
            self._spawn(self.dialer.routine(), "pex-ensure-peers")
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
        ref = await resolve_peer_ref(peer)
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
                speaks_v035(peer)
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
        """The peer's :class:`PeerRef` (see :func:`~cometp2p.pex.peers.peer_ref`)."""
        return peer_ref(peer)

    async def _crawl(self, addrs: list[NetAddress]) -> None:
        """Seed mode's crawl of ``addrs``, once per round: dial those due and ask each for
        addresses (:meth:`SeedModeCrawler.crawl`).

        The hook of seed mode: a subclass overrides it to crawl otherwise (or not at
        all) and keeps the rest of the routine (letting go of peers held too long).
        """
        await self.crawler.crawl(addrs)

    # -- internals: receiving ------------------------------------------------------------

    async def _on_request(self, peer: Peer, now: datetime, *, v2: bool) -> None:
        ref = self._ref(peer)
        self.counters.received_by_dialect[ref.dialect.value] += 1
        self.counters.v2_requests_received += v2
        if self.core.self_address is None and ref.dialect is PexDialect.V035:
            register_listen_address(self.book, self.core, self._switch())
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
            self.dialer.wake.set()  # dial what the seed told us right away (Go #2093)

    # -- internals: adaptive requests (behaviour.md §9.1) --------------------------------

    async def _request_routine(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or not await wait_switch_running(self._switch()):
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
            await wait_for_event(self._request_wake, wait_s)
