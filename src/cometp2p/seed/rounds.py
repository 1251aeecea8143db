"""Crawl rounds: the :class:`~cometp2p.crawler.Crawler` run again and again over a store.

A round dials every node that is due (:meth:`SeedStore.due`) with a fresh
:class:`~cometp2p.crawler.Crawler` (a fresh key, so Go's per-peer PEX records start
empty), follows what they answer into nodes the store has never seen, and leaves the known
nodes that are not due alone (``CrawlConfig.dial_filter``). The store then schedules each
visited node's next visit (:mod:`cometp2p.seed.schedule`). The seed service runs rounds
forever; ``cometp2p crawl --rounds N`` runs N of them over an in-memory store.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cometp2p.crawler import CrawlConfig, Crawler, CrawlProgress, CrawlResult
from cometp2p.seed.schedule import INFINITE, SchedulePolicy
from cometp2p.seed.store import RoundStats, SeedStore
from cometp2p.wire.netaddress import NetAddress

__all__ = ["CRAWL_ROUNDS_POLICY", "RoundReport", "RoundRunner", "crawl_rounds"]

CRAWL_ROUNDS_POLICY = SchedulePolicy(
    min_interval_s=0.0,
    new_interval_s=INFINITE,
    stable_interval_s=INFINITE,
    failed_interval_s=INFINITE,
    dry_rounds=2,
)
"""``crawl --rounds``: re-ask a node at once while its answers bring new node IDs (until
two in a row bring none); never revisit a node that failed or went dry."""


@dataclass(frozen=True, slots=True)
class RoundReport:
    """One finished round.

    Attributes:
        number: 1 for the first round of this runner.
        result: the round's own crawl.
        stats: what the round changed in the store.
    """

    number: int
    result: CrawlResult
    stats: RoundStats


class RoundRunner:
    """Runs crawl rounds over ``store``.

    Args:
        store: the state.
        network: the chain ID.
        config: the crawl settings of each round (``dial_filter`` is set by the runner).
        wall_clock: epoch seconds.

    Attributes:
        rounds: rounds finished.
        current: the crawler of the round in progress (``None`` between rounds).
        peak_in_flight: the most nodes in flight in any round.
    """

    def __init__(
        self,
        store: SeedStore,
        network: str,
        config: CrawlConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.network = network
        self.config = config or CrawlConfig()
        self._wall = wall_clock
        self.rounds = 0
        self.current: Crawler | None = None
        self.peak_in_flight = 0

    def progress(self) -> CrawlProgress | None:
        """The running round's progress, if one is running."""
        return self.current.progress() if self.current is not None else None

    async def run_round(self) -> RoundReport | None:
        """Visit every node due now; ``None`` (and nothing done) when none is due.

        Failures are recorded per node, never raised.
        """
        due = self.store.due()
        if not due:
            return None
        started = self._wall()
        crawler = Crawler(
            self.network, dataclasses.replace(self.config, dial_filter=self.store.is_due)
        )
        self.current = crawler
        try:
            result = await crawler.crawl(due)
        finally:
            self.current = None
        stats = self.store.record_round(result, started)
        self.rounds += 1
        self.peak_in_flight = max(self.peak_in_flight, result.peak_in_flight)
        return RoundReport(self.rounds, result, stats)


async def crawl_rounds(
    network: str | None,
    seeds: Sequence[NetAddress],
    config: CrawlConfig,
    rounds: int,
    *,
    on_round: Callable[[RoundReport], None] | None = None,
) -> CrawlResult:
    """Crawl from ``seeds`` in up to ``rounds`` rounds (``cometp2p crawl --rounds``).

    Round 1 is a whole crawl; each later round re-asks the nodes whose last answer still
    brought new node IDs (each on a fresh connection, one ``PexRequest``) and dials the
    new ones. It stops early when nothing is due.

    Returns:
        Every node's last visit, every edge, as one :class:`CrawlResult`.

    Raises:
        CrawlError: ``network`` is ``None`` and no seed told us its network.
    """
    started = time.monotonic()
    if network is None:
        network = await Crawler(None, config).detect_network(seeds)
    store = SeedStore(":memory:", CRAWL_ROUNDS_POLICY)
    try:
        store.add_seeds(seeds)
        runner = RoundRunner(store, network, config)
        for _ in range(rounds):
            report = await runner.run_round()
            if report is None:
                break
            if on_round is not None:
                on_round(report)
        result = store.to_crawl_result(network, seeds)
        return dataclasses.replace(
            result,
            elapsed_s=time.monotonic() - started,
            peak_in_flight=runner.peak_in_flight,
        )
    finally:
        store.close()
