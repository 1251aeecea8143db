"""Benchmark of the trust metric (behaviour.md §6) and its SQLite store.

Measures, on this machine: ``next_time_interval`` of a metric at the default 14-day
window's saturation (20 160 intervals tracked, the worst case: the history value sums one
weighted term per interval, in Go's order, to stay bit-identical), the same on a fresh
metric, ``trust_value``, and a save + load of a store of ``--peers`` saturated metrics.
Reference, measured in the same run: a bare Python loop of 20 160 multiply-adds over two
lists, what adding every term costs (the metric stops once the remaining terms cannot
change the sum, with the same result).

Run: ``.venv/bin/python bench/trust_metric.py [--peers 1000]``
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cometp2p.trust.config import TrustMetricConfig
from cometp2p.trust.metric import TrustHistory, TrustMetric
from cometp2p.trust.store import TrustMetricStore


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    args = parser.parse_args()
    cfg = TrustMetricConfig()
    rng = random.Random(1)

    def saturated() -> TrustMetric:
        history = tuple(rng.uniform(0.3, 1.0) for _ in range(cfg.history_max_size))
        return TrustMetric(cfg, history=TrustHistory(cfg.max_intervals, history))

    rows: list[tuple[str, float]] = []
    full = saturated()

    def tick_full() -> None:
        full.good_events(3)
        full.next_time_interval()

    rows.append(
        (f"next_time_interval ({cfg.max_intervals} intervals)", _per_call_us(tick_full, 200))
    )
    fresh = TrustMetric(cfg)

    def tick_fresh() -> None:
        fresh.good_events(3)
        fresh.next_time_interval()

    rows.append(("next_time_interval (first 500 intervals)", _per_call_us(tick_fresh, 500)))
    rows.append(("trust_value", _per_call_us(full.trust_value, 100_000)))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trust.sqlite"
        store = TrustMetricStore(path, cfg)
        for i in range(args.peers):
            store.add(f"{i:040x}", saturated())
        start = time.perf_counter()
        store.save()
        rows.append(
            (f"store save ({args.peers} peers, 1 transaction)", (time.perf_counter() - start) * 1e6)
        )
        store.close(save=False)
        start = time.perf_counter()
        TrustMetricStore(path, cfg).close(save=False)
        rows.append((f"store load ({args.peers} peers)", (time.perf_counter() - start) * 1e6))

    a = [rng.random() for _ in range(cfg.max_intervals)]
    b = [rng.random() for _ in range(cfg.max_intervals)]

    def ceiling() -> float:
        total = 0.0
        for i in range(len(a)):
            total += a[i] * b[i]
        return total

    rows.append(
        (f"reference: {cfg.max_intervals} Python multiply-adds", _per_call_us(ceiling, 200))
    )
    print(f"{'operation':<48} {'µs per call':>12}")
    for name, us in rows:
        print(f"{name:<48} {us:>12.1f}")


if __name__ == "__main__":
    main()
