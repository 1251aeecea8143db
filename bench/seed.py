"""Benchmark: the seed service (crawl rounds over SQLite) against bench/crawl.py's network.

Three figures:

1. **Nodes verified per second.** The synthetic network of ``bench/crawl.py`` (a child
   process hosting N Python PEX nodes on loopback, books pre-filled with K live and some
   down addresses; default N = 3000) is crawled by a :class:`SeedService` (store in a
   temporary SQLite file, no p2p listener) from live node 0: round 1 discovers the network
   (depth-first through PEX answers), round 2 revisits every known node at once (every
   interval of the schedule set to 0). Per round: nodes visited, reached, seconds,
   visits/s, and verified (handed-out) nodes at the end.
2. **Memory of the service holding N nodes**: this process's RSS before the store exists
   and after the rounds (store, service, crawl records, Python objects), the database
   size, and how long ``/nodes`` (``nodes_document``) and ``/peers?n=10``
   (``verified_peers``) take with N nodes.
3. **Time for /peers to reflect a node going down**: a separate small in-process network
   (5 PEX nodes), a service with ``stable_interval_s`` S (1 and 5 s) and ``fresh_s`` 60 s;
   once every node is verified and settled, one node stops and the time until
   ``verified_peers`` no longer names it is measured, ``--down-trials`` times per S. The
   bound is S plus one round.

Run: ``.venv/bin/python bench/seed.py [--nodes 3000] [--book-size 20] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cometp2p.crawler import CrawlConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.reactor import PEXReactor
from cometp2p.seed.schedule import SchedulePolicy
from cometp2p.seed.service import SeedService
from cometp2p.seed.store import SeedStore
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import free_loopback_port, loopback_p2p_config, make_switch
from cometp2p.testing.pex import fast_pex
from cometp2p.wire.netaddress import NetAddress

CRAWL_BENCH: Final = Path(__file__).with_name("crawl.py")
READY_TIMEOUT_S: Final = 600.0
READ_LIMIT_BYTES: Final = 1 << 26
LOOPBACK_ONLY: Final = (ipaddress.ip_network("127.0.0.0/8"),)
ALL_AT_ONCE: Final = SchedulePolicy(
    min_interval_s=0, new_interval_s=0, stable_interval_s=0, failed_interval_s=0, fresh_s=3600
)


def rss_mib() -> float:
    """This process's resident set size, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _dir_mib(path: str) -> float:
    return sum(p.stat().st_size for p in Path(path).iterdir()) / 2**20


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    for escalate in (None, proc.terminate, proc.kill):
        if escalate is not None:
            with contextlib.suppress(ProcessLookupError):
                escalate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await proc.wait()
            return


async def throughput_and_memory(nodes: int, book_size: int, concurrency: int) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CRAWL_BENCH), "--serve", "--nodes", str(nodes),
        "--book-size", str(book_size), "--lifetime-s", "3600",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=READ_LIMIT_BYTES,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            line = await proc.stdout.readline()
        truth = json.loads(line)
        live: dict[str, str] = truth["live"]
        seed = NetAddress.parse(next(iter(live.values())), resolve=False)
        rss_before = rss_mib()
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "seed.db"
            store = SeedStore(db, ALL_AT_ONCE)
            store.add_seeds([seed])
            service = SeedService(
                store,
                truth["chain_id"],
                CrawlConfig(concurrency=concurrency, timeout_s=5.0, allowed_networks=LOOPBACK_ONLY),
            )
            rounds = []
            for _ in range(2):
                report = await service.run_round()
                assert report is not None
                rounds.append(
                    {
                        "visited": report.stats.visited,
                        "reached": report.stats.reached,
                        "new_nodes": report.stats.new_nodes,
                        "elapsed_s": round(report.stats.elapsed_s, 2),
                        "visits_per_s": round(report.stats.visited / report.stats.elapsed_s, 1),
                        "verified_per_s": round(report.stats.reached / report.stats.elapsed_s, 1),
                    }
                )
            verified = len(store.verified())
            failures = store.failure_counts()
            started = time.perf_counter()
            document = service.nodes_document()
            nodes_s = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(100):
                service.verified_peers(10)
            peers_ms = (time.perf_counter() - started) * 10
            rss_after = rss_mib()
            known = len(document["nodes"])  # type: ignore[arg-type]
            db_mib = _dir_mib(tmp)
            store.close()
    finally:
        await _stop(proc)
    return {
        "live_nodes": len(live),
        "down_nodes": len(truth["down"]),
        "known": known,
        "verified": verified,
        "failures_after_round_2": failures,
        "rounds": rounds,
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "rss_growth_mib": round(rss_after - rss_before, 1),
        "db_mib": round(db_mib, 2),
        "nodes_document_s": round(nodes_s, 3),
        "verified_peers_10_ms": round(peers_ms, 2),
    }


def _pex_node(key: NodeKey, port: int, knows: list[NetAddress]) -> Switch:
    book = AddrBook(strict=False, rng=random.Random(port))
    now = datetime.now(UTC)
    for addr in knows:
        if addr.id != key.node_id:
            book.add_address(addr, addr, now)
    reactor = PEXReactor(book, fast_pex(ensure_peers_period_s=3600.0))
    p2p = loopback_p2p_config(laddr=f"tcp://127.0.0.1:{port}")
    return make_switch([("PEX", reactor)], chain_id="bench-chain", p2p=p2p, node_key=key)


async def down_latency(stable_s: float, trials: int) -> dict[str, object]:
    """Seconds from a node's stop until /peers no longer names it, ``trials`` times."""
    policy = SchedulePolicy(
        min_interval_s=min(0.5, stable_s), new_interval_s=min(0.5, stable_s),
        stable_interval_s=stable_s, failed_interval_s=stable_s, fresh_s=60,
    )  # fmt: skip
    keys = [NodeKey.generate() for _ in range(5)]
    ports = [free_loopback_port() for _ in keys]
    addrs = [
        NetAddress.parse(f"{k.node_id}@127.0.0.1:{p}", resolve=False)
        for k, p in zip(keys, ports, strict=True)
    ]
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SeedStore(Path(tmp) / "seed.db", policy)
        store.add_seeds(addrs[:1])
        service = SeedService(
            store, "bench-chain", CrawlConfig(timeout_s=2.0, allowed_networks=LOOPBACK_ONLY),
            round_pause_s=0.01,
        )  # fmt: skip
        stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            switches = [_pex_node(k, p, addrs) for k, p in zip(keys, ports, strict=True)]
            for switch in switches:
                await stack.enter_async_context(switch)
            task = asyncio.create_task(service.run(stop))
            try:
                for trial in range(trials):
                    victim = 1 + trial % 4

                    def peers() -> set[str]:
                        return {a.id for a in service.verified_peers(100)}

                    async with asyncio.timeout(60):
                        while peers() != {a.id for a in addrs}:
                            await service.wait_for_round(service.runner.rounds, 30)
                        # Let the victim settle on the longest interval (the worst case).
                        for _ in range(8):
                            await service.wait_for_round(service.runner.rounds, 30)
                        await switches[victim].stop()
                        started = time.monotonic()
                        while addrs[victim].id in peers():  # it changes only with a round
                            await service.wait_for_round(service.runner.rounds, 30)
                        samples.append(time.monotonic() - started)
                    switches[victim] = _pex_node(keys[victim], ports[victim], addrs)
                    await stack.enter_async_context(switches[victim])
            finally:
                stop.set()
                await task
                store.close()
    return {
        "stable_interval_s": stable_s,
        "trials": trials,
        "median_s": round(statistics.median(samples), 3),
        "max_s": round(max(samples), 3),
        "samples_s": [round(s, 3) for s in samples],
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    big = await throughput_and_memory(args.nodes, args.book_size, args.concurrency)
    down = [await down_latency(s, args.down_trials) for s in (1.0, 5.0)]
    return {"network": big, "down": down}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--book-size", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--down-trials", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = asyncio.run(run(args))
    net = report["network"]
    assert isinstance(net, dict)
    print(
        f"network: {net['live_nodes']} live + {net['down_nodes']} down nodes; "
        f"known {net['known']}, verified {net['verified']}; failed at the last visit: "
        f"{net['failures_after_round_2']}"
    )
    for i, r in enumerate(net["rounds"], 1):
        print(
            f"  round {i}: visited {r['visited']}, reached {r['reached']}, "
            f"{r['elapsed_s']} s, {r['visits_per_s']} visits/s, "
            f"{r['verified_per_s']} verified/s"
        )
    print(
        f"memory: RSS {net['rss_before_mib']} -> {net['rss_after_mib']} MiB "
        f"(+{net['rss_growth_mib']}), database {net['db_mib']} MiB; /nodes "
        f"{net['nodes_document_s']} s, /peers?n=10 {net['verified_peers_10_ms']} ms"
    )
    for d in report["down"]:  # type: ignore[attr-defined]
        print(
            f"down -> out of /peers, stable_interval {d['stable_interval_s']} s: "
            f"median {d['median_s']} s, max {d['max_s']} s over {d['trials']} ({d['samples_s']})"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
