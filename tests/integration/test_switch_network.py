"""Switches on loopback: a five-node mesh, persistent peers, peer stops (behaviour.md §1.9-1.10)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import PeerClosedError, RejectReason, RemoteProtocolError
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope
from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import (
    connect_all,
    free_loopback_port,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.wire.netaddress import NetAddress
from integration.switch_support import (
    RecordingReactor,
    next_rejection,
    peers_added,
    rejections,
    running,
)


async def test_five_switches_full_mesh_exchange_messages_both_ways() -> None:
    reactors = [EchoReactor() for _ in range(5)]
    switches = [make_switch([("echo", r)], moniker=f"n{i}") for i, r in enumerate(reactors)]
    ids = [sw.node_id for sw in switches]
    async with running(switches), asyncio.timeout(20):
        await connect_all(switches)
        for i, reactor in enumerate(reactors):
            seen = {p.id for p in await peers_added(reactor, 4)}
            assert seen == set(ids) - {ids[i]}
        for i, sw in enumerate(switches):
            outbound, inbound, dialing = sw.num_peers()
            assert (outbound, inbound, dialing) == (4 - i, i, 0)
            assert {p.node_info.moniker for p in sw.peers} == {f"n{j}" for j in range(5)} - {
                f"n{i}"
            }

        # Every node greets and pings every other node, over whichever direction it has.
        for i, sw in enumerate(switches):
            for peer in sw.peers:
                assert await peer.send(ECHO_CHANNEL, f"hello {i}".encode())
                assert await peer.send(ECHO_CHANNEL, f"ping:{i}>{peer.id[:6]}".encode())
        for i, reactor in enumerate(reactors):
            got = {await reactor.received.get() for _ in range(8)}
            hellos = {(ids[j], f"hello {j}".encode()) for j in range(5) if j != i}
            pongs = {(ids[j], f"pong:{i}>{ids[j][:6]}".encode()) for j in range(5) if j != i}
            assert got == hellos | pongs
            assert reactor.received.empty()


async def test_dial_peers_async_dials_strings_and_addresses_in_the_background() -> None:
    hub_reactor = EchoReactor()
    hub = make_switch([("echo", hub_reactor)], moniker="hub")
    b, c = make_switch([("echo", EchoReactor())]), make_switch([("echo", EchoReactor())])
    async with running([hub, b, c]), asyncio.timeout(10):
        hub.dial_peers_async([str(switch_address(b)), switch_address(c), switch_address(hub)])
        added = {p.id for p in await peers_added(hub_reactor, 2)}
        assert added == {b.node_id, c.node_id}
        assert hub.num_peers() == (2, 0, 0)
        assert all(not p.is_persistent for p in hub.peers)


async def test_persistent_peer_comes_back_after_restart_on_same_key_and_port() -> None:
    port = free_loopback_port()
    key_b = NodeKey.generate()
    b_config = loopback_p2p_config(laddr=f"tcp://127.0.0.1:{port}")
    ra = EchoReactor()
    a = make_switch(
        [("echo", ra)],
        moniker="a",
        p2p=loopback_p2p_config(persistent_peers=(f"{key_b.node_id}@127.0.0.1:{port}",)),
    )
    async with a, asyncio.timeout(20):
        # b is not up yet: a's first dial fails and the reconnect loop takes over.
        rb1 = EchoReactor()
        async with make_switch([("echo", rb1)], moniker="b", node_key=key_b, p2p=b_config):
            peer = await ra.peers_added.get()
            assert peer.id == key_b.node_id
            assert peer.is_outbound
            assert peer.is_persistent
            assert (await rb1.peers_added.get()).id == a.node_id
        removed, reason = await ra.peers_removed.get()
        assert removed is peer
        assert reason is not None  # the connection broke: an error, so a redials

        rb2 = EchoReactor()
        async with make_switch([("echo", rb2)], moniker="b", node_key=key_b, p2p=b_config) as b2:
            again = await ra.peers_added.get()
            assert again.id == key_b.node_id
            assert again is not peer
            assert again.is_persistent
            assert (await rb2.peers_added.get()).id == a.node_id
            assert await again.send(ECHO_CHANNEL, b"ping:back")
            assert await ra.received.get() == (b2.node_id, b"pong:back")


async def test_inbound_persistent_peer_is_redialed_at_its_listen_address() -> None:
    # b lists a as persistent; a dials b first; when b drops the inbound a, b redials
    # a at a's self-reported listen address.
    ra, rb = EchoReactor(), EchoReactor()
    a = make_switch([("echo", ra)], moniker="a")
    async with a, asyncio.timeout(10):
        b = make_switch([("echo", rb)], moniker="b")
        b.add_persistent_peers([switch_address(a)])
        async with b:
            # b dials a itself at start; wait for that link, then drop it from b's side.
            first = await rb.peers_added.get()
            assert first.is_persistent
            await b.stop_peer_for_error(first, RuntimeError("test drop"))
            removed, reason = await rb.peers_removed.get()
            assert removed is first
            assert isinstance(reason, RuntimeError)
            again = await rb.peers_added.get()
            assert again.id == a.node_id
            assert again.is_persistent


async def test_reactor_that_raises_gets_its_peer_stopped_not_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Exploding(EchoReactor):
        async def receive(self, envelope: Envelope) -> None:
            if envelope.message == b"explode":
                raise ValueError("boom: reactor bug")
            await super().receive(envelope)

    ra, rb, rc = EchoReactor(), Exploding(), EchoReactor()
    a = make_switch([("echo", ra)], moniker="a")
    b = make_switch([("echo", rb)], moniker="b")
    c = make_switch([("echo", rc)], moniker="c")
    caplog.set_level(logging.INFO, logger="cometp2p.switch")
    async with running([a, b, c]), asyncio.timeout(10):
        a_to_b = await a.dial_peer_with_address(switch_address(b))
        c_to_b = await c.dial_peer_with_address(switch_address(b))
        await peers_added(rb, 2)
        assert await a_to_b.send(ECHO_CHANNEL, b"explode")

        removed, reason = await rb.peers_removed.get()
        assert removed.id == a.node_id
        assert isinstance(reason, ValueError)
        assert "boom: reactor bug" in caplog.text
        assert "stopping peer for error" in caplog.text
        # b goes on: still running, still connected to c, still echoing.
        assert b.is_running
        assert [p.id for p in b.peers] == [c.node_id]
        assert await c_to_b.send(ECHO_CHANNEL, b"ping:still here")
        assert await rc.received.get() == (b.node_id, b"pong:still here")
        # a sees the link close.
        gone, _ = await ra.peers_removed.get()
        assert gone is a_to_b


async def test_stop_peer_gracefully_flushes_and_never_reconnects() -> None:
    ra, rb = EchoReactor(), EchoReactor()
    b = make_switch([("echo", rb)], moniker="b")
    async with b, asyncio.timeout(10):
        a = make_switch([("echo", ra)], moniker="a")
        a.add_persistent_peers([switch_address(b)])
        async with a:
            peer = await ra.peers_added.get()
            assert peer.is_persistent
            assert await peer.send(ECHO_CHANNEL, b"last words")
            await a.stop_peer_gracefully(peer)
            removed, reason = await ra.peers_removed.get()
            assert removed is peer
            assert reason is None
            assert not peer.is_running
            assert not await peer.send(ECHO_CHANNEL, b"too late")
            # The queued message was flushed before the close.
            assert await rb.received.get() == (a.node_id, b"last words")
            await rb.peers_removed.get()
            assert len(a.peers) == 0
            assert a.num_peers() == (0, 0, 0)
            assert peer.id not in a._reconnecting  # graceful: no reconnect loop


async def test_a_clean_hang_up_is_logged_at_info_and_a_broken_link_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ra, rb = EchoReactor(), EchoReactor()
    a = make_switch([("echo", ra)], moniker="a")
    b = make_switch([("echo", rb)], moniker="b")
    caplog.set_level(logging.INFO, logger="cometp2p.switch")
    async with running([a, b]), asyncio.timeout(10):
        peer = await a.dial_peer_with_address(switch_address(b))
        await peers_added(rb, 1)
        await a.stop_peer_gracefully(peer)  # a closes between two Packets
        removed, reason = await rb.peers_removed.get()
        assert removed.id == a.node_id
        assert isinstance(reason, PeerClosedError)
        (record,) = [r for r in caplog.records if "stopping peer for error" in r.getMessage()]
        assert record.levelno == logging.INFO
        assert record.name.startswith("cometp2p.switch")

        caplog.clear()
        peer = await a.dial_peer_with_address(switch_address(b))
        inbound = await rb.peers_added.get()
        await b.stop_peer_for_error(inbound, RemoteProtocolError("bad packet"))
        (record,) = [r for r in caplog.records if "stopping peer for error: bad" in r.getMessage()]
        assert record.levelno == logging.WARNING
        # a sees b hang up cleanly (its first removal, the graceful stop, comes first).
        removed, reason = await ra.peers_removed.get()
        assert reason is None
        removed, reason = await ra.peers_removed.get()
        assert removed is peer
        assert isinstance(reason, PeerClosedError)


async def test_removal_completes_before_the_same_node_is_admitted_again() -> None:
    # Go's order: remove_peer runs while the old peer is still in the set, so a quick
    # reconnect is refused as a duplicate until remove_peer has finished.
    ra, rb = EchoReactor(), RecordingReactor()
    a = make_switch([("echo", ra)], moniker="a")
    b = make_switch([("echo", rb)], moniker="b")
    refused = rejections(b)
    async with running([a, b]), asyncio.timeout(10):
        peer = await a.dial_peer_with_address(switch_address(b))
        old = await rb.peers_added.get()
        rb.remove_gate.clear()
        await a.stop_peer_for_error(peer, RuntimeError("drop"))
        await rb.removing.wait()  # b is inside remove_peer for the old link
        assert b.peers.get(a.node_id) is old
        assert not old.is_running

        # a reconnects at once: b still holds the old peer, so it refuses the new one.
        await ra.peers_removed.get()
        await a.dial_peer_with_address(switch_address(b))
        rejected = await next_rejection(refused)
        assert rejected.reason is RejectReason.DUPLICATE
        await ra.peers_removed.get()

        rb.remove_gate.set()
        assert (await rb.peers_removed.get())[0] is old
        assert not b.peers.has(a.node_id)  # left the set right after remove_peer
        await a.dial_peer_with_address(switch_address(b))
        new = await rb.peers_added.get()
        assert new is not old
        a_id = a.node_id
        assert rb.log == [
            ("init", a_id),
            ("add", a_id),
            ("remove_start", a_id),
            ("remove", a_id),
            ("init", a_id),
            ("add", a_id),
        ]


async def test_stopping_a_peer_that_does_not_read_is_bounded() -> None:
    # a's raw connection never reads; b fills the socket, then stops the peer. The close
    # must not wait for the stalled peer to take b's buffered bytes.
    rb = EchoReactor(channel_id=ECHO_CHANNEL)
    b = make_switch([("echo", rb)], moniker="b", p2p=loopback_p2p_config(send_rate_bytes_per_s=0))
    a = make_switch([("echo", EchoReactor())], moniker="a")
    async with running([a, b]), asyncio.timeout(15):
        upgraded = await a.transport.dial(switch_address(b))  # no Switch: nobody reads
        try:
            peer: Peer = await rb.peers_added.get()
            chunk = bytes(256 * 1024)
            # Fill the send queue until a blocking send finds no room for 0.5 s: by then
            # the socket buffers are full and b's writer is stuck.
            while await peer.send(ECHO_CHANNEL, chunk, timeout_s=0.5):
                pass
            loop = asyncio.get_running_loop()
            started = loop.time()
            await b.stop_peer_for_error(peer, RuntimeError("stalled"))
            assert loop.time() - started < 5.0
            assert not b.peers.has(a.node_id)
            assert b.transport.connections() == []
        finally:
            await upgraded.secret.close()


async def test_peer_sending_on_an_unknown_channel_is_stopped_for_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ra, rb = EchoReactor(), EchoReactor()
    a = make_switch([("echo", ra), ("other", EchoReactor(channel_id=0x43))], moniker="a")
    b = make_switch([("echo", rb)], moniker="b")
    caplog.set_level(logging.INFO, logger="cometp2p")
    async with running([a, b]), asyncio.timeout(10):
        peer = await a.dial_peer_with_address(switch_address(b))
        await rb.peers_added.get()
        assert not await peer.send(0x43, b"x")  # b never advertised 0x43
        # Bypass that check: b's MConnection refuses the packet and b drops a.
        assert await peer.connection.send(0x43, b"x")
        removed, reason = await rb.peers_removed.get()
        assert removed.id == a.node_id
        assert reason is not None
        assert "0x43" in str(reason)
        assert "stopping peer for error" in caplog.text
        assert b.is_running


async def test_undecodable_message_stops_the_peer() -> None:
    class Strict(EchoReactor):
        def decode(self, channel_id: int, data: bytes) -> bytes:
            if data == b"garbage":
                raise RemoteProtocolError(f"expected a greeting, got {data!r}")
            return data

    ra, rb = EchoReactor(), Strict()
    a = make_switch([("echo", ra)], moniker="a")
    b = make_switch([("echo", rb)], moniker="b")
    async with running([a, b]), asyncio.timeout(10):
        peer = await a.dial_peer_with_address(switch_address(b))
        await rb.peers_added.get()
        assert await peer.send(ECHO_CHANNEL, b"garbage")
        removed, reason = await rb.peers_removed.get()
        assert removed.id == a.node_id
        assert isinstance(reason, RemoteProtocolError)
        assert rb.received.empty()  # never delivered


async def test_stop_is_prompt_with_handshakes_and_dials_in_flight() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = make_switch([("echo", EchoReactor())], moniker="hub")  # handshake timeout 5 s
    async with server, asyncio.timeout(10):
        await hub.start()
        assert hub.listen_address is not None
        # An inbound socket that never speaks, and a dial to a listener that never speaks.
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.listen_address[1])
        assert await reader.read(1)  # the hub's handshake started
        target = NetAddress.parse(f"{NodeKey.generate().node_id}@127.0.0.1:{port}")
        hub.dial_peers_async([target])
        loop = asyncio.get_running_loop()
        started = loop.time()
        await hub.stop()
        assert loop.time() - started < 2.0
        assert hub.transport.num_incoming_handshakes == 0
        assert hub.transport.connections() == []
        with contextlib.suppress(ConnectionError):
            await reader.read()  # returns only at EOF: the hub closed its end
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
