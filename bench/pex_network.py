"""Benchmark: how fast a loopback network bootstrapped from one seed converges through PEX.

N Python nodes (default 30) know only one seed (in seed mode). Measured, per request
strategy (behaviour.md §4.6 v0.38, §9.1 adaptive): the time from the first node's start
until every node holds ``max_num_outbound_peers`` outbound peers, and the PEX traffic it
took (requests sent, dials, failed dials), and how long stopping every node took. The
timings are those of the loopback tests (ensure-peers every 0.3 s). Ceiling, measured in
the same run: the same number of switches dialing the same number of connections
directly, addresses given, no PEX: the least time the handshakes alone take in this
process.

Run: ``.venv/bin/python bench/pex_network.py [--nodes 30] [--target 8] [--runs 3]
[--strategy v0.38 --strategy adaptive] [--no-ceiling]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import random
import statistics
import time
from dataclasses import dataclass

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import RequestStrategy
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.testing.pex import fast_pex

TIMEOUT_S = 120.0


def _reached(switch: Switch, target: int) -> bool:
    return switch.num_peers()[0] >= target


@dataclass
class Result:
    seconds: float
    requests: int
    dials: int
    failed: int
    stop_s: float = 0.0


async def pex_run(nodes: int, target: int, strategy: RequestStrategy, seed: int) -> Result:
    seed_reactor = PEXReactor(
        AddrBook(strict=False, rng=random.Random(seed)),
        fast_pex(seed_mode=True),
        rng=random.Random(seed + 1),
    )
    seed_switch = make_switch(
        [("PEX", seed_reactor)], moniker="seed", p2p=loopback_p2p_config(seed_mode=True)
    )
    stack = contextlib.AsyncExitStack()
    async with stack:
        await stack.enter_async_context(seed_switch)
        seeds = (str(switch_address(seed_switch)),)
        members: list[tuple[Switch, PEXReactor]] = []
        for i in range(nodes):
            reactor = PEXReactor(
                AddrBook(strict=False, rng=random.Random(seed * 1000 + i)),
                fast_pex(seeds=seeds, strategy=strategy),
                rng=random.Random(seed * 2000 + i),
            )
            config = loopback_p2p_config(seeds=seeds, max_num_outbound_peers=target)
            members.append((make_switch([("PEX", reactor)], moniker=f"n{i}", p2p=config), reactor))
        start = time.perf_counter()
        for switch, _ in members:
            await stack.enter_async_context(switch)
        async with asyncio.timeout(TIMEOUT_S):
            while not all(sw.num_peers()[0] >= target for sw, _ in members):
                for switch, reactor in members:
                    await reactor.wait_for(functools.partial(_reached, switch, target))
        elapsed = time.perf_counter() - start
        result = Result(
            elapsed,
            sum(r.counters.requests_sent for _, r in members),
            sum(r.counters.dials for _, r in members),
            sum(r.counters.dials_failed for _, r in members),
        )
        stopping = time.perf_counter()
        await stack.aclose()
        result.stop_s = time.perf_counter() - stopping
        return result


async def direct_run(nodes: int, target: int) -> Result:
    """The ceiling: node i dials nodes i+1 .. i+target directly, all at once."""
    switches = [
        make_switch(
            [("echo", EchoReactor())],
            moniker=f"d{i}",
            p2p=loopback_p2p_config(max_num_inbound_peers=4 * target),
        )
        for i in range(nodes)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for switch in switches:
            await stack.enter_async_context(switch)
        addresses = [switch_address(sw) for sw in switches]
        start = time.perf_counter()
        async with asyncio.timeout(TIMEOUT_S):
            await asyncio.gather(
                *(
                    switches[i].dial_peer_with_address(addresses[(i + k) % nodes])
                    for i in range(nodes)
                    for k in range(1, target + 1)
                )
            )
        return Result(time.perf_counter() - start, 0, nodes * target, 0)


def row(name: str, results: list[Result]) -> str:
    times = [r.seconds for r in results]
    return (
        f"{name:<22} {statistics.median(times):>8.2f} {min(times):>7.2f} {max(times):>7.2f} "
        f"{statistics.mean(r.requests for r in results):>9.0f} "
        f"{statistics.mean(r.dials for r in results):>7.0f} "
        f"{statistics.mean(r.failed for r in results):>7.1f} "
        f"{statistics.median(r.stop_s for r in results):>7.2f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--target", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--strategy",
        action="append",
        choices=[s.value for s in RequestStrategy],
        help="strategies to run (repeatable; default: all)",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the direct-dial run")
    args = parser.parse_args()
    strategies = (
        [RequestStrategy(s) for s in args.strategy] if args.strategy else list(RequestStrategy)
    )
    logging.basicConfig(level=logging.ERROR)
    print(f"{args.nodes} nodes + 1 seed, max_num_outbound_peers = {args.target}, {args.runs} runs")
    header = (("median s", 8), ("min s", 7), ("max s", 7), ("requests", 9), ("dials", 7))
    print(f"{'':<22} " + " ".join(f"{h:>{w}}" for h, w in header) + f" {'failed':>7} {'stop s':>7}")
    for strategy in strategies:
        results = [
            await pex_run(args.nodes, args.target, strategy, seed=run + 1)
            for run in range(args.runs)
        ]
        print(row(f"PEX {strategy.value}", results))
    if not args.no_ceiling:
        ceiling = [await direct_run(args.nodes, args.target) for _ in range(args.runs)]
        print(row("ceiling: direct dials", ceiling))


if __name__ == "__main__":
    asyncio.run(main())
