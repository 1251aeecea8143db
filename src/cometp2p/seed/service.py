"""The seed service: crawl rounds forever, a seed-mode node serving verified peers, exports.

:class:`SeedService` ties together the store (:class:`~cometp2p.seed.store.SeedStore`),
the crawl rounds (:class:`~cometp2p.seed.rounds.RoundRunner`), the seed-mode node (a
:class:`~cometp2p.node.Node` with a :class:`~cometp2p.seed.reactor.VerifiedSeedReactor`),
Prometheus metrics for the crawl, and ``addrbook.json`` of the verified peers, written
periodically and on demand (in CometBFT's format, by the crawl's own export). The HTTP
API (:mod:`cometp2p.seed.http`) reads from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cometp2p.crawler import CrawlConfig, CrawlResult
from cometp2p.crawler.model import JSONValue
from cometp2p.crawler.report import build_addrbook
from cometp2p.node import Node
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import save_addrbook
from cometp2p.seed.rounds import RoundReport, RoundRunner
from cometp2p.seed.schedule import select_verified
from cometp2p.seed.store import NodeRow, NodeStatus, SeedStore
from cometp2p.wire.netaddress import NetAddress

__all__ = ["SeedMetrics", "SeedService"]

logger = logging.getLogger(__name__)

_MAX_IDLE_S: Final = 5.0


class SeedMetrics:
    """The crawl's Prometheus metrics (namespace ``cometp2p_seed``), in their own registry.

    Attributes:
        registry: the registry (served at the HTTP API's ``/metrics``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ns = "cometp2p_seed"
        self.known = Gauge("nodes_known", "Node IDs known.", namespace=ns, registry=self.registry)
        self.reachable = Gauge(
            "nodes_reachable", "Nodes that answered at their last visit.", namespace=ns,
            registry=self.registry,
        )  # fmt: skip
        self.verified = Gauge(
            "nodes_verified", "Nodes handed out: reachable and verified recently.",
            namespace=ns, registry=self.registry,
        )  # fmt: skip
        self.failures = Gauge(
            "nodes_failed", "Nodes whose last visit failed, by reason.", ["reason"],
            namespace=ns, registry=self.registry,
        )  # fmt: skip
        self.round_duration = Histogram(
            "round_duration_seconds", "Duration of one crawl round.", namespace=ns,
            registry=self.registry, buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )  # fmt: skip
        self.rounds = Counter("rounds", "Crawl rounds finished.", namespace=ns,
                              registry=self.registry)  # fmt: skip
        self.visits = Counter("visits", "Nodes dialed by crawl rounds.", namespace=ns,
                              registry=self.registry)  # fmt: skip

    def update(self, store: SeedStore, verified: int) -> None:
        """Refresh the gauges from ``store``."""
        counts = store.counts()
        self.known.set(sum(counts.values()))
        self.reachable.set(counts.get(NodeStatus.REACHABLE, 0))
        self.verified.set(verified)
        self.failures.clear()
        for reason, n in store.failure_counts().items():
            self.failures.labels(reason).set(n)


class SeedService:
    """A seed that keeps crawling and serves only peers it verified recently.

    Args:
        store: the state (its policy gives the schedule and the freshness window).
        network: the chain ID.
        crawl: settings of each crawl round.
        node: the seed-mode node to run (built with :meth:`make_reactor`), or ``None``
            to crawl and serve HTTP only.
        addrbook_path: where ``addrbook.json`` of the verified peers is written
            (``None``: never).
        export_interval_s: seconds between periodic ``addrbook.json`` exports.
        round_pause_s: the shortest pause between two rounds (seconds).
        rng: randomness for the peer selection.
        wall_clock: epoch seconds.

    Attributes:
        metrics: :class:`SeedMetrics`.
        runner: the :class:`RoundRunner`.
        last_round: the last finished round, if any.
    """

    def __init__(
        self,
        store: SeedStore,
        network: str,
        crawl: CrawlConfig | None = None,
        *,
        node: Node | None = None,
        addrbook_path: Path | None = None,
        export_interval_s: float = 120.0,
        round_pause_s: float = 1.0,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.network = network
        self.node = node
        self.addrbook_path = addrbook_path
        self.export_interval_s = export_interval_s
        self.round_pause_s = round_pause_s
        self.rng = rng if rng is not None else random.Random()
        self._wall = wall_clock
        self.runner = RoundRunner(store, network, crawl, wall_clock=wall_clock)
        self.metrics = SeedMetrics()
        self.last_round: RoundReport | None = None
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self.metrics.update(store, len(store.verified()))

    # ------------------------------------------------------------------ serving

    def verified_peers(self, n: int) -> list[NetAddress]:
        """Up to ``n`` verified addresses, favouring recent verification and diverse
        groups (:func:`~cometp2p.seed.schedule.select_verified`)."""
        return select_verified(
            self.store.verified(), n, fresh_s=self.store.policy.freshness_s, rng=self.rng
        )

    def pex_selection(self) -> list[NetAddress]:
        """What the seed-mode reactor hands out: up to 250 verified addresses."""
        return self.verified_peers(250)

    def learn_inbound(self, addr: NetAddress) -> None:
        """An inbound peer's listen address: queue it for verification (if dialable:
        crawlers, ours included, advertise ``0.0.0.0:0``)."""
        if self.runner.config.allows(addr) and self.store.learn([addr]):
            self._wake.set()

    def make_reactor_callbacks(
        self,
    ) -> tuple[Callable[[], list[NetAddress]], Callable[[NetAddress], None]]:
        """``(select, on_inbound)`` for a :class:`~cometp2p.seed.reactor.VerifiedSeedReactor`."""
        return self.pex_selection, self.learn_inbound

    def crawl_result(self) -> CrawlResult:
        """The store as a :class:`CrawlResult` (``network.json``'s schema)."""
        return self.store.to_crawl_result(self.network)

    def nodes_document(self) -> dict[str, JSONValue]:
        """``GET /nodes``: every node with its NodeInfo, status, last seen and failure."""
        verified = {str(a) for a, _ in self.store.verified()}
        return {
            "network": self.network,
            "rounds": self.store.rounds(),
            "nodes": [_node_document(row, verified) for row in self.store.nodes()],
        }

    def verified_book(self) -> AddrBook:
        """An AddrBook of the verified peers (the crawl's export: good, old buckets)."""
        verified = {a.id for a, _ in self.store.verified()}
        result = self.crawl_result()
        result = dataclasses.replace(
            result, nodes=tuple(n for n in result.nodes if n.node_id in verified)
        )
        return build_addrbook(result, now=datetime.now(UTC), rng=self.rng)

    async def export_addrbook(self) -> Path | None:
        """Write ``addrbook.json`` of the verified peers now (atomically); its path, or
        ``None`` without ``addrbook_path``.

        Raises:
            OSError: the file cannot be written (the previous one stays intact).
        """
        if self.addrbook_path is None:
            return None
        await asyncio.to_thread(save_addrbook, self.verified_book(), self.addrbook_path)
        return self.addrbook_path

    # ------------------------------------------------------------------ running

    async def wait_for_round(self, after: int, timeout_s: float) -> None:
        """Return once more than ``after`` rounds finished.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            while self.runner.rounds <= after:
                done = self._round_done
                await done.wait()

    async def run_round(self) -> RoundReport | None:
        """One round now (if anything is due); metrics updated."""
        report = await self.runner.run_round()
        if report is not None:
            self.last_round = report
            self.metrics.round_duration.observe(report.stats.elapsed_s)
            self.metrics.rounds.inc()
            self.metrics.visits.inc(report.stats.visited)
            logger.info(
                "round %d: %d visited, %d reached, %d new, %.2f s",
                report.number,
                report.stats.visited,
                report.stats.reached,
                report.stats.new_nodes,
                report.stats.elapsed_s,
            )
        self.metrics.update(self.store, len(self.store.verified()))
        if report is not None:
            self._round_done.set()
            self._round_done = asyncio.Event()
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Crawl, serve PEX (when there is a node) and export until ``stop`` is set."""
        tasks = [
            asyncio.create_task(self._crawl_loop(stop), name="seed-crawl"),
            asyncio.create_task(self._export_loop(stop), name="seed-export"),
        ]
        if self.node is not None:
            tasks.append(asyncio.create_task(self.node.run(stop), name="seed-node"))
        try:
            await stop.wait()
        finally:
            for task in tasks[:2]:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(OSError):
                await self.export_addrbook()

    async def _crawl_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_round()
            except Exception:  # a bug, not a node's fault: log and go on
                logger.exception("crawl round failed; continuing")
            due_in = self.store.next_due_in()
            wait_s = _MAX_IDLE_S if due_in is None else min(_MAX_IDLE_S, due_in)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(self.round_pause_s, wait_s)):
                    await self._wake.wait()

    async def _export_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.export_interval_s)
            try:
                await self.export_addrbook()
            except OSError as exc:
                logger.error("could not write %s: %s", self.addrbook_path, exc)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _node_document(row: NodeRow, verified: set[str]) -> dict[str, JSONValue]:
    doc = row.to_record().to_document()
    doc.update(
        {
            "status": row.status,
            "verified": row.dialed is not None and str(row.dialed) in verified,
            "first_seen": _iso(row.first_seen),
            "last_seen": _iso(row.last_seen),
            "last_attempt": _iso(row.last_attempt),
            "failure_reason": row.error if row.status == NodeStatus.FAILED else None,
            "consecutive_failures": row.failures,
            "next_visit": _iso(row.next_visit) if row.next_visit != float("inf") else None,
        }
    )
    return doc
