"""P2PMetrics: CometBFT's cometbft_p2p_* names, labels and update rules (behaviour.md §2.4)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cometp2p.metrics import P2PMetrics, message_type_label
from cometp2p.wire.proto.tendermint.p2p import pex_pb2, types_pb2

CHAIN = "metrics-chain"
PEER = "ab" * 20


def sample(metrics: P2PMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"chain_id": CHAIN, **labels})


def test_every_cometbft_metric_is_exported_with_its_go_name() -> None:
    metrics = P2PMetrics(CHAIN)
    metrics.record_send(PEER, 0x20, b"abc", 3)
    metrics.record_receive(PEER, 0x20, b"abc", 3)
    metrics.set_pending(PEER, 0)
    metrics.num_txs.labels(CHAIN, PEER).set(0)
    metrics.record_queue_wait(0x20, 0.001)
    text = generate_latest(metrics.registry).decode()
    for name in (
        "cometbft_p2p_peers",
        "cometbft_p2p_peer_receive_bytes_total",
        "cometbft_p2p_peer_send_bytes_total",
        "cometbft_p2p_peer_pending_send_bytes",
        "cometbft_p2p_num_txs",
        "cometbft_p2p_message_receive_bytes_total",
        "cometbft_p2p_message_send_bytes_total",
        "cometbft_p2p_send_queue_latency_seconds_bucket",
    ):
        assert f"\n{name}{{" in text, name
    labels = f'chID="0x20",chain_id="{CHAIN}",peer_id="{PEER}"'
    assert f"cometbft_p2p_peer_send_bytes_total{{{labels}}} 3.0" in text


def test_peers_gauge_follows_adds_and_removals() -> None:
    metrics = P2PMetrics(CHAIN)
    assert sample(metrics, "cometbft_p2p_peers") == 0
    metrics.peer_added()
    metrics.peer_added()
    metrics.peer_removed()
    assert sample(metrics, "cometbft_p2p_peers") == 1


def test_byte_counters_accumulate_per_peer_channel_and_message_type() -> None:
    metrics = P2PMetrics(CHAIN)
    request = pex_pb2.Message(pex_request=pex_pb2.PexRequest())
    metrics.record_send(PEER, 0x00, request, 2)
    metrics.record_send(PEER, 0x00, request, 2)
    metrics.record_send(PEER, 0x42, b"hello", 5)
    metrics.record_receive(PEER, 0x42, b"hi", 2)
    assert sample(metrics, "cometbft_p2p_peer_send_bytes_total", peer_id=PEER, chID="0x0") == 4
    assert sample(metrics, "cometbft_p2p_peer_send_bytes_total", peer_id=PEER, chID="0x42") == 5
    assert sample(metrics, "cometbft_p2p_peer_receive_bytes_total", peer_id=PEER, chID="0x42") == 2
    assert (
        sample(metrics, "cometbft_p2p_message_send_bytes_total", message_type="p2p_PexRequest") == 4
    )
    assert sample(metrics, "cometbft_p2p_message_send_bytes_total", message_type="bytes") == 5
    assert sample(metrics, "cometbft_p2p_message_receive_bytes_total", message_type="bytes") == 2


def test_pending_gauge_is_set_and_forgotten() -> None:
    metrics = P2PMetrics(CHAIN)
    metrics.set_pending(PEER, 7)
    assert sample(metrics, "cometbft_p2p_peer_pending_send_bytes", peer_id=PEER) == 7
    metrics.forget_peer(PEER)
    assert sample(metrics, "cometbft_p2p_peer_pending_send_bytes", peer_id=PEER) is None
    metrics.forget_peer(PEER)  # idempotent


def test_forgotten_peer_loses_its_byte_series_but_totals_stay() -> None:
    metrics = P2PMetrics(CHAIN)
    metrics.record_send(PEER, 0x42, b"abc", 3)
    metrics.record_receive(PEER, 0x00, b"ab", 2)
    metrics.forget_peer(PEER)
    assert sample(metrics, "cometbft_p2p_peer_send_bytes_total", peer_id=PEER, chID="0x42") is None
    assert (
        sample(metrics, "cometbft_p2p_peer_receive_bytes_total", peer_id=PEER, chID="0x0") is None
    )
    metrics.record_send(PEER, 0x42, b"abcd", 4)  # the same node reconnected: counts from zero
    assert sample(metrics, "cometbft_p2p_peer_send_bytes_total", peer_id=PEER, chID="0x42") == 4
    assert sample(metrics, "cometbft_p2p_message_send_bytes_total", message_type="bytes") == 7


def test_per_peer_series_stay_bounded_under_identity_churn() -> None:
    """Issue #12: 1000 identities that each sent and left leave no series behind."""
    metrics = P2PMetrics(CHAIN)
    for i in range(1000):
        peer = f"{i:040x}"
        metrics.record_send(peer, 0x20, b"x", 1)
        metrics.record_receive(peer, 0x20, b"x", 1)
        metrics.set_pending(peer, 1)
        metrics.forget_peer(peer)
    text = generate_latest(metrics.registry).decode()
    assert "peer_id=" not in text
    assert sample(metrics, "cometbft_p2p_message_send_bytes_total", message_type="bytes") == 1000


def test_queue_latency_histogram_per_channel() -> None:
    metrics = P2PMetrics(CHAIN)
    metrics.record_queue_wait(0x42, 0.002)
    metrics.record_queue_wait(0x42, 2.0)
    name = "cometbft_p2p_send_queue_latency_seconds"
    assert sample(metrics, f"{name}_count", chID="0x42") == 2
    assert sample(metrics, f"{name}_sum", chID="0x42") == 2.002
    assert sample(metrics, f"{name}_bucket", chID="0x42", le="0.005") == 1
    assert sample(metrics, f"{name}_count", chID="0x20") is None


def test_namespace_and_separate_registries() -> None:
    shared = CollectorRegistry()
    custom = P2PMetrics(CHAIN, namespace="tendermint", registry=shared)
    custom.peer_added()
    assert shared.get_sample_value("tendermint_p2p_peers", {"chain_id": CHAIN}) == 1
    # Two nodes in one process do not clash: each default instance has its own registry.
    one, two = P2PMetrics(CHAIN), P2PMetrics(CHAIN)
    one.peer_added()
    assert sample(one, "cometbft_p2p_peers") == 1
    assert sample(two, "cometbft_p2p_peers") == 0


def test_message_type_label_unwraps_oneof_wrappers() -> None:
    assert message_type_label(b"raw") == "bytes"
    assert message_type_label(pex_pb2.PexRequest()) == "p2p_PexRequest"
    assert message_type_label(pex_pb2.Message(pex_request=pex_pb2.PexRequest())) == (
        "p2p_PexRequest"
    )
    addrs = pex_pb2.Message(pex_addrs=pex_pb2.PexAddrs())
    assert message_type_label(addrs) == "p2p_PexAddrs"
    assert message_type_label(pex_pb2.Message()) == "p2p_Message"  # empty wrapper
    # A message with a oneof beside other fields is not a wrapper.
    assert message_type_label(types_pb2.DefaultNodeInfo()) == "p2p_DefaultNodeInfo"
