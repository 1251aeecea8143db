"""The CometBFT fixtures work: a node starts on loopback, answers RPC, a testnet connects."""

from __future__ import annotations

import pytest

from interop.cometbft import COMETBFT_VERSION, LOOPBACK, CometBFTError, CometBFTNode, poll_until
from interop.conftest import NodeFactory

pytestmark = pytest.mark.interop

CHAIN_ID = "cometp2p-fixture-chain"


@pytest.fixture(scope="module")
def node(cometbft_node_module: NodeFactory) -> CometBFTNode:
    return cometbft_node_module(moniker="fixture0", chain_id=CHAIN_ID)


def test_status_reports_our_chain_id_identity_and_loopback_listener(node: CometBFTNode) -> None:
    status = node.rpc("status")
    info = status["node_info"]
    assert info["network"] == CHAIN_ID
    assert node.chain_id == CHAIN_ID
    assert info["id"] == node.node_id
    assert len(node.node_id) == 40
    assert info["moniker"] == "fixture0"
    assert info["version"] == COMETBFT_VERSION
    assert info["listen_addr"] == f"tcp://{LOOPBACK}:{node.p2p_port}"
    assert info["other"]["rpc_address"] == f"tcp://{LOOPBACK}:{node.rpc_port}"


def test_single_node_has_no_peers(node: CometBFTNode) -> None:
    net_info = node.rpc("net_info")
    assert net_info["n_peers"] == "0"
    assert net_info["peers"] == []
    assert net_info["listening"] is True


def test_config_is_rewritten_for_loopback(node: CometBFTNode) -> None:
    config = node.config()
    assert config["proxy_app"] == "kvstore"
    assert config["p2p"]["addr_book_strict"] is False
    assert config["p2p"]["allow_duplicate_ip"] is True
    assert config["rpc"]["pprof_laddr"] == ""
    assert config["instrumentation"]["prometheus"] is False


def test_rpc_errors_are_raised(node: CometBFTNode) -> None:
    with pytest.raises(CometBFTError, match="no_such_method"):
        node.rpc("no_such_method")


def test_blocks_are_produced(node: CometBFTNode) -> None:
    def height() -> int:
        return int(node.rpc("status")["sync_info"]["latest_block_height"])

    first = height()
    later = poll_until(
        lambda: h if (h := height()) > first else None, timeout_s=20.0, what="a new block"
    )
    assert later > first


def test_two_node_testnet_connects(cometbft_node: NodeFactory) -> None:
    nodes = cometbft_node.testnet(2)
    a, b = nodes
    assert a.chain_id == b.chain_id
    assert len({a.p2p_port, a.rpc_port, b.p2p_port, b.rpc_port}) == 4
    peers_a = a.wait_for_peers(1)
    peers_b = b.wait_for_peers(1)
    assert peers_a[0]["node_info"]["id"] == b.node_id
    assert peers_b[0]["node_info"]["id"] == a.node_id
    assert peers_a[0]["remote_ip"] == LOOPBACK


def test_stop_ends_the_process(cometbft_node: NodeFactory) -> None:
    n = cometbft_node(moniker="stopme")
    assert n.running
    n.stop()
    assert not n.running
    with pytest.raises(OSError):
        n.rpc("status", timeout_s=2.0)
    assert "Starting Node service" in n.log_text() or "service start" in n.log_text()
