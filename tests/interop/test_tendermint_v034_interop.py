"""``cometp2p start`` and ``cometp2p crawl`` against a tendermint v0.34.24 testnet.

tendermint v0.34 runs the same legacy Switch and PEX reactor as CometBFT v0.38 (behaviour.md
§1, §4), so it is held to v0.38's rules. One 4-node ``tendermint testnet`` and one node of
ours share the module: node0 is our persistent peer (we dial it) and node3 has us as its
persistent peer (it dials us); node1 and node2 only hear of us through PEX.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from interop.cometbft import CometBFTNode, JSONObject, poll_until
from interop.ours import (
    OurHome,
    added_peer_ids,
    crawl_cli,
    make_our_home,
    pex_added,
    pex_summary,
    pex_summary_line,
    reached_ids,
)
from interop.tendermint import TENDERMINT_V034, make_tendermint_testnet
from interop.test_start_interop import StartProcess

pytestmark = pytest.mark.interop

CHAIN_ID: Final = "cometp2p-v034-interop"
PEER_TIMEOUT_S: Final = 30.0
LEARN_TIMEOUT_S: Final = 100.0
"""Bound for a v0.34 node to hear of us by PEX and dial us: it asks one random peer per
30 s ensure-peers round and dials from its book in the next rounds."""


@dataclass
class Network:
    nodes: list[CometBFTNode]
    home: OurHome
    ours: StartProcess


@pytest.fixture(scope="module")
def v034(
    tendermint_v034_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    base = tmp_path_factory.mktemp("v034")
    # One outbound slot, taken by node0: we never dial node1 or node2 ourselves, so the
    # only way they can get connected to us is to learn our address by PEX and dial it.
    home = make_our_home(base / "ours", max_num_outbound_peers=1)
    nodes = make_tendermint_testnet(
        tendermint_v034_binary, TENDERMINT_V034, base / "testnet", 4, chain_id=CHAIN_ID,
        timeout_commit="1s",
    )  # fmt: skip
    others = [node.p2p_address for node in nodes[:3]]
    nodes[3].configure(persistent_peers=[*others, home.p2p_address], timeout_commit="1s")
    ours: StartProcess | None = None
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        ours = home.start(base / "ours.log", CHAIN_ID, nodes[0].p2p_address)
        yield Network(nodes, home, ours)
    finally:
        if ours is not None:
            with contextlib.suppress(AssertionError):
                ours.terminate()
            print(f"cometp2p start\n{ours.log_tail(15)}")
        for node in nodes:
            node.stop()


def _entry(node: CometBFTNode, node_id: str, timeout_s: float = PEER_TIMEOUT_S) -> JSONObject:
    def probe() -> JSONObject | None:
        return next((p for p in node.peers() if p["node_info"]["id"] == node_id), None)

    found: JSONObject = poll_until(
        probe, timeout_s=timeout_s, what=f"{node_id} in {node.home.name} /net_info"
    )
    return found


def test_start_works_in_both_dial_directions(v034: Network) -> None:
    ours = v034.home.node_id
    assert _entry(v034.nodes[0], ours)["is_outbound"] is False  # we dialed node0
    assert _entry(v034.nodes[3], ours)["is_outbound"] is True  # node3 dialed us
    both = {v034.nodes[0].node_id, v034.nodes[3].node_id}
    poll_until(
        lambda: True if both <= added_peer_ids(v034.ours.log_text()) else None,
        timeout_s=PEER_TIMEOUT_S,
        what="our node to log node0 and node3 as peers",
    )


def test_crawl_reaches_4_of_4(v034: Network, tmp_path: Path) -> None:
    network = crawl_cli(tmp_path / "crawl", v034.nodes[0].p2p_address)
    assert network["network"] == CHAIN_ID
    assert {node.node_id for node in v034.nodes} <= reached_ids(network)


@pytest.mark.timeout(LEARN_TIMEOUT_S + 60)
def test_pex_works_both_ways(v034: Network) -> None:
    ours = v034.home.node_id

    # v0.34 -> us: node1 or node2, never told of us, hears of us by PEX and dials us.
    def dialed_by_pex() -> list[Any] | None:
        hits = [
            n.home.name
            for n in v034.nodes[1:3]
            if any(p["node_info"]["id"] == ours and p["is_outbound"] for p in n.peers())
        ]
        return hits or None

    assert poll_until(
        dialed_by_pex, timeout_s=LEARN_TIMEOUT_S, what="node1 or node2 to dial us", interval_s=0.5
    )
    # us -> v0.34: node0's answers put the nodes we were not told of in our book.
    assert v034.ours.terminate() == 0, v034.ours.log_tail()
    log = v034.ours.log_text()
    summary = pex_summary(log)
    print(f"v0.34 testnet: {pex_summary_line(log)}")
    assert summary["v0.38"].sent > 0
    assert summary["v0.38"].refused == 0
    assert "banned" not in log
    assert pex_added(log) >= 1
