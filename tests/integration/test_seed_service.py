"""The seed service over a loopback network of Python PEX nodes.

It serves only live nodes (over HTTP and over PEX), a node that goes down drops out of
``/peers`` within a bounded time, one that comes back returns, and the ``cometp2p seed``
process survives a kill -9 and resumes from its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cometp2p.config import Config
from cometp2p.crawler import CrawlConfig, Crawler
from cometp2p.crypto.keys import NodeKey
from cometp2p.node import Node
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook
from cometp2p.pex.reactor import PEXReactor
from cometp2p.seed.http import make_app
from cometp2p.seed.reactor import VerifiedSeedReactor
from cometp2p.seed.schedule import SchedulePolicy
from cometp2p.seed.service import SeedService
from cometp2p.seed.store import SeedStore
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import (
    free_loopback_port,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.testing.pex import fast_pex
from cometp2p.wire.netaddress import NetAddress

CHAIN = "test-chain"
LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"),)
CRAWL = CrawlConfig(timeout_s=2.0, allowed_networks=LOOPBACK_ONLY)
POLICY = SchedulePolicy(
    min_interval_s=0.05,
    new_interval_s=0.2,
    stable_interval_s=0.5,
    failed_interval_s=0.5,
    fresh_s=5.0,
)
DOWN_BOUND_S = 10.0
"""/peers must forget a node that went down within this (schedule bound: 0.5 s + a round)."""


def address(key: NodeKey, port: int) -> NetAddress:
    return NetAddress.parse(f"{key.node_id}@127.0.0.1:{port}", resolve=False)


def pex_node(key: NodeKey, port: int, knows: list[NetAddress], moniker: str) -> Switch:
    """A PEX node on ``port`` whose book holds ``knows`` (its own routine stays quiet)."""
    book = AddrBook(strict=False, rng=random.Random(port))
    now = datetime.now(UTC)
    for addr in knows:
        if addr.id != key.node_id:
            book.add_address(addr, addr, now)
    reactor = PEXReactor(book, fast_pex(ensure_peers_period_s=30.0))
    p2p = loopback_p2p_config(laddr=f"tcp://127.0.0.1:{port}")
    return make_switch([("PEX", reactor)], chain_id=CHAIN, moniker=moniker, p2p=p2p, node_key=key)


async def until(check: Callable[[], object], timeout_s: float, service: SeedService) -> float:
    """Wait (round by round) until ``check()`` is truthy; the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while not await _call(check):
            await service.wait_for_round(service.runner.rounds, timeout_s)
    return time.monotonic() - started


async def _call(check: Callable[[], object]) -> object:
    value = check()
    if asyncio.iscoroutine(value):
        return await value
    return value


@contextlib.asynccontextmanager
async def seed_service(tmp_path: Path, seeds: list[NetAddress]) -> AsyncIterator[SeedService]:
    store = SeedStore(tmp_path / "data" / "seed.db", POLICY)
    store.add_seeds(seeds)
    service = SeedService(
        store, CHAIN, CRAWL, addrbook_path=tmp_path / "addrbook.json", round_pause_s=0.05
    )
    select, on_inbound = service.make_reactor_callbacks()
    reactor = VerifiedSeedReactor(select, on_inbound, fast_pex())
    config = Config(home=tmp_path, moniker="our-seed", p2p=loopback_p2p_config())
    service.node = Node(config, NodeKey.generate(), CHAIN, [("PEX", reactor)])
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
        store.close()


async def peers_of(client: TestClient) -> set[str]:  # type: ignore[type-arg]
    response = await client.get("/peers", params={"n": "100"})
    assert response.status == 200
    text = (await response.text()).strip()
    return {p.split("@")[0] for p in text.split(",") if p}


async def test_seed_serves_only_live_nodes_and_follows_a_node_down_and_back(
    tmp_path: Path,
) -> None:
    keys = [NodeKey.generate() for _ in range(4)]
    ports = [free_loopback_port() for _ in keys]
    addrs = [address(k, p) for k, p in zip(keys, ports, strict=True)]
    dead = address(NodeKey.generate(), free_loopback_port())  # known, never listening
    switches = [
        pex_node(k, p, [*addrs, dead], f"n{i}")
        for i, (k, p) in enumerate(zip(keys, ports, strict=True))
    ]
    live: set[str] = {a.id for a in addrs}
    async with contextlib.AsyncExitStack() as stack:
        for switch in switches:
            await stack.enter_async_context(switch)
        service = await stack.enter_async_context(seed_service(tmp_path, [addrs[0]]))
        client = TestClient(TestServer(make_app(service)))
        await stack.enter_async_context(client)

        async def serves(expected: set[str]) -> bool:
            return await peers_of(client) == expected

        await until(lambda: serves(live), 20, service)
        nodes = {n["id"]: n for n in (await (await client.get("/nodes")).json())["nodes"]}
        assert set(nodes) == live | {dead.id}
        assert nodes[dead.id]["status"] == "failed"
        assert nodes[dead.id]["failure_reason"] == "refused"
        assert nodes[dead.id]["verified"] is False
        assert nodes[addrs[2].id]["moniker"] == "n2"
        assert nodes[addrs[2].id]["network"] == CHAIN
        assert nodes[addrs[2].id]["status"] == "reachable"
        assert nodes[addrs[2].id]["last_seen"] is not None

        # Over PEX the seed hands out the same live nodes, and hangs up.
        assert service.node is not None
        seed_addr = switch_address(service.node.switch)

        async def handed_over_pex() -> set[str]:
            probe = await Crawler(
                CHAIN, CrawlConfig(timeout_s=2.0, dial_filter=lambda _: False)
            ).crawl([seed_addr])
            return {b for a, b in probe.edges if a == seed_addr.id}

        assert await handed_over_pex() == live

        # n1 goes down: it leaves /peers within the bound; it comes back: it returns.
        await switches[1].stop()
        took_down = await until(lambda: serves(live - {addrs[1].id}), DOWN_BOUND_S, service)
        assert await handed_over_pex() == live - {addrs[1].id}  # PEX drops it too
        revived = pex_node(keys[1], ports[1], addrs, "n1-again")
        await stack.enter_async_context(revived)
        took_up = await until(lambda: serves(live), DOWN_BOUND_S, service)
        print(f"/peers dropped a down node after {took_down:.2f} s, took it back {took_up:.2f} s")

        history = service.store.history(addrs[1].id)
        assert [ok for _, ok, _ in history].count(False) >= 1
        assert history[-1][1] is True

        document = await (await client.get("/network.json")).json()
        assert document["network"] == CHAIN
        assert document["summary"]["found"] == 5  # the probe's 0.0.0.0:0 was not taken in
        assert {n["id"] for n in document["nodes"] if n["reachable"]} == live
        metrics = await (await client.get("/metrics")).text()
        assert "cometp2p_seed_nodes_known 5.0" in metrics
        assert 'cometp2p_seed_nodes_failed{reason="refused"} 1.0' in metrics
        assert "cometp2p_seed_round_duration_seconds_count" in metrics
        book_json = await (await client.get("/addrbook.json")).text()
        assert json.loads(book_json)["addrs"]
        book = load_addrbook(tmp_path / "addrbook.json", strict=False, rng=random.Random(1))
        assert {ka.id for ka in book.known_addresses()} == live
        page = await (await client.get("/")).text()
        assert "cytoscape" in page
        assert (await client.get("/peers", params={"n": "x"})).status == 400


def seed_cli(home: Path, p2p_port: int, http_port: int, seed: NetAddress) -> list[str]:
    return [
        sys.executable, "-m", "cometp2p", "seed", "--home", str(home),
        "--p2p.laddr", f"tcp://127.0.0.1:{p2p_port}", "--http.laddr", f"127.0.0.1:{http_port}",
        "--network", CHAIN, "--allow-net", "127.0.0.0/8", "--timeout", "2",
        "--min-interval", "0.05", "--new-interval", "0.2", "--stable-interval", "0.5",
        "--failed-interval", "0.5", "--fresh", "5", "--log-level", "warning", str(seed),
    ]  # fmt: skip


async def get_json(url: str, timeout_s: float) -> dict[str, object]:
    """GET ``url`` until the server answers (bounded)."""
    async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    data: dict[str, object] = await response.json()
                    return data
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_seed_process_survives_kill_9_and_resumes(tmp_path: Path) -> None:
    keys = [NodeKey.generate() for _ in range(3)]
    ports = [free_loopback_port() for _ in keys]
    addrs = [address(k, p) for k, p in zip(keys, ports, strict=True)]
    live: set[str] = {a.id for a in addrs}
    switches = [
        pex_node(k, p, addrs, f"n{i}") for i, (k, p) in enumerate(zip(keys, ports, strict=True))
    ]
    p2p_port, http_port = free_loopback_port(), free_loopback_port()
    url = f"http://127.0.0.1:{http_port}/nodes"
    async with contextlib.AsyncExitStack() as stack:
        for switch in switches:
            await stack.enter_async_context(switch)
        rounds_before = 0
        for attempt in range(2):
            process = await asyncio.create_subprocess_exec(
                *seed_cli(tmp_path / "home", p2p_port, http_port, addrs[0]),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                first = await get_json(url, 30)
                if attempt == 1:
                    # Straight after the restart, before any round: the state is back.
                    assert {n["id"] for n in first["nodes"]} == live  # type: ignore[attr-defined]
                    assert int(first["rounds"]) >= rounds_before  # type: ignore[call-overload]
                async with asyncio.timeout(20):
                    while True:
                        doc = await get_json(url, 10)
                        nodes = doc["nodes"]
                        reachable = {n["id"] for n in nodes if n["status"] == "reachable"}  # type: ignore[attr-defined]
                        if reachable == live and int(doc["rounds"]) > rounds_before + 1:  # type: ignore[call-overload]
                            break
                        await asyncio.sleep(0.1)
                rounds_before = int(doc["rounds"])  # type: ignore[call-overload]
            finally:
                if process.returncode is None:
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
            assert process.returncode == -signal.SIGKILL
