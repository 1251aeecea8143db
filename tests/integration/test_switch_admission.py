"""Who gets in: the upgrade pipeline's checks and the Switch's admission rules on loopback.

behaviour.md §1.5 (filterConn, upgrade steps 1-7), §1.6 (inbound limit), §1.8 (filterPeer),
§1.11 (unconditional peers), §1.14 (self / duplicate detection).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import pytest

from cometp2p.aio.transport import Transport
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    ConnectionBrokenError,
    IncompatiblePeerError,
    IncompatibleReason,
    NodeInfoInvalidError,
    RejectedError,
    RejectReason,
)
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.switch.switch import AlreadyConnectedError, ReconnectPolicy, Switch
from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import (
    FAST_RECONNECT,
    LOOPBACK,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import ProtocolVersion
from integration.switch_support import next_rejection, peers_added, rejections, running


def echo_switch(moniker: str, **kwargs: object) -> tuple[Switch, EchoReactor]:
    reactor = EchoReactor()
    return make_switch([("echo", reactor)], moniker=moniker, **kwargs), reactor  # type: ignore[arg-type]


async def raw_dial(switch: Switch) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert switch.listen_address is not None
    return await asyncio.open_connection(LOOPBACK, switch.listen_address[1])


# -- limits ----------------------------------------------------------------------------------


async def test_inbound_peer_over_the_limit_is_refused_with_its_reason() -> None:
    hub, hub_reactor = echo_switch("hub", p2p=loopback_p2p_config(max_num_inbound_peers=2))
    refused = rejections(hub)
    dialers = [echo_switch(f"d{i}")[0] for i in range(3)]
    async with running([hub, *dialers]), asyncio.timeout(10):
        for dialer in dialers[:2]:
            await dialer.dial_peer_with_address(switch_address(hub))
        await peers_added(hub_reactor, 2)
        assert hub.num_peers() == (0, 2, 0)

        await dialers[2].dial_peer_with_address(switch_address(hub))
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.LIMIT
        assert rejected.node_id == dialers[2].node_id
        assert "max_num_inbound_peers=2" in str(rejected)
        assert {p.id for p in hub.peers} == {d.node_id for d in dialers[:2]}
        # The refused socket left the conn set; the peers' sockets are still in it.
        assert sorted(hub.transport.connections()) == sorted(p.remote_address for p in hub.peers)


async def test_unconditional_peer_bypasses_the_inbound_limit_and_is_not_counted() -> None:
    vip_key = NodeKey.generate()
    hub, hub_reactor = echo_switch(
        "hub",
        p2p=loopback_p2p_config(
            max_num_inbound_peers=1, unconditional_peer_ids=(vip_key.node_id.upper(),)
        ),
    )
    ordinary, _ = echo_switch("ordinary")
    vip, _ = echo_switch("vip", node_key=vip_key)
    async with running([hub, ordinary, vip]), asyncio.timeout(10):
        await ordinary.dial_peer_with_address(switch_address(hub))
        await vip.dial_peer_with_address(switch_address(hub))
        ids = {p.id for p in await peers_added(hub_reactor, 2)}
        assert ids == {ordinary.node_id, vip.node_id}
        assert hub.is_peer_unconditional(vip.node_id)
        assert hub.num_peers() == (0, 1, 0)  # the unconditional peer is not counted
        assert hub.transport.max_incoming_handshakes == 2  # limit + unconditional


async def test_handshake_cap_closes_extra_inbound_sockets() -> None:
    hub, _ = echo_switch("hub", p2p=loopback_p2p_config(max_num_inbound_peers=1))
    refused = rejections(hub)
    async with hub, asyncio.timeout(10):
        reader1, writer1 = await raw_dial(hub)
        # The hub starts its handshake by sending its ephemeral key: the socket is counted.
        assert await reader1.read(1)
        assert hub.transport.num_incoming_handshakes == 1
        reader2, writer2 = await raw_dial(hub)
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.LIMIT
        assert "in handshake" in str(rejected)
        with contextlib.suppress(ConnectionError):  # an abort may read as a reset
            assert await reader2.read() == b""  # closed without a handshake byte
        for writer in (writer1, writer2):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_silent_inbound_socket_is_dropped_after_the_handshake_timeout() -> None:
    hub, _ = echo_switch("hub", p2p=loopback_p2p_config(handshake_timeout_s=0.2))
    refused = rejections(hub)
    async with hub, asyncio.timeout(10):
        _reader, writer = await raw_dial(hub)
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.AUTH_FAILURE
        assert "timed out" in str(rejected)
        assert hub.transport.num_incoming_handshakes == 0
        assert hub.transport.connections() == []
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_silent_listener_fails_the_dial_after_the_handshake_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                await reader.read()  # never answers; the dialer gives up and resets
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(silent, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    dialer, _ = echo_switch("dialer", p2p=loopback_p2p_config(handshake_timeout_s=0.2))
    async with server, dialer, asyncio.timeout(10):
        target = NetAddress.parse(f"{NodeKey.generate().node_id}@{LOOPBACK}:{port}")
        with pytest.raises(RejectedError) as info:
            await dialer.dial_peer_with_address(target)
        assert info.value.reason is RejectReason.AUTH_FAILURE
        assert "timed out" in str(info.value)
        assert dialer.num_peers() == (0, 0, 0)


async def test_dial_to_a_closed_port_is_a_broken_connection() -> None:
    probe = await asyncio.start_server(lambda r, w: None, LOOPBACK, 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    dialer, _ = echo_switch("dialer")
    async with dialer, asyncio.timeout(10):
        target = NetAddress.parse(f"{NodeKey.generate().node_id}@{LOOPBACK}:{port}")
        with pytest.raises(ConnectionBrokenError, match="failed"):
            await dialer.dial_peer_with_address(target)


# -- compatibility and NodeInfo ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"network": "other-chain"}, IncompatibleReason.NETWORK),
        ({"channels": b"\x43"}, IncompatibleReason.NO_COMMON_CHANNEL),
        ({"protocol_version": ProtocolVersion(block=12)}, IncompatibleReason.BLOCK_VERSION),
    ],
)
async def test_incompatible_peer_is_refused_on_both_sides_with_the_typed_reason(
    change: dict[str, object], why: IncompatibleReason
) -> None:
    a, _ = echo_switch("a")
    b, _ = echo_switch("b")
    a.node_info = dataclasses.replace(a.node_info, **change)  # type: ignore[arg-type]
    refused = rejections(b)
    async with running([a, b]), asyncio.timeout(10):
        with pytest.raises(RejectedError) as info:
            await a.dial_peer_with_address(switch_address(b))
        assert info.value.reason is RejectReason.INCOMPATIBLE
        assert isinstance(info.value.__cause__, IncompatiblePeerError)
        assert info.value.__cause__.reason is why
        on_b = await next_rejection(refused)
        assert on_b.reason is RejectReason.INCOMPATIBLE
        assert on_b.node_id == a.node_id
        assert isinstance(on_b.__cause__, IncompatiblePeerError)
        assert on_b.__cause__.reason is why
        assert len(a.peers) == len(b.peers) == 0
        assert a.transport.connections() == b.transport.connections() == []


async def test_wrong_network_message_names_both_chains() -> None:
    a, _ = echo_switch("a", chain_id="chain-a")
    b, _ = echo_switch("b", chain_id="chain-b")
    async with running([a, b]), asyncio.timeout(10):
        with pytest.raises(RejectedError, match=r"expected network 'chain-a'.*'chain-b'"):
            await a.dial_peer_with_address(switch_address(b))


async def test_invalid_node_info_is_refused_as_node_info_invalid() -> None:
    a, _ = echo_switch("a")
    b, _ = echo_switch("b")
    a.node_info = dataclasses.replace(a.node_info, moniker="")
    refused = rejections(b)
    async with running([a, b]), asyncio.timeout(10):
        # a finds b's NodeInfo fine and may add b for a moment; b refuses a's.
        with contextlib.suppress(RejectedError):
            await a.dial_peer_with_address(switch_address(b))
        on_b = await next_rejection(refused)
        assert on_b.reason is RejectReason.NODE_INFO_INVALID
        assert isinstance(on_b.__cause__, NodeInfoInvalidError)
        assert "moniker" in str(on_b)


# -- identity checks -----------------------------------------------------------------------


async def test_dialed_id_must_equal_the_authenticated_id() -> None:
    a, _ = echo_switch("a")
    b, _ = echo_switch("b")
    async with running([a, b]), asyncio.timeout(10):
        real = switch_address(b)
        wrong = dataclasses.replace(real, id=NodeKey.generate().node_id)
        with pytest.raises(RejectedError, match="dialed ID mismatch") as info:
            await a.dial_peer_with_address(wrong)
        assert info.value.reason is RejectReason.AUTH_FAILURE
        assert info.value.node_id == b.node_id


@pytest.mark.parametrize("kind", ["other key", "upper case"])
async def test_node_info_id_must_equal_the_authenticated_id(kind: str) -> None:
    b, _ = echo_switch("b")
    refused = rejections(b)
    key = NodeKey.generate()
    liar_id = NodeKey.generate().node_id if kind == "other key" else key.node_id.upper()
    async with b, asyncio.timeout(10):
        info = dataclasses.replace(b.node_info, node_id=NodeID(liar_id), moniker="liar")
        liar = Transport(key, info, handshake_timeout_s=2.0)
        upgraded = await liar.dial(switch_address(b))  # we accept b; b must refuse us
        try:
            on_b = await next_rejection(refused)
        finally:
            await upgraded.secret.close()
        assert on_b.reason is RejectReason.AUTH_FAILURE
        assert "differs from authenticated ID" in str(on_b)
        assert len(b.peers) == 0


async def test_dialing_ourselves_is_detected() -> None:
    a, _ = echo_switch("a")
    async with a, asyncio.timeout(10):
        own = switch_address(a)
        with pytest.raises(RejectedError) as info:
            await a.dial_peer_with_address(own)
        assert info.value.reason is RejectReason.SELF
        assert own in a.self_addresses
        # Without the Switch's shortcut, the transport finds out after the handshake.
        refused = rejections(a)
        with pytest.raises(RejectedError) as info:
            await a.transport.dial(own)
        assert info.value.reason is RejectReason.SELF
        assert (await next_rejection(refused)).reason is RejectReason.SELF
        a.dial_peers_async([own, str(own)])  # skipped: nothing is dialed
        assert a.num_peers() == (0, 0, 0)
        assert len(a.peers) == 0


# -- duplicates ----------------------------------------------------------------------------


async def test_duplicate_peer_is_refused() -> None:
    a, ra = echo_switch("a")
    b, rb = echo_switch("b")
    refused = rejections(b)
    async with running([a, b]), asyncio.timeout(10):
        await a.dial_peer_with_address(switch_address(b))
        await rb.peers_added.get()
        with pytest.raises(AlreadyConnectedError):
            await a.dial_peer_with_address(switch_address(b))
        with pytest.raises(AlreadyConnectedError):
            await b.dial_peer_with_address(switch_address(a))
        # A second link from a's identity that skips a's own checks (a's conn set would
        # refuse a second socket to b's ip:port) reaches b's admission, which refuses it.
        twin = Transport(a.node_key, a.node_info)
        upgraded = await twin.dial(switch_address(b))
        try:
            rejected = await next_rejection(refused)
        finally:
            await upgraded.secret.close()
        assert rejected.reason is RejectReason.DUPLICATE
        assert rejected.node_id == a.node_id
        assert len(a.peers) == len(b.peers) == 1
        assert ra.peers_removed.empty()
        assert rb.peers_removed.empty()


async def test_duplicate_ip_is_refused_unless_allowed() -> None:
    hub, _ = echo_switch("hub", p2p=loopback_p2p_config(allow_duplicate_ip=False))
    refused = rejections(hub)
    first, _ = echo_switch("first")
    second, _ = echo_switch("second")
    async with running([hub, first, second]), asyncio.timeout(10):
        await first.dial_peer_with_address(switch_address(hub))
        # Every node here is 127.0.0.1: the second inbound socket shares the first's IP
        # and is dropped before the handshake.
        with pytest.raises(RejectedError) as info:
            await second.dial_peer_with_address(switch_address(hub))
        # All the dialer sees is the hub closing: its reason says so and names the
        # likely cause, never "auth failure" (issue 10).
        assert info.value.reason is RejectReason.REMOTE_CLOSED
        assert "duplicate IPs" in str(info.value)
        assert "auth failure" not in str(info.value)
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.FILTERED
        assert "duplicate IP 127.0.0.1" in str(rejected)
        # And the hub does not dial an IP it already has a peer on.
        with pytest.raises(AlreadyConnectedError):
            await hub.dial_peer_with_address(switch_address(second))
        assert [p.id for p in hub.peers] == [first.node_id]


# -- filters -------------------------------------------------------------------------------


async def test_conn_filter_refuses_before_any_handshake_byte() -> None:
    hub, _ = echo_switch("hub")
    seen: list[tuple[str, int]] = []

    async def refuse_all(ip: str, port: int) -> None:
        seen.append((ip, port))
        raise PermissionError(f"{ip} is not welcome")

    hub.transport.conn_filters.append(refuse_all)
    refused = rejections(hub)
    dialer, _ = echo_switch("dialer")
    async with running([hub, dialer]), asyncio.timeout(10):
        with pytest.raises(RejectedError) as info:
            await dialer.dial_peer_with_address(switch_address(hub))
        # The dialer saw EOF: a close by the remote, not an authentication failure.
        assert info.value.reason is RejectReason.REMOTE_CLOSED
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.FILTERED
        assert "127.0.0.1 is not welcome" in str(rejected)
        assert seen
        assert seen[0][0] == LOOPBACK
        assert hub.transport.connections() == []


async def test_conn_filters_apply_to_dials_too_and_time_out() -> None:
    dialer, _ = echo_switch("dialer")
    hub, _ = echo_switch("hub")

    async def hang(ip: str, port: int) -> None:
        await asyncio.Event().wait()

    dialer.transport.conn_filters.append(hang)
    dialer.filter_timeout_s = 0.1
    async with running([hub, dialer]), asyncio.timeout(10):
        with pytest.raises(RejectedError, match=r"took more than 0\.1 s") as info:
            await dialer.dial_peer_with_address(switch_address(hub))
        assert info.value.reason is RejectReason.FILTERED


async def test_peer_filter_sees_the_peer_and_can_refuse_it() -> None:
    hub, hub_reactor = echo_switch("hub")
    calls: list[tuple[int, str]] = []

    async def no_mallory(peers: PeerSet, peer: Peer) -> None:
        calls.append((len(peers), peer.node_info.moniker))
        if peer.node_info.moniker == "mallory":
            raise PermissionError("mallory is banned")

    hub.peer_filters.append(no_mallory)
    refused = rejections(hub)
    alice, _ = echo_switch("alice")
    mallory, _ = echo_switch("mallory")
    async with running([hub, alice, mallory]), asyncio.timeout(10):
        await alice.dial_peer_with_address(switch_address(hub))
        await hub_reactor.peers_added.get()
        await mallory.dial_peer_with_address(switch_address(hub))
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.FILTERED
        assert rejected.node_id == mallory.node_id
        assert "mallory is banned" in str(rejected)
        assert calls == [(0, "alice"), (1, "mallory")]
        assert [p.id for p in hub.peers] == [alice.node_id]


async def test_peer_filter_timeout_refuses() -> None:
    hub, _ = echo_switch("hub")

    async def slow(peers: PeerSet, peer: Peer) -> None:
        await asyncio.Event().wait()

    hub.peer_filters.append(slow)
    hub.filter_timeout_s = 0.1
    refused = rejections(hub)
    dialer, _ = echo_switch("dialer")
    async with running([hub, dialer]), asyncio.timeout(10):
        await dialer.dial_peer_with_address(switch_address(hub))
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.FILTERED
        assert "took more than 0.1 s" in str(rejected)


# -- incompatible peers cool down (tendermint #6604) ---------------------------------------


async def test_incompatible_persistent_peer_is_cooled_down_not_redialed_fast() -> None:
    # Fast phase: a redial every 50 ms. Cooled down: the next dial waits for the
    # back-off phase (0.6 s) and at least the cooldown (0.4 s).
    policy = ReconnectPolicy(
        fast_attempts=50,
        fast_interval_s=0.05,
        backoff_attempts=2,
        backoff_base_s=0.6,
        jitter_s=0.0,
        incompatible_cooldown_s=0.4,
    )
    b, _ = echo_switch("b", chain_id="chain-b")
    refused_by_b = rejections(b)
    loop = asyncio.get_running_loop()
    async with b, asyncio.timeout(10):
        a, _ = echo_switch("a", chain_id="chain-a", reconnect_policy=policy)
        a.add_persistent_peers([switch_address(b)])
        async with a:
            first = await next_rejection(refused_by_b)
            first_at = loop.time()
            assert first.reason is RejectReason.INCOMPATIBLE
            assert 0.2 < a.cooldown_remaining(b.node_id) <= 0.4
            with pytest.raises(RejectedError, match="not dialing for another"):
                await a.dial_peer_with_address(switch_address(b))
            second = await next_rejection(refused_by_b)
            assert loop.time() - first_at >= 0.4  # nothing reached b meanwhile
            assert second.reason is RejectReason.INCOMPATIBLE
            assert a.num_peers() == (0, 0, 0)


async def test_dialing_another_block_version_says_why_at_info_and_the_cooldown_grows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #12 weakness 6: the reason at INFO on the dialing side; a short cooldown that
    doubles with each refusal in a row (Go: 300 s at once, the reason at DEBUG)."""
    policy = dataclasses.replace(
        FAST_RECONNECT, incompatible_cooldown_s=0.2, incompatible_cooldown_max_s=0.5
    )
    a, _ = echo_switch("a", reconnect_policy=policy)
    b, _ = echo_switch("b", p2p=loopback_p2p_config(block_protocol_version=10))
    caplog.set_level(logging.INFO, logger="cometp2p.switch.switch")
    async with running([a, b]), asyncio.timeout(10):
        cooldowns = []
        for _ in range(4):
            with pytest.raises(RejectedError) as info:
                await a.dial_peer_with_address(switch_address(b))
            assert info.value.reason is RejectReason.INCOMPATIBLE
            assert "expected block protocol 11, peer has 10" in str(info.value)
            cooldowns.append(a.cooldown_remaining(b.node_id))
            await asyncio.sleep(a.cooldown_remaining(b.node_id) + 0.01)  # let it end
        # 0.2, 0.4, then capped at 0.5 s.
        assert 0.1 < cooldowns[0] <= 0.2
        assert 0.3 < cooldowns[1] <= 0.4
        assert 0.4 < cooldowns[2] <= 0.5
        assert 0.4 < cooldowns[3] <= 0.5
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and b.node_id in r.getMessage()
    ]
    assert any("expected block protocol 11, peer has 10" in line for line in lines), lines


async def test_inbound_incompatible_peer_is_not_dialed_during_its_cooldown() -> None:
    a, _ = echo_switch("a", chain_id="chain-a")
    b, _ = echo_switch("b", chain_id="chain-b")
    refused_by_b = rejections(b)
    async with running([a, b]), asyncio.timeout(10):
        with pytest.raises(RejectedError):
            await a.dial_peer_with_address(switch_address(b))
        await next_rejection(refused_by_b)
        assert b.cooldown_remaining(a.node_id) > 0
        with pytest.raises(RejectedError) as info:
            await b.dial_peer_with_address(switch_address(a))
        assert info.value.reason is RejectReason.INCOMPATIBLE
        assert "not dialing" in str(info.value)
        # Ending the cooldown lets a dial reach the network (and the same refusal).
        b.end_cooldown(a.node_id)
        with pytest.raises(RejectedError) as info:
            await b.dial_peer_with_address(switch_address(a))
        assert info.value.reason is RejectReason.INCOMPATIBLE
        assert "expected network 'chain-b', peer is on 'chain-a'" in str(info.value)


async def test_echo_channel_still_works_after_refusals() -> None:
    # Refusals leave no stale state: the conn set is empty and a valid peer gets in.
    a, ra = echo_switch("a")
    b, _rb = echo_switch("b")
    refused = rejections(b)
    async with running([a, b]), asyncio.timeout(10):
        wrong = dataclasses.replace(switch_address(b), id=NodeKey.generate().node_id)
        for _ in range(2):
            with pytest.raises(RejectedError):
                await a.dial_peer_with_address(wrong)
            # b saw a hang-up after the SecretConnection handshake: no NodeInfo came.
            assert (await next_rejection(refused)).reason is RejectReason.HANDSHAKE_FAILURE
        assert a.transport.connections() == b.transport.connections() == []
        peer = await a.dial_peer_with_address(switch_address(b))
        assert await peer.send(ECHO_CHANNEL, b"ping:ok")
        assert await ra.received.get() == (b.node_id, b"pong:ok")
