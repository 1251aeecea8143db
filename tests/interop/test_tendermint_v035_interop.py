"""``cometp2p start`` and ``cometp2p crawl`` against tendermint v0.35.9, and a mixed network.

behaviour.md §9.1-§9.2. Two networks share the module and its one 120 s stability window
(the other checks run inside it):

* a 4-node ``tendermint testnet`` of v0.35.9, our node with node0 as its persistent peer;
* a mixed network on one chain ID: one node each of tendermint v0.34.24, tendermint v0.35.9
  and CometBFT v0.38, all persistent peers of a second node of ours.

Every wait polls RPC or a log file with a deadline; every process is stopped at teardown.
The last test stops our nodes and prints their PEX request summary (the cadence of our
requests and the requests the Go nodes sent us, by dialect).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from cometp2p.crawler.crawler import CrawlConfig, Crawler
from cometp2p.wire.netaddress import NetAddress
from interop.cometbft import CometBFTNode, poll_until
from interop.ours import (
    OurHome,
    added_peer_ids,
    crawl_cli,
    make_our_home,
    pex_summary,
    pex_summary_line,
    reached_ids,
    removed_peer_ids,
)
from interop.tendermint import TENDERMINT_V034, TENDERMINT_V035, make_tendermint_testnet
from interop.test_start_interop import StartProcess

pytestmark = pytest.mark.interop

CHAIN_ID: Final = "cometp2p-v035-interop"
MIXED_CHAIN_ID: Final = "cometp2p-mixed-interop"
STABLE_S: Final = 120.0
"""How long our connections must hold, from our node's start."""
LEARN_TIMEOUT_S: Final = 90.0
"""Bound for addresses to travel by PEX and be dialed (v0.35 dials within seconds of
learning; our ensure-peers round runs every 30 s)."""
GO_OPTIONS: Final[dict[str, Any]] = {"timeout_commit": "1s"}


@dataclass
class Network:
    nodes: list[CometBFTNode]
    home: OurHome
    ours: StartProcess
    started: float

    def wait_until_stable(self) -> None:
        remaining = self.started + STABLE_S - time.monotonic()
        if remaining > 0:
            # The behaviour under test is "nothing happens for 120 s": there is no event.
            time.sleep(remaining)


@contextlib.contextmanager
def _running(nodes: list[CometBFTNode], processes: list[StartProcess]) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(AssertionError):
                process.terminate()
            print(f"cometp2p start {' '.join(process.args)}\n{process.log_tail(15)}")
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def v035(
    tendermint_v035_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    base = tmp_path_factory.mktemp("v035")
    nodes = make_tendermint_testnet(
        tendermint_v035_binary,
        TENDERMINT_V035,
        base / "testnet",
        4,
        chain_id=CHAIN_ID,
        **GO_OPTIONS,
    )
    home = make_our_home(base / "ours")
    processes: list[StartProcess] = []
    with _running(nodes, processes):
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        processes.append(home.start(base / "ours.log", CHAIN_ID, nodes[0].p2p_address))
        yield Network(nodes, home, processes[0], time.monotonic())


@pytest.fixture(scope="module")
def mixed(
    tendermint_v034_binary: Path,
    tendermint_v035_binary: Path,
    cometbft_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Network]:
    base = tmp_path_factory.mktemp("mixed")
    v034 = make_tendermint_testnet(
        tendermint_v034_binary, TENDERMINT_V034, base / "v034", 1, chain_id=MIXED_CHAIN_ID,
        moniker_prefix="v034-", **GO_OPTIONS,
    )  # fmt: skip
    v035 = make_tendermint_testnet(
        tendermint_v035_binary, TENDERMINT_V035, base / "v035", 1, chain_id=MIXED_CHAIN_ID,
        moniker_prefix="v035-", **GO_OPTIONS,
    )  # fmt: skip
    v038 = CometBFTNode.init(
        cometbft_binary, base / "v038", moniker="v038-0", chain_id=MIXED_CHAIN_ID, **GO_OPTIONS
    )
    nodes = [*v034, *v035, v038]
    home = make_our_home(base / "ours")
    processes: list[StartProcess] = []
    with _running(nodes, processes):
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        peers = [node.p2p_address for node in nodes]
        processes.append(home.start(base / "ours.log", MIXED_CHAIN_ID, *peers))
        yield Network(nodes, home, processes[0], time.monotonic())


def _wait_for(probe: Any, what: str, timeout_s: float = LEARN_TIMEOUT_S) -> Any:
    return poll_until(probe, timeout_s=timeout_s, what=what, interval_s=0.5)


def test_start_connects_to_v035_and_to_every_version_of_the_mixed_network(
    v035: Network, mixed: Network
) -> None:
    # Both networks start together so that their stability windows overlap.
    node0 = v035.nodes[0]
    _wait_for(
        lambda: True if node0.node_id in added_peer_ids(v035.ours.log_text()) else None,
        f"our node to add {node0.node_id}",
    )
    wanted = {node.node_id for node in mixed.nodes}
    _wait_for(
        lambda: True if wanted <= added_peer_ids(mixed.ours.log_text()) else None,
        "our mixed-network node to add the v0.34, v0.35 and v0.38 nodes",
    )


def test_a_v035_node_learns_our_address_through_pex(v035: Network) -> None:
    # v0.35 never takes an inbound peer's address from its NodeInfo: only PEX (our
    # answers start with our own address) puts it in a store, and /net_info lists only
    # peers with a stored address; nodes 1-3 dial us once node0 advertises us.
    ours = v035.home.node_id
    listing = _wait_for(
        lambda: [n.home.name for n in v035.nodes if ours in n.peer_ids()] or None,
        "a v0.35 node to list us in /net_info",
    )
    assert listing


def test_we_learn_and_connect_to_every_v035_node(v035: Network) -> None:
    wanted = {node.node_id for node in v035.nodes}
    _wait_for(
        lambda: True if wanted <= added_peer_ids(v035.ours.log_text()) else None,
        "our node to be connected to all four v0.35 nodes",
    )


def test_crawl_from_one_v035_node_reaches_every_node_in_any_net_info(
    v035: Network, tmp_path: Path
) -> None:
    listed = {node.node_id for node in v035.nodes}
    for node in v035.nodes:
        listed |= node.peer_ids()
    network = crawl_cli(tmp_path / "crawl", v035.nodes[0].p2p_address)
    assert network["network"] == CHAIN_ID  # learnt from the seed: no --network given
    assert listed <= reached_ids(network)


def test_crawl_of_v035_from_an_address_with_no_other_connection(
    v035: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crawl from 127.0.0.1 shares its source IP with the testnet's own connections,
    # which keeps v0.35's per-IP tracker from applying. From 127.0.0.2 the seed sees the
    # probe and then the real visit as the only connections of that IP: the visit must
    # come >= 100 ms after the probe or it is refused (behaviour.md §9.2).
    open_connection = asyncio.open_connection

    async def from_127_0_0_2(host: str, port: int, **kwargs: Any) -> Any:
        return await open_connection(host, port, local_addr=("127.0.0.2", 0), **kwargs)

    monkeypatch.setattr("cometp2p.crawler.crawler.asyncio.open_connection", from_127_0_0_2)
    seed = NetAddress.parse(v035.nodes[0].p2p_address, resolve=False)
    result = asyncio.run(Crawler(None, CrawlConfig(timeout_s=5.0)).crawl([seed]))
    failures = {r.node_id: r.error_detail for r in result.nodes if r.error is not None}
    assert {node.node_id for node in v035.nodes} <= {r.node_id for r in result.reached}, failures


def _go_dropped_us(node: CometBFTNode, our_id: str) -> list[str]:
    """Log lines of a Go node that show it dropping or punishing us."""
    markers = ("peer disconnected", "Stopping peer for error", "banned", "stopping peer")
    return [
        line
        for line in node.log_text().splitlines()
        if our_id in line and any(m in line for m in markers)
    ]


def test_connections_hold_for_120_s_and_no_request_is_refused(
    v035: Network, mixed: Network
) -> None:
    v035.wait_until_stable()
    mixed.wait_until_stable()
    for network in (v035, mixed):
        go_ids = {node.node_id for node in network.nodes}
        watched = go_ids if network is mixed else {network.nodes[0].node_id}
        log = network.ours.log_text()
        assert watched <= added_peer_ids(log)
        assert not watched & removed_peer_ids(log), network.ours.log_tail()
        assert "banned" not in log
        assert "too soon" not in log
        for node in network.nodes if network is mixed else network.nodes[:1]:
            assert not _go_dropped_us(node, network.home.node_id), node.log_tail()
    summaries = {}
    for name, network in (("v0.35 testnet", v035), ("mixed", mixed)):
        assert network.ours.terminate() == 0, network.ours.log_tail()
        summaries[name] = summary = pex_summary(network.ours.log_text())
        print(f"{name}: {pex_summary_line(network.ours.log_text())}")
        assert summary["v0.35"].received > 0  # v0.35 asks us often: its rules held
        assert summary["v0.35"].sent > 0  # we asked it (PexRequestV2) and it answered
        assert all(part.refused == 0 for part in summary.values()), summary
    assert summaries["mixed"]["v0.38"].sent > 0
