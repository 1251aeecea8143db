"""The Crawler on loopback: Python networks, nodes that fail in every way, many at once.

Every failure reason of ``network.json`` is produced by a real server (a closed port, a
tarpit, a node under another ID, a node on another chain, a node without PEX, a server
speaking garbage), and every wait is bounded by the crawl's own timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cometp2p.aio.connection import Connection
from cometp2p.aio.transport import Transport, UpgradedConnection
from cometp2p.crawler import CrawlConfig, Crawler, FailureReason, NodeState
from cometp2p.crawler.crawler import CRAWLER_LISTEN_ADDR
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import CrawlError, LocalProtocolError
from cometp2p.pex.addrbook_store import load_addrbook
from cometp2p.pex.config import PEX_CHANNEL
from cometp2p.pex.core import decode_pex_message, encode_pex_request
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.network import (
    free_loopback_port,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.testing.pex import fast_pex
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo
from cometp2p.wire.proto.tendermint.p2p import pex_pb2, types_pb2
from integration.test_pex_network import Node, make_node, running, wait_all

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"),)
CHAIN = "test-chain"


def fast(**changes: object) -> CrawlConfig:
    base: dict[str, object] = {"timeout_s": 2.0, "allowed_networks": LOOPBACK_ONLY}
    base.update(changes)
    return CrawlConfig(**base)  # type: ignore[arg-type]


def random_address(port: int) -> NetAddress:
    return NetAddress.parse(f"{NodeKey.generate().node_id}@127.0.0.1:{port}", resolve=False)


# -- servers that fail in one way each ------------------------------------------------------------


@dataclass
class Server:
    """A raw TCP server on 127.0.0.1 that counts the sockets it holds at once."""

    port: int = 0
    open_now: int = 0
    peak: int = 0
    accepted: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tcp_server(greeting: bytes | None) -> AsyncIterator[Server]:
    """Accept and hold every socket; write ``greeting`` first (``None``: stay silent)."""
    state = Server()
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.accepted += 1
        state.open_now += 1
        state.peak = max(state.peak, state.open_now)
        state.writers.append(writer)
        try:
            if greeting is not None:
                writer.write(greeting)
                await writer.drain()
            reader_task = asyncio.ensure_future(reader.read())  # until the client hangs up
            await asyncio.wait({reader_task, asyncio.ensure_future(release.wait())})
            reader_task.cancel()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            state.open_now -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        release.set()
        server.close()
        for writer in state.writers:
            writer.transport.abort()
        await server.wait_closed()


# -- a Python network ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def converged_network(size: int) -> AsyncIterator[tuple[Node, list[Node]]]:
    """A seed and ``size`` nodes bootstrapped from it, every node's book holding all."""
    seed = make_node(1, pex=fast_pex(seed_mode=True), moniker="seed")
    async with running(seed):
        nodes = [
            make_node(100 + i, pex=fast_pex(seeds=(str(seed.address),)), moniker=f"n{i}")
            for i in range(size)
        ]
        async with running(*nodes), asyncio.timeout(20):
            await wait_all([seed, *nodes], lambda n: n.pex.book.size() >= size)
            yield seed, nodes


async def test_crawl_finds_every_node_and_a_down_node_is_refused(tmp_path: Path) -> None:
    from cometp2p.crawler.report import write_crawl_files

    async with converged_network(4) as (seed, nodes):
        # A node the seed knows (it joined once, say) that no longer listens. (Its address
        # is put in the book rather than a live node stopped: that keeps the other nodes
        # from racing to redial it while it shuts down, which is not what is tested here.)
        down_address = random_address(free_loopback_port())
        down_id = down_address.id
        seed.pex.book.add_address(down_address, nodes[0].address, datetime.now(UTC))
        crawler = Crawler(CHAIN, fast())
        result = await crawler.crawl([seed.address])

    every = {seed.id, *(n.id for n in nodes), down_id}
    assert {r.node_id for r in result.nodes} == every
    reached = {r.node_id for r in result.reached}
    assert reached == every - {down_id}
    record = result.node(down_id)
    assert record is not None
    assert record.state is NodeState.FAILED
    assert record.error is FailureReason.REFUSED
    monikers = {r.node_id: r.node_info.moniker for r in result.reached if r.node_info}
    assert monikers[seed.id] == "seed"
    assert sorted(monikers[n.id] for n in nodes) == ["n0", "n1", "n2", "n3"]
    # The seed told us about every node; every reached node was asked exactly once.
    assert {(seed.id, n.id) for n in nodes} | {(seed.id, down_id)} <= set(result.edges)
    assert all(r.pex_addrs is not None and r.pex_addrs > 0 for r in result.reached)
    seed_record = result.node(seed.id)
    assert seed_record is not None
    assert seed_record.seed

    files = write_crawl_files(result, tmp_path, now=datetime.now(UTC), png=False)
    document = json.loads(files.network_json.read_text())
    by_id = {n["id"]: n for n in document["nodes"]}
    assert by_id[down_id]["reachable"] is False
    assert by_id[down_id]["error"] == "refused"
    assert by_id[nodes[0].id]["moniker"] == "n0"
    assert by_id[nodes[0].id]["network"] == CHAIN
    assert by_id[nodes[0].id]["channels"] == "00"
    assert by_id[nodes[0].id]["reachable"] is True
    assert [seed.id, nodes[0].id] in document["edges"]
    assert document["summary"]["reached"] == 5
    assert document["summary"]["errors"] == {"refused": 1}
    book = load_addrbook(files.addrbook_json, strict=False, rng=random.Random(1))
    assert {ka.id for ka in book.known_addresses()} == every - {down_id}
    assert all(ka.is_old for ka in book.known_addresses())


async def test_network_is_detected_from_the_seed() -> None:
    async with converged_network(2) as (seed, nodes):
        crawler = Crawler(None, fast())
        result = await crawler.crawl([seed.address])
    assert result.network == CHAIN
    assert {r.node_id for r in result.reached} == {seed.id, *(n.id for n in nodes)}


async def test_block_version_is_learnt_from_the_seed_like_the_network() -> None:
    """Issue #12: a network on block protocol 10 is crawled, not refused as incompatible."""
    old = make_switch(
        [("PEX", make_node(9).pex)],
        chain_id=CHAIN,
        moniker="old",
        p2p=loopback_p2p_config(block_protocol_version=10),
    )
    async with old:
        crawler = Crawler(None, fast())
        result = await crawler.crawl([switch_address(old)])
    assert crawler.seed_block_version == 10
    assert [r.node_id for r in result.reached] == [old.node_id]
    # Told explicitly, the crawler keeps to its own version, and is refused.
    async with old:
        pinned = await Crawler(None, fast(block_version=11)).crawl([switch_address(old)])
    record = pinned.node(old.node_id)
    assert record is not None
    assert record.error is FailureReason.INCOMPATIBLE


async def test_network_detection_fails_with_the_reasons() -> None:
    closed = random_address(free_loopback_port())
    with pytest.raises(CrawlError, match="refused"):
        await Crawler(None, fast()).crawl([closed])


async def test_each_failure_reason_comes_from_the_right_failure() -> None:
    other_chain = make_switch([("PEX", make_node(7).pex)], chain_id="other-chain", moniker="alien")
    no_pex = make_switch([("ECHO", EchoReactor())], chain_id=CHAIN, moniker="echo-only")
    honest = make_switch([("PEX", make_node(8).pex)], chain_id=CHAIN, moniker="honest")
    async with (
        other_chain,
        no_pex,
        honest,
        tcp_server(None) as tarpit,
        tcp_server(bytes(range(64))) as garbage,
    ):
        assert honest.listen_address is not None
        impostor = random_address(honest.listen_address[1])  # honest's port, another ID
        seeds = {
            "refused": random_address(free_loopback_port()),
            "timeout": random_address(tarpit.port),
            "protocol": random_address(garbage.port),
            "auth": impostor,
            "chain": switch_address(other_chain),
            "no_pex": switch_address(no_pex),
        }
        result = await Crawler(CHAIN, fast(timeout_s=1.0)).crawl(seeds.values())

    def reason(key: str) -> FailureReason | None:
        record = result.node(seeds[key].id)
        assert record is not None
        assert not record.reachable
        return record.error

    assert reason("refused") is FailureReason.REFUSED
    assert reason("timeout") is FailureReason.TIMEOUT
    assert reason("protocol") is FailureReason.PROTOCOL_ERROR
    assert reason("auth") is FailureReason.AUTH_FAILURE
    assert reason("chain") is FailureReason.INCOMPATIBLE
    assert reason("no_pex") is FailureReason.INCOMPATIBLE
    alien = result.node(seeds["chain"].id)
    assert alien is not None
    assert alien.node_info is not None
    assert (alien.node_info.moniker, alien.node_info.network) == ("alien", "other-chain")
    assert "network" in (alien.error_detail or "")
    auth = result.node(seeds["auth"].id)
    assert auth is not None
    assert honest.node_id in (auth.error_detail or "")
    assert result.reached == ()


async def test_more_than_a_hundred_handshakes_in_flight() -> None:
    async with tcp_server(None) as tarpit:
        seeds = [random_address(tarpit.port) for _ in range(150)]
        crawler = Crawler(CHAIN, fast(timeout_s=1.5, concurrency=200))
        result = await crawler.crawl(seeds)
    assert tarpit.peak >= 100, f"the tarpit held at most {tarpit.peak} sockets at once"
    assert result.peak_in_flight >= 100
    assert len(result.failed) == 150
    assert {r.error for r in result.failed} == {FailureReason.TIMEOUT}


async def test_concurrency_bounds_sockets_in_flight() -> None:
    async with tcp_server(None) as tarpit:
        seeds = [random_address(tarpit.port) for _ in range(12)]
        result = await Crawler(CHAIN, fast(timeout_s=0.3, concurrency=4)).crawl(seeds)
    # (The tarpit's own count may lag: it sees a hang-up after the next connect.)
    assert tarpit.accepted == 12
    assert result.peak_in_flight == 4
    assert len(result.failed) == 12


async def test_max_duration_leaves_the_rest_not_dialed() -> None:
    async with tcp_server(None) as tarpit:
        seeds = [random_address(tarpit.port) for _ in range(6)]
        config = fast(timeout_s=30.0, concurrency=2, max_duration_s=0.3)
        result = await Crawler(CHAIN, config).crawl(seeds)
    assert {r.state for r in result.nodes} == {NodeState.NOT_DIALED}
    assert result.elapsed_s < 10


async def test_addresses_outside_the_allowed_networks_are_not_dialed() -> None:
    async with tcp_server(None) as tarpit:
        seed = random_address(tarpit.port)
        config = fast(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),))
        result = await Crawler(CHAIN, config).crawl([seed])
    assert tarpit.accepted == 0
    record = result.node(seed.id)
    assert record is not None
    assert record.state is NodeState.NOT_DIALED
    assert record.addresses == [seed]


async def test_crawl_runs_once_per_crawler() -> None:
    crawler = Crawler(CHAIN, fast())
    await crawler.crawl([])
    with pytest.raises(LocalProtocolError):
        await crawler.crawl([])


# -- a scripted PEX peer: what the crawler sends and how it reads answers -------------------------


async def test_pex_conversation_with_a_scripted_peer() -> None:
    key = NodeKey.generate()
    down = random_address(free_loopback_port())
    info = NodeInfo(
        node_id=key.node_id,
        listen_addr="tcp://127.0.0.1:1",
        network=CHAIN,
        channels=bytes([PEX_CHANNEL]),
        moniker="scripted",
    )
    transport = Transport(key, info, handshake_timeout_s=5)
    seen: asyncio.Queue[tuple[NodeInfo, list[pex_pb2.Message]]] = asyncio.Queue()

    async def serve(upgraded: UpgradedConnection) -> None:
        channels = [ChannelDescriptor(id=PEX_CHANNEL, priority=1)]
        conn = Connection(
            upgraded.secret, channels, MConnectionConfig(), initial_plaintext=upgraded.leftover
        )
        conn.start()
        got: list[pex_pb2.Message] = []
        # Ask first, as an outbound Go node would; then answer the crawler's request.
        conn.try_send(PEX_CHANNEL, encode_pex_request().SerializeToString())
        async with asyncio.timeout(5):
            for _ in range(2):
                message = pex_pb2.Message()
                message.ParseFromString(await conn.receive(PEX_CHANNEL))
                got.append(message)
                if message.WhichOneof("sum") == "pex_request":
                    answer = pex_pb2.Message(
                        pex_addrs=pex_pb2.PexAddrs(
                            addrs=[
                                down.to_proto(),
                                types_pb2.NetAddress(id=down.id, ip="not-an-ip", port=1),
                            ]
                        )
                    )
                    conn.try_send(PEX_CHANNEL, answer.SerializeToString())
            await seen.put((upgraded.node_info, got))
            await conn.wait_closed()  # the crawler hangs up once it has the answer

    host, port = await transport.listen("127.0.0.1", 0, serve)
    try:
        address = NetAddress.parse(f"{key.node_id}@{host}:{port}", resolve=False)
        result = await Crawler(CHAIN, fast()).crawl([address])
        async with asyncio.timeout(5):
            crawler_info, messages = await seen.get()
    finally:
        await transport.close()

    kinds = sorted(m.WhichOneof("sum") or "" for m in messages)
    assert kinds == ["pex_addrs", "pex_request"]
    empty_answer = next(m for m in messages if m.WhichOneof("sum") == "pex_addrs")
    assert list(empty_answer.pex_addrs.addrs) == []
    assert crawler_info.listen_addr == CRAWLER_LISTEN_ADDR
    assert crawler_info.channels == bytes([PEX_CHANNEL])
    record = result.node(key.node_id)
    assert record is not None
    assert record.reachable
    assert record.pex_addrs == 2
    assert record.pex_error == "1 of 2 addresses were malformed"
    assert result.edges == ((NodeID(key.node_id), down.id),)
    down_record = result.node(down.id)
    assert down_record is not None
    assert down_record.error is FailureReason.REFUSED
    decode_pex_message(empty_answer.SerializeToString())  # what we sent is a valid PEX message
