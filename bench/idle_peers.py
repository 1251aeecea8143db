"""Benchmark: memory and CPU of one node holding N idle peers (N = 100, 300, 500).

A child process runs the node: a :class:`~cometp2p.switch.switch.Switch` with an echo
reactor, default MConnection settings (pings included), room for every inbound peer.
This process runs the peers (Switches that dial it) and watches the node through
``/proc/PID``: ``VmRSS`` once the node listens with no peer, then after each step of
peers connected and a settle pause; the idle CPU% of the node is its user + system CPU
time over ``--idle-s`` seconds with all peers connected and silent (pings only).

Per peer = (RSS with N peers - RSS with none) / N. The goal is at most 40 KiB per peer.
Linux only (``/proc``).

Run: ``.venv/bin/python bench/idle_peers.py [--sizes 100 300 500] [--idle-s 10] [--json]
[--loop auto|asyncio|uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

from cometp2p.aio.loop import event_loop_name
from cometp2p.aio.loop import run as run_event_loop
from cometp2p.config import P2PConfig
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.wire.netaddress import NetAddress

SETTLE_S = 2.0
CONNECT_TIMEOUT_S = 300.0


def _node_p2p(peers: int) -> P2PConfig:
    return loopback_p2p_config(max_num_inbound_peers=peers + 10, handshake_timeout_s=20.0)


def _node_process(peers: int, loop: str, pipe: Pipe) -> None:
    async def main() -> None:
        node = make_switch([("echo", EchoReactor())], moniker="node", p2p=_node_p2p(peers))
        await node.start()
        pipe.send(str(switch_address(node)))
        await asyncio.to_thread(pipe.recv)  # until told to stop
        await node.stop()

    run_event_loop(main(), loop)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def _connect(hub: NetAddress, count: int, leaves: list[Switch]) -> None:
    new = [
        make_switch([("echo", EchoReactor())], moniker=f"peer{len(leaves) + i}")
        for i in range(count)
    ]
    for leaf in new:
        await leaf.start()
    leaves.extend(new)
    # A few dials at a time: the node handshakes them one after another anyway.
    semaphore = asyncio.Semaphore(8)

    async def dial(leaf: Switch) -> None:
        async with semaphore:
            await leaf.dial_peer_with_address(hub)

    await asyncio.gather(*(dial(leaf) for leaf in new))


async def measure(sizes: list[int], idle_s: float, loop: str) -> dict[str, object]:
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    node = ctx.Process(target=_node_process, args=(max(sizes), loop, child_end))
    node.start()
    assert node.pid is not None
    leaves: list[Switch] = []
    steps: list[dict[str, float]] = []
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S + idle_s * len(sizes) * 2):
            address = await asyncio.to_thread(parent_end.recv)
            hub = NetAddress.parse(address, resolve=False)
            await asyncio.sleep(SETTLE_S)
            base_kib = _rss_kib(node.pid)
            for size in sizes:
                await _connect(hub, size - len(leaves), leaves)
                await asyncio.sleep(SETTLE_S)
                cpu0, t0 = _cpu_s(node.pid), time.monotonic()
                await asyncio.sleep(idle_s)
                cpu = (_cpu_s(node.pid) - cpu0) / (time.monotonic() - t0) * 100
                rss = _rss_kib(node.pid)
                steps.append(
                    {
                        "peers": size,
                        "rss_kib": rss,
                        "kib_per_peer": (rss - base_kib) / size,
                        "idle_cpu_percent": cpu,
                    }
                )
    finally:
        parent_end.send("stop")
        await asyncio.gather(*(leaf.stop() for leaf in leaves), return_exceptions=True)
        await asyncio.to_thread(node.join, 60)
        if node.is_alive():
            node.kill()
    return {"loop": loop, "base_rss_kib": base_kib, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU sampling window")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of the node and the peers (default auto: uvloop where installed)",
    )
    args = parser.parse_args()
    loop = event_loop_name(args.loop)
    gc.collect()
    results = run_event_loop(measure(sorted(args.sizes), args.idle_s, loop), loop)
    print(f"node RSS with no peer: {results['base_rss_kib']} KiB (event loop: {loop})")
    print(f"{'peers':>5}  {'RSS KiB':>8}  {'KiB/peer':>8}  {'idle CPU%':>9}")
    steps = results["steps"]
    assert isinstance(steps, list)
    for step in steps:
        print(
            f"{step['peers']:>5}  {step['rss_kib']:>8.0f}  {step['kib_per_peer']:>8.1f}  "
            f"{step['idle_cpu_percent']:>9.2f}"
        )
    print("(goal: <= 40 KiB per peer)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
