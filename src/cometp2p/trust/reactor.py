"""``TrustReactor``: feeds every peer's trust metric from the Switch and lets it decide.

No CometBFT version wires ``p2p/trust`` to anything (behaviour.md §6); this is our design.

* Good events: each message a reactor handled without error (a Switch delivery
  observer), plus one more for a PexAddrs that answered our request.
* Bad events: each stop-for-error, by :class:`~cometp2p.trust.reasons.BadReason`:
  ``[trust] misbehaviour_events`` (10) for a protocol error, a PEX violation or an
  oversized or undecodable message, ``[trust] pong_timeout_events`` (1) for a pong
  timeout. A network failure or a graceful stop is no bad event.
* Decisions use :meth:`~cometp2p.trust.metric.TrustMetric.judged_score`, the worse of
  the current interval and the history (Go's score counts a silent interval as perfect,
  so a disconnected peer would never score below 40); the gauge and ``trust show``
  show the same number.
* A disconnect pauses the metric at the end of the current interval, so the interval in
  which the peer misbehaved is recorded (see
  :meth:`~cometp2p.trust.store.TrustMetricStore.peer_disconnected`).
* Decisions (through ``PexCore.trust``): PEX dials the highest-trust candidates first.
  A bad event that leaves a peer's score below ``[trust] min_score`` distrusts it for
  ``[trust] ban_time``: PEX neither dials it nor hands its address out, and its address
  is marked bad in the AddrBook. After that time it may be dialed again, on probation,
  until its next bad event. Verdicts are saved with the metrics, so a restart keeps them.
  Persistent and unconditional peers are never distrusted
  (their score is still kept and shown). Inbound connections are not refused: a peer can
  earn its trust back.
* ``<namespace>_p2p_peer_trust_score{chain_id, peer_id}``: the score of each connected
  peer; the series is removed when the peer disconnects.
  ``<namespace>_p2p_peer_trust_bad_events_total{chain_id, reason}``: bad-event stops by
  reason (four series at most).

The metrics live in a :class:`~cometp2p.trust.store.TrustMetricStore` (SQLite under the
home's ``data/``), loaded at start, saved every minute and at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter as Counter_
from prometheus_client import Gauge

from cometp2p.config import Config, TrustConfig
from cometp2p.errors import LocalProtocolError
from cometp2p.pex.core import PexCore
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.trust.config import TrustMetricConfig
from cometp2p.trust.reasons import BadReason, classify_stop_reason
from cometp2p.trust.store import TrustMetricStore, TrustStoreError, open_trust_store
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2

if TYPE_CHECKING:
    from cometp2p.switch.peer import Peer

__all__ = ["TrustReactor", "metric_config"]

logger = logging.getLogger(__name__)


def metric_config(config: TrustConfig) -> TrustMetricConfig:
    """The metric configuration of ``[trust]``.

    Raises:
        ConfigError: a weight, interval or window breaks its rule (behaviour.md §6.1).
    """
    return TrustMetricConfig(
        proportional_weight=config.proportional_weight,
        integral_weight=config.integral_weight,
        tracking_window_s=config.tracking_window_s,
        interval_length_s=config.interval_length_s,
    )


class TrustReactor(Reactor):
    """Per-peer trust metrics, wired into the Switch and PEX. No channels of its own.

    Register it after the PEX reactor: ``switch.add_reactor("TRUST", reactor)``.

    Args:
        config: the ``[trust]`` settings.
        db_path: the SQLite file; ``None`` keeps the metrics in memory.
        namespace: the metrics namespace (``[instrumentation] namespace``).
        clock: monotonic seconds (intervals, bans).
        wall_clock: UNIX seconds (the store's ``updated_at``).

    Attributes:
        store: the metrics; set by :meth:`start`.
        store_error: the error the store was recovered from at start, if any.
        bad_events: how many bad events were recorded, by reason.

    Raises:
        ConfigError: the metric settings are invalid.
    """

    name = "TRUST"

    def __init__(
        self,
        config: TrustConfig | None = None,
        *,
        db_path: Path | None = None,
        namespace: str = "cometbft",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else TrustConfig()
        self.metric_config = metric_config(self.config)
        self.db_path = db_path
        self.namespace = namespace
        self._clock = clock
        self._wall_clock = wall_clock
        self.store: TrustMetricStore | None = None
        self.store_error: TrustStoreError | None = None
        self.bad_events: Counter[BadReason] = Counter()
        self._distrusted_until: dict[str, float] = {}
        self._probation: set[str] = set()
        self._connected: set[NodeID] = set()
        self._gauge: Gauge | None = None
        self._bad_counter: Counter_ | None = None
        self._chain_id = ""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config) -> TrustReactor:
        """A reactor with ``config.trust``, its store at ``config.trust_db_path``.

        Raises:
            ConfigError: the metric settings are invalid.
        """
        return cls(
            config.trust,
            db_path=config.trust_db_path,
            namespace=config.instrumentation.namespace,
        )

    # -- Reactor API ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, hook into the Switch and PEX, start the interval timer.

        A corrupt or locked database is logged and replaced by an empty store
        (:func:`~cometp2p.trust.store.open_trust_store`); the node goes on.
        """
        switch = self._switch()
        now = self._clock()
        if self.db_path is None:
            self.store = TrustMetricStore(
                None, self.metric_config, now=now, wall_clock=self._wall_clock
            )
        else:
            self.store, self.store_error = open_trust_store(
                self.db_path, self.metric_config, now=now, wall_clock=self._wall_clock
            )
        logger.info("trust store: %d peers loaded from %s", len(self.store), self.db_path)
        wall = self._wall_clock()
        for node_id, until in self.store.bans().items():
            if until > wall:  # resume the verdicts of the previous run
                self._distrusted_until[node_id] = now + (until - wall)
        switch.delivery_observers.append(self._on_delivered)
        core = getattr(switch.reactor("PEX"), "core", None)
        if isinstance(core, PexCore):
            core.trust = self
        self._chain_id = switch.node_info.network
        self._gauge = Gauge(
            "peer_trust_score",
            "Trust score (0..100) of each connected peer (cometp2p extension).",
            ["chain_id", "peer_id"],
            namespace=self.namespace,
            subsystem="p2p",
            registry=switch.metrics.registry,
        )
        self._bad_counter = Counter_(
            "peer_trust_bad_events",
            "Stops for an error counted against a peer's trust, by reason (cometp2p extension).",
            ["chain_id", "reason"],
            namespace=self.namespace,
            subsystem="p2p",
            registry=switch.metrics.registry,
        )
        self._task = asyncio.create_task(self._timer_loop(), name="trust-timer")

    async def stop(self) -> None:
        """Stop the timer, unhook, save the store and close it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        switch = self.switch
        if isinstance(switch, Switch):
            with contextlib.suppress(ValueError):
                switch.delivery_observers.remove(self._on_delivered)
            core = getattr(switch.reactor("PEX"), "core", None)
            if isinstance(core, PexCore) and core.trust is self:
                core.trust = None
        if self.store is not None:
            try:
                self.store.close()
            except TrustStoreError as exc:
                logger.error("trust store not saved at stop: %s", exc)
        if isinstance(switch, Switch):
            for collector in (self._gauge, self._bad_counter):
                if collector is not None:
                    with contextlib.suppress(KeyError):
                        switch.metrics.registry.unregister(collector)
        self._gauge = None
        self._bad_counter = None

    async def add_peer(self, peer: Peer) -> None:
        store = self._store()
        metric = store.peer_connected(peer.id)
        self._connected.add(peer.id)
        self._show(peer.id, metric.judged_score())

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        store = self._store()
        metric = store.metric(peer.id)
        bad = classify_stop_reason(reason)
        if bad is not None:
            metric.bad_events(self._weight(bad))
            self.bad_events[bad] += 1
            if self._bad_counter is not None:
                self._bad_counter.labels(self._chain_id, bad.name.lower()).inc()
        store.peer_disconnected(peer.id, at_interval_end=True)
        self._connected.discard(peer.id)
        if self._gauge is not None:
            with contextlib.suppress(KeyError):
                self._gauge.remove(self._chain_id, peer.id)
        if bad is not None:
            score = metric.judged_score()
            logger.info("[%s] trust: bad event (%s), score now %d", peer.id, bad.value, score)
            if score < self.config.min_score and not self.is_protected(peer.id):
                self._distrust(peer.id, peer.socket_address, score)

    # -- what PEX asks (cometp2p.pex.core.PeerTrust) --------------------------------------

    def score(self, node_id: NodeID) -> int:
        """The score trust decisions use, 0..100
        (:meth:`~cometp2p.trust.metric.TrustMetric.judged_score`); 100 for a peer never seen."""
        metric = self._store().get(node_id)
        return 100 if metric is None else metric.judged_score()

    def allows(self, node_id: NodeID) -> bool:
        """May ``node_id`` be dialed and handed out over PEX?

        False while it is distrusted; a peer loaded from the store below ``min_score``
        is distrusted on first sight. Persistent and unconditional peers are always
        allowed.
        """
        if self.is_protected(node_id):
            return True
        until = self._distrusted_until.get(node_id)
        now = self._clock()
        if until is not None:
            if now < until:
                return False
            del self._distrusted_until[node_id]
            self._store().set_ban(node_id, None)
            self._probation.add(node_id)
            logger.info("[%s] trust: ban over, on probation", node_id)
            return True
        if node_id in self._probation:
            return True
        metric = self._store().get(node_id)
        if metric is not None and metric.judged_score() < self.config.min_score:
            self._distrusted_until[node_id] = now + self.config.ban_time_s
            self._store().set_ban(node_id, self._wall_clock() + self.config.ban_time_s)
            return False
        return True

    def is_protected(self, node_id: str) -> bool:
        """True for persistent and unconditional peers: never distrusted."""
        switch = self._switch()
        if switch.is_peer_unconditional(node_id):
            return True
        return any(addr.id == node_id for addr in switch.persistent_peers)

    def is_distrusted(self, node_id: str) -> bool:
        """True while ``node_id`` is excluded from dialing and gossip."""
        until = self._distrusted_until.get(node_id)
        return until is not None and self._clock() < until

    # -- internals -----------------------------------------------------------------------

    def _switch(self) -> Switch:
        switch = self.switch
        if not isinstance(switch, Switch):
            raise LocalProtocolError("the TrustReactor is not registered with a Switch")
        return switch

    def _store(self) -> TrustMetricStore:
        if self.store is None:
            raise LocalProtocolError("the TrustReactor has not been started")
        return self.store

    def _show(self, node_id: str, score: int) -> None:
        if self._gauge is not None and node_id in self._connected:
            self._gauge.labels(self._chain_id, node_id).set(score)

    def _weight(self, reason: BadReason) -> int:
        if reason is BadReason.PONG_TIMEOUT:
            return self.config.pong_timeout_events
        return self.config.misbehaviour_events

    def _on_delivered(self, envelope: Envelope) -> None:
        peer = envelope.src
        metric = self._store().get(peer.id)
        if metric is None or peer.id not in self._connected:
            return
        metric.good_events(1)
        answer = (pex_pb2.PexAddrs, pex_pb2.PexResponseV2)
        if isinstance(envelope.message, answer) and peer.is_running:
            metric.good_events(1)  # it answered our request (an unsolicited one stops it)

    def _distrust(self, node_id: NodeID, address: NetAddress, score: int) -> None:
        already = self.is_distrusted(node_id)
        self._probation.discard(node_id)
        self._distrusted_until[node_id] = self._clock() + self.config.ban_time_s
        self._store().set_ban(node_id, self._wall_clock() + self.config.ban_time_s)
        if already:
            return  # the ban is extended; the book ban was set the first time
        banned = False
        pex = self._switch().reactor("PEX")
        book = getattr(pex, "book", None)
        now_fn = getattr(pex, "now", None)
        if book is not None and callable(now_fn):
            banned = bool(book.mark_bad(address, self.config.ban_time_s, now_fn()))
        logger.warning(
            "[%s] trust score %d below min_score %d: not dialed nor gossiped for %g s%s",
            node_id,
            score,
            self.config.min_score,
            self.config.ban_time_s,
            "; address marked bad in the book" if banned else "",
        )

    async def _timer_loop(self) -> None:
        store = self._store()
        step = self.metric_config.interval_length_s
        while True:
            delay = min(max(store.get_timer() - self._clock(), 0.0), step)
            await asyncio.sleep(delay)
            try:
                store.handle_timer(self._clock())
            except TrustStoreError as exc:
                logger.error("trust store save failed (kept in memory): %s", exc)
            for node_id in self._connected:
                metric = store.get(node_id)
                if metric is not None:
                    self._show(node_id, metric.judged_score())
