"""Fault suite (issue #12): fuzzed links, a SIGKILLed node, numbered messages.

Short, bounded versions of ``bench/faults.py``: a 6-node PEX network (a seed and five
members, target 2 outbound peers each) whose every link is fuzzed at its dialer, in drop
mode and in delay mode; a node killed with SIGKILL and restarted; and the numbering
reactor's accounting of every message over the fuzzed links.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from cometp2p.config import FuzzConnConfig, load_config, write_config
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook_with_report, save_addrbook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.switch import ReconnectPolicy, Switch
from cometp2p.testing.cli import run_cometp2p
from cometp2p.testing.faults import Accounting, FaultNet
from cometp2p.testing.fuzz import DELAY, DROP
from cometp2p.testing.network import LOOPBACK, free_loopback_port, make_switch
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

CONVERGE_TIMEOUT_S = 30.0
SAMPLE_S = 5.0


def assert_clean_accounting(result: Accounting) -> None:
    assert result.violations == []  # no reordering, no duplicate, no gap
    assert result.lost_untold == 0  # every loss is at a disconnect the sender was told of
    assert result.sent > 1000
    assert result.delivered == result.sent - result.lost_told


@dataclasses.dataclass
class Run:
    accounting: Accounting
    broken: int
    made: int
    converged_share: float
    dropped_or_closed: int
    slept: int


async def run_fuzzed(fuzz: FuzzConnConfig) -> Run:
    async with FaultNet(6, target=2, fuzz=fuzz, activate_after_s=0.5, seed=3) as net:
        await net.wait_converged(CONVERGE_TIMEOUT_S)
        await net.sample(SAMPLE_S)
        # Whatever broke meanwhile, the network is converged again within a bound.
        await net.wait_converged(CONVERGE_TIMEOUT_S)
        accounting = await net.drain(10.0)
        totals = [f.totals() for f in net.fuzzers]
        return Run(
            accounting,
            net.links_broken(),
            net.links_made(),
            net.convergence.fraction_after_first(),
            sum(t.dropped + t.closed for t in totals),
            sum(t.slept for t in totals),
        )


async def test_drop_mode_network_stays_converged_and_remakes_broken_links() -> None:
    run = await run_fuzzed(FuzzConnConfig(mode=DROP, prob_drop_rw=0.002, prob_drop_conn=0.0005))
    assert run.dropped_or_closed >= 1
    assert run.broken >= 1  # a dropped write breaks its link...
    assert run.made > run.broken  # ...and the link is made again
    # A loose bound for a loaded 2-core machine (bench/faults.py measures ~68 % over
    # 2 minutes); "stays converged" is the bounded re-convergence asserted in run_fuzzed.
    assert run.converged_share >= 0.25, run
    assert_clean_accounting(run.accounting)


async def test_delay_mode_network_stays_converged_and_delivers_in_order() -> None:
    run = await run_fuzzed(FuzzConnConfig(mode=DELAY, max_delay_s=0.02))
    assert run.slept > 100
    assert run.converged_share >= 0.5
    assert_clean_accounting(run.accounting)


# -- a node killed with SIGKILL --------------------------------------------------------------


def known_book(count: int) -> AddrBook:
    book = AddrBook(strict=False, rng=random.Random(5))
    now = datetime.now(UTC)
    for i in range(count):
        addr = NetAddress(
            NodeID(f"{i + 1:040x}"), ipaddress.ip_address(f"127.3.{i // 200}.{i % 200 + 1}"), 1
        )
        src = NetAddress(
            NodeID(f"{i + 9000:040x}"), ipaddress.ip_address(f"{11 + i % 90}.{i // 90}.1.1"), 1
        )
        book.add_address(addr, src, now)
    return book


@asynccontextmanager
async def node_process(home: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    with (home.parent / "node.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cometp2p", "start", "--home", str(home),
            "--chain-id", "faults", "--p2p.laddr", f"tcp://{LOOPBACK}:{port}",
            "--log-level", "info", "--pex.ensure_peers_period", "0.3",
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def pex_switch(name: str, target: str) -> Switch:
    # CometBFT's PEX periods (30 s): the redials are the Switch's persistent-peer ones.
    reactor = PEXReactor(AddrBook(strict=False, rng=random.Random(7)), PexConfig())
    policy = ReconnectPolicy(fast_attempts=200, fast_interval_s=0.1, jitter_s=0.0)
    switch = make_switch([("PEX", reactor)], chain_id="faults", moniker=name,
                         reconnect_policy=policy)  # fmt: skip
    switch.config = dataclasses.replace(switch.config, persistent_peers=(target,))
    return switch


async def wait_peer(
    switches: list[Switch], node_id: str, timeout_s: float, *, present: bool = True
) -> float:
    """Seconds until every switch has (or, ``present=False``, has not) ``node_id``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(timeout_s):
        while not all(s.peers.has(node_id) is present for s in switches):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return loop.time() - start


async def test_a_sigkilled_node_is_reconnected_by_its_persistent_peers_and_its_book_is_intact(
    tmp_path: Path,
) -> None:
    home = tmp_path / "victim"
    assert (await run_cometp2p("init", "--home", str(home), timeout_s=60)).returncode == 0
    config = load_config(home)
    write_config(
        dataclasses.replace(
            config,
            p2p=dataclasses.replace(config.p2p, addr_book_strict=False, allow_duplicate_ip=True),
        )
    )
    save_addrbook(known_book(60), config.addr_book_path)
    node_id = (await run_cometp2p("show-node-id", "--home", str(home), timeout_s=60)).output
    node_id = node_id.strip()
    port = free_loopback_port()
    target = f"{node_id}@{LOOPBACK}:{port}"
    peers = [pex_switch("a", target), pex_switch("b", target)]
    async with peers[0], peers[1]:
        async with node_process(home, port) as victim:
            await wait_peer(peers, node_id, 60.0)
            os.kill(victim.pid, signal.SIGKILL)
            assert await victim.wait() == -signal.SIGKILL
            await wait_peer(peers, node_id, 30.0, present=False)  # both saw it die
        # Killed mid-run: the book on disk is whole (atomic saves), nothing left behind.
        book, report = load_addrbook_with_report(
            config.addr_book_path, strict=False, rng=random.Random(1)
        )
        assert report.skipped == 0
        assert len(book) >= 60
        async with node_process(home, port):
            reconnect_s = await wait_peer(peers, node_id, 30.0)
        assert reconnect_s < 30.0
        assert not list(config.addr_book_path.parent.glob(".addrbook.json.*.tmp"))
