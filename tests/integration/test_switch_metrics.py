"""Peer API and metrics on a live pair of Switches (behaviour.md §1.13, §2.1-2.4)."""

from __future__ import annotations

import asyncio

from cometp2p.metrics import P2PMetrics
from cometp2p.sansio.mconnection import MConnectionState
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import make_switch, switch_address
from integration.switch_support import peers_added, running

CHAIN = "metrics-chain"


def value(switch: Switch, name: str, **labels: str) -> float | None:
    return switch.metrics.registry.get_sample_value(name, {"chain_id": CHAIN, **labels})


def pair() -> tuple[Switch, EchoReactor, Switch, EchoReactor]:
    ra, rb = EchoReactor(), EchoReactor()
    a = make_switch([("echo", ra)], moniker="a", chain_id=CHAIN, metrics=P2PMetrics(CHAIN))
    b = make_switch([("echo", rb)], moniker="b", chain_id=CHAIN, metrics=P2PMetrics(CHAIN))
    return a, ra, b, rb


async def test_metrics_follow_peers_and_traffic() -> None:
    a, ra, b, rb = pair()
    a.peer_metrics_interval_s = 0.05
    async with running([a, b]), asyncio.timeout(10):
        assert value(a, "cometbft_p2p_peers") == 0
        peer = await a.dial_peer_with_address(switch_address(b))
        await rb.peers_added.get()
        assert value(a, "cometbft_p2p_peers") == 1
        assert value(b, "cometbft_p2p_peers") == 1
        b_id, a_id, ch = b.node_id, a.node_id, f"{ECHO_CHANNEL:#x}"
        assert ch == "0x42"

        assert await peer.send(ECHO_CHANNEL, b"hello")  # 5 bytes
        assert peer.try_send(ECHO_CHANNEL, b"world!")  # 6 bytes
        assert await rb.received.get() == (a_id, b"hello")
        assert await rb.received.get() == (a_id, b"world!")
        sent = value(a, "cometbft_p2p_peer_send_bytes_total", peer_id=b_id, chID=ch)
        assert sent == 11
        assert value(a, "cometbft_p2p_message_send_bytes_total", message_type="bytes") == 11
        received = value(b, "cometbft_p2p_peer_receive_bytes_total", peer_id=a_id, chID=ch)
        assert received == 11
        assert value(b, "cometbft_p2p_message_receive_bytes_total", message_type="bytes") == 11
        # Only the blocking send is timed; it found room at once.
        latency = "cometbft_p2p_send_queue_latency_seconds"
        assert value(a, f"{latency}_count", chID=ch) == 1
        assert value(a, f"{latency}_bucket", chID=ch, le="0.1") == 1

        # The pending gauge is refreshed by the per-peer ticker (nothing queued now).
        assert value(a, "cometbft_p2p_peer_pending_send_bytes", peer_id=b_id) == 0

        # A channel the peer did not advertise is refused without counting.
        assert not await peer.send(0x77, b"nope")
        assert not peer.try_send(0x77, b"nope")
        assert value(a, "cometbft_p2p_peer_send_bytes_total", peer_id=b_id, chID="0x77") is None

        await a.stop_peer_gracefully(peer)
        await ra.peers_removed.get()
        await rb.peers_removed.get()
        assert value(a, "cometbft_p2p_peers") == 0
        assert value(b, "cometbft_p2p_peers") == 0
        assert value(a, "cometbft_p2p_peer_pending_send_bytes", peer_id=b_id) is None
        # Issue #12: a removed peer's series go (Go keeps them forever); totals stay.
        assert value(a, "cometbft_p2p_peer_send_bytes_total", peer_id=b_id, chID=ch) is None
        assert value(b, "cometbft_p2p_peer_receive_bytes_total", peer_id=a_id, chID=ch) is None
        assert value(a, "cometbft_p2p_message_send_bytes_total", message_type="bytes") == 11


async def test_peer_accessors_on_both_sides() -> None:
    a, _, b, rb = pair()
    async with running([a, b]), asyncio.timeout(10):
        out = await a.dial_peer_with_address(switch_address(b))
        inbound = await rb.peers_added.get()

        assert out.id == b.node_id
        assert out.node_info == b.node_info
        assert out.node_info.moniker == "b"
        assert out.is_outbound
        assert not out.is_persistent
        assert out.socket_address == switch_address(b)
        assert out.remote_address == b.listen_address

        assert inbound.id == a.node_id
        assert inbound.node_info.moniker == "a"
        assert not inbound.is_outbound
        # Inbound: the socket's address, not the self-reported listen address.
        assert inbound.socket_address.id == a.node_id
        assert inbound.socket_address.port == inbound.remote_address[1]
        assert inbound.socket_address.port != switch_address(a).port

        assert out.get("k") is None
        out.set("k", {"height": 7})
        assert out.get("k") == {"height": 7}
        assert out.has_channel(ECHO_CHANNEL)
        assert not out.has_channel(0x00)

        status = out.status()
        assert status.state is MConnectionState.OPEN
        assert [c.id for c in status.channels] == [ECHO_CHANNEL]
        assert status.duration_s >= 0
        assert out.queued_messages() == 0
        assert out.is_running
        assert b.peers.get(a.node_id) is inbound
        assert b.peers.has_ip(inbound.remote_ip)


async def test_broadcast_reaches_every_peer() -> None:
    hub_reactor = EchoReactor()
    hub = make_switch([("echo", hub_reactor)], moniker="hub")
    leaves = [EchoReactor() for _ in range(3)]
    switches = [make_switch([("echo", r)], moniker=f"leaf{i}") for i, r in enumerate(leaves)]
    async with running([hub, *switches]), asyncio.timeout(10):
        for leaf in switches:
            await leaf.dial_peer_with_address(switch_address(hub))
        await peers_added(hub_reactor, 3)
        results = await hub.broadcast(ECHO_CHANNEL, b"to all")
        assert results == {leaf.node_id: True for leaf in switches}
        for reactor in leaves:
            assert await reactor.received.get() == (hub.node_id, b"to all")
