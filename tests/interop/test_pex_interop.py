"""PEX and addrbook.json against real CometBFT v0.38.25 nodes on loopback (behaviour.md §4, §5.12).

A 4-node ``cometbft testnet`` (each node on its own port, ``addr_book_strict = false``) is
shared by the module. Our node runs in this process on the event loop; CometBFT is only
ever polled (RPC, files) from worker threads, with deadlines.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook
from cometp2p.pex.config import PexConfig, RequestStrategy
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import loopback_p2p_config, make_switch
from cometp2p.wire.netaddress import NetAddress
from interop.cometbft import LOOPBACK, CometBFTNode, poll_until
from interop.conftest import NodeFactory

pytestmark = pytest.mark.interop

T = TypeVar("T")

LEARN_TIMEOUT_S = 30.0
GO_TIMEOUT_S = 40.0


@pytest.fixture(scope="module")
def testnet(cometbft_node_module: NodeFactory) -> list[CometBFTNode]:
    return cometbft_node_module.testnet(4)


def our_pex_config(strategy: RequestStrategy, seeds: tuple[str, ...]) -> PexConfig:
    """Short ensure-peers rounds; the request gap stays at its default (12 s), which is what
    keeps us under a v0.38 node's limit of one request per 10 s."""
    return PexConfig(
        strategy=strategy,
        seeds=seeds,
        ensure_peers_period_s=0.5,
        min_receive_request_interval_s=1.0,
        adaptive_min_interval_s=0.2,
        adaptive_no_peers_retry_s=0.2,
    )


def our_node(
    chain_id: str,
    seeds: tuple[str, ...],
    *,
    strategy: RequestStrategy = RequestStrategy.V038,
    book_file: Path | None = None,
    seed: int = 0,
) -> tuple[Switch, PEXReactor]:
    reactor = PEXReactor(
        AddrBook(strict=False, rng=random.Random(seed)),
        our_pex_config(strategy, seeds),
        book_file=book_file,
        rng=random.Random(seed + 1),
    )
    switch = make_switch(
        [("PEX", reactor)],
        chain_id=chain_id,
        moniker="cometp2p-pex",
        p2p=loopback_p2p_config(seeds=seeds),
    )
    return switch, reactor


def our_address(switch: Switch) -> str:
    assert switch.listen_address is not None
    return f"{switch.node_info.node_id}@{LOOPBACK}:{switch.listen_address[1]}"


async def until(probe: Callable[[], T | None], what: str, timeout_s: float = GO_TIMEOUT_S) -> T:
    """Poll an external process from a worker thread, so our node keeps running."""
    return await asyncio.to_thread(poll_until, probe, timeout_s=timeout_s, what=what)


def book_ids(reactor: PEXReactor) -> set[str]:
    return {ka.id for ka in reactor.book}


def assert_no_pex_complaints(nodes: list[CometBFTNode]) -> None:
    for node in nodes:
        log = node.log_text()
        assert "too soon" not in log, node.log_tail()
        assert "unsolicited" not in log.lower(), node.log_tail()


def fresh_go_node(
    cometbft_node: NodeFactory,
    testnet: list[CometBFTNode],
    moniker: str,
    *,
    seeds: list[str] | None = None,
    rpc_unsafe: bool | None = None,
) -> CometBFTNode:
    """A full node of the testnet's chain (its genesis copied in), not started."""
    node = cometbft_node(moniker=moniker, start=False, seeds=seeds, rpc_unsafe=rpc_unsafe)
    node.genesis_path.write_bytes(testnet[0].genesis_path.read_bytes())
    return node


@pytest.mark.parametrize("strategy", list(RequestStrategy), ids=lambda s: s.value)
async def test_our_node_bootstrapped_from_one_learns_all_four(
    testnet: list[CometBFTNode], strategy: RequestStrategy
) -> None:
    wanted = {node.node_id for node in testnet}
    switch, reactor = our_node(testnet[0].chain_id, (testnet[0].p2p_address,), strategy=strategy)
    async with switch, asyncio.timeout(LEARN_TIMEOUT_S):
        await reactor.wait_for(lambda: wanted <= book_ids(reactor))
        # We went on to dial what we learnt: more than just the seed node.
        await reactor.wait_for(lambda: switch.num_peers()[0] >= 2)
        for node in testnet:
            entry = reactor.book.get(node.node_id)
            assert entry is not None
            assert entry.addr == NetAddress.parse(node.p2p_address)
        assert reactor.counters.requests_sent >= 1
        assert reactor.counters.addrs_received >= 1
        assert not reactor.counters.violations
    assert_no_pex_complaints(testnet)


async def test_go_node_seeded_by_us_learns_our_addresses_and_writes_a_book_we_load(
    testnet: list[CometBFTNode], cometbft_node: NodeFactory
) -> None:
    wanted = {node.node_id for node in testnet}
    switch, reactor = our_node(testnet[0].chain_id, (testnet[0].p2p_address,), seed=10)
    async with switch, asyncio.timeout(LEARN_TIMEOUT_S + 2 * GO_TIMEOUT_S):
        await reactor.wait_for(lambda: wanted <= book_ids(reactor))
        ours = our_address(switch)
        learner = fresh_go_node(cometbft_node, testnet, "learner", seeds=[ours], rpc_unsafe=True)
        answered_before = reactor.counters.requests_answered
        await asyncio.to_thread(learner.start)

        # Its only seed is us: it dials us and sends a PexRequest, which we answer ...
        await reactor.wait_for(lambda: switch.peers.has(learner.node_id))
        await reactor.wait_for(lambda: reactor.counters.requests_answered > answered_before)

        # ... and it takes our PexAddrs in and dials the testnet nodes it names, keeping us.
        def learner_peers() -> set[str] | None:
            ids = learner.peer_ids()
            return ids if wanted <= ids else None

        peers = await until(learner_peers, "the learner to connect to the 4 testnet nodes")
        assert switch.node_info.node_id in peers

        # Its addrbook.json loads here, and names us as the source of what we told it.
        # CometBFT's save on stop races the process exit; the dial_peers RPC saves the
        # book synchronously (behaviour.md §5.1), so ask it to dial us (already a peer).
        await learner.arpc("dial_peers", peers=[ours], persistent=False)
        book_path = learner.home / "config" / "addrbook.json"
        loaded = load_addrbook(book_path, strict=False, rng=random.Random(0))
        from_us = {ka.id for ka in loaded if ka.src.id == switch.node_info.node_id}
        assert wanted <= from_us
        assert_no_pex_complaints([learner, *testnet])
        assert not reactor.counters.violations


async def test_addrbook_we_write_loads_in_cometbft(
    testnet: list[CometBFTNode], cometbft_node: NodeFactory
) -> None:
    wanted = {node.node_id for node in testnet}
    reader = fresh_go_node(cometbft_node, testnet, "reader")
    book_path = reader.home / "config" / "addrbook.json"
    switch, reactor = our_node(
        testnet[0].chain_id, (testnet[0].p2p_address,), book_file=book_path, seed=20
    )
    async with switch, asyncio.timeout(LEARN_TIMEOUT_S):
        await reactor.wait_for(lambda: wanted <= book_ids(reactor))
    # Saved on stop, atomically, where the Go node reads its book from.
    assert book_path.is_file()
    ours = load_addrbook(book_path, strict=False, rng=random.Random(0))
    assert wanted <= {ka.id for ka in ours}

    # A node with no seeds and no persistent peers can only find peers in that book.
    await asyncio.to_thread(reader.start)

    def reader_peers() -> set[str] | None:
        ids = reader.peer_ids()
        return ids if wanted <= ids else None

    await until(reader_peers, "the reader to dial the 4 testnet nodes from our addrbook.json")
    assert "panic" not in reader.log_text()


@pytest.mark.slow
async def test_our_request_gap_keeps_us_under_cometbft_rate_limit(
    testnet: list[CometBFTNode],
) -> None:
    """Three requests to each Go node (the third needs 10 s after the second, behaviour.md
    §4.5): with the default 12 s gap every one is answered and nobody drops us."""
    wanted = {node.node_id for node in testnet}
    switch, reactor = our_node(testnet[0].chain_id, (testnet[0].p2p_address,), seed=30)
    async with switch, asyncio.timeout(LEARN_TIMEOUT_S + 3 * 12.0):
        await reactor.wait_for(lambda: wanted <= {p.id for p in switch.peers})
        # The book keeps needing addresses (< 1000), so every 0.5 s round asks an
        # eligible peer: 4 peers x 3 requests, all answered.
        await reactor.wait_for(lambda: reactor.counters.addrs_received >= 3 * len(testnet))
        assert wanted <= {p.id for p in switch.peers}
        assert not reactor.counters.violations
    assert_no_pex_complaints(testnet)
