"""The crawler against a real 4-node CometBFT v0.38.25 testnet on loopback (issue: the main job).

The crawl starts from one node only, so finding the other three proves real PEX answers
were read; the monikers, versions and channels prove real NodeInfo was decoded. The
addrbook.json the command writes is then handed to a fresh CometBFT node, which must
connect to the testnet from that book alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
from pathlib import Path

import pytest

from cometp2p.crawler import CrawlConfig, Crawler, NodeRecord, NodeState
from cometp2p.testing.cli import run_cometp2p
from cometp2p.wire.netaddress import NetAddress
from interop.cometbft import CometBFTNode
from interop.conftest import NodeFactory
from interop.test_pex_interop import assert_no_pex_complaints, fresh_go_node, until

pytestmark = pytest.mark.interop

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"),)
COMMAND_TIMEOUT_S = 90.0
GO_VERSION = "0.38.25"


@pytest.fixture(scope="module")
def testnet(cometbft_node_module: NodeFactory) -> list[CometBFTNode]:
    return cometbft_node_module.testnet(4)


async def test_crawler_finds_all_four_from_one_node(testnet: list[CometBFTNode]) -> None:
    crawler = Crawler(None, CrawlConfig(timeout_s=5.0, allowed_networks=LOOPBACK_ONLY))
    seed = NetAddress.parse(testnet[0].p2p_address)
    async with asyncio.timeout(60):
        result = await crawler.crawl([seed])

    assert result.network == testnet[0].chain_id  # learnt from the seed's NodeInfo
    by_id: dict[str, NodeRecord] = {r.node_id: r for r in result.nodes}
    assert set(by_id) == {n.node_id for n in testnet}
    for i, node in enumerate(testnet):
        record = by_id[node.node_id]
        assert record.state is NodeState.REACHED, (record.error, record.error_detail)
        assert record.node_info is not None
        assert record.node_info.moniker == f"node{i}"
        assert record.node_info.version == GO_VERSION
        assert record.node_info.network == testnet[0].chain_id
        assert 0x00 in record.node_info.channels
        assert 0x20 in record.node_info.channels
        assert record.dialed == NetAddress.parse(node.p2p_address)
        assert record.pex_error is None
    told_by_seed = {to for frm, to in result.edges if frm == testnet[0].node_id}
    assert told_by_seed == {n.node_id for n in testnet[1:]}
    assert_no_pex_complaints(testnet)


async def test_crawl_command_on_the_testnet_writes_a_book_cometbft_uses(
    testnet: list[CometBFTNode], cometbft_node: NodeFactory, tmp_path: Path
) -> None:
    out = tmp_path / "crawl"
    (tmp_path / "home").mkdir()  # an empty home: a --home that does not exist is an error
    run = await run_cometp2p(
        "crawl",
        testnet[1].p2p_address,
        "--network",
        testnet[0].chain_id,
        "--out",
        str(out),
        "--home",
        str(tmp_path / "home"),
        "--allow-net",
        "127.0.0.0/8",
        timeout_s=COMMAND_TIMEOUT_S,
    )
    assert run.returncode == 0, run.output
    document = json.loads((out / "network.json").read_text())
    nodes = {n["id"]: n for n in document["nodes"]}
    assert set(nodes) == {n.node_id for n in testnet}
    assert sorted(n["moniker"] for n in nodes.values()) == ["node0", "node1", "node2", "node3"]
    assert {n["version"] for n in nodes.values()} == {GO_VERSION}
    assert all(n["reachable"] and n["error"] is None for n in nodes.values())
    assert (out / "network.png").read_bytes()[:4] == b"\x89PNG"

    # A fresh CometBFT node with no seeds and no peers, only our addrbook.json.
    fresh = fresh_go_node(cometbft_node, testnet, "fresh")
    shutil.copyfile(out / "addrbook.json", fresh.home / "config" / "addrbook.json")
    await asyncio.to_thread(fresh.start)
    peers = await until(
        lambda: fresh.peers() or None, "the fresh node connecting from our addrbook.json"
    )
    assert {p["node_info"]["id"] for p in peers} <= {n.node_id for n in testnet}
    assert "Error loading" not in fresh.log_text()
