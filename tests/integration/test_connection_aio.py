"""The asyncio MConnection driver over real loopback TCP (wire.md §8).

Two Python ends (:class:`~cometp2p.aio.connection.Connection` over an authenticated
SecretConnection), or one end and a raw SecretConnection playing a hostile or silent
peer. Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence

import pytest

from cometp2p.aio.connection import Connection
from cometp2p.aio.secret_connection import SecretConnection, secret_handshake
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    CometP2PError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LocalProtocolError,
    PeerClosedError,
    RemoteProtocolError,
)
from cometp2p.sansio.mconnection import (
    ChannelDescriptor,
    MConnectionConfig,
    MConnectionState,
)
from cometp2p.wire.packet import PING_FRAME, encode_packet_msg
from cometp2p.wire.varint import encode_uvarint

KEY_A = NodeKey.from_seed(bytes(range(32)))
KEY_B = NodeKey.from_seed(bytes(range(32, 64)))
BOUND_S = 20.0  # upper bound for any test body; none should come close
MIB = 1024 * 1024

CH_LOW, CH_MID, CH_HIGH, CH_WIDE = 0x01, 0x02, 0x30, 0x80
CHANNELS = (
    ChannelDescriptor(CH_LOW, priority=1, send_queue_capacity=16, recv_message_capacity=2 * MIB),
    ChannelDescriptor(CH_MID, priority=5, send_queue_capacity=16, recv_message_capacity=2 * MIB),
    ChannelDescriptor(CH_HIGH, priority=10, send_queue_capacity=16, recv_message_capacity=2 * MIB),
    ChannelDescriptor(CH_WIDE, priority=3, send_queue_capacity=16, recv_message_capacity=2 * MIB),
)
FAST = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0, flush_throttle_s=0.0)
DEFAULT = MConnectionConfig()  # CometBFT node defaults: 5 120 000 B/s, 100 ms flush throttle
SIZES = (0, 1, 1024, 1025, 3000, MIB)


def numbered(index: int, size: int) -> bytes:
    """A distinct message of ``size`` bytes (>= 4) that says where it belongs."""
    return index.to_bytes(4, "big") + bytes([index % 251]) * (size - 4)


@contextlib.asynccontextmanager
async def secret_pair() -> AsyncIterator[tuple[SecretConnection, SecretConnection]]:
    """Two authenticated SecretConnections joined by loopback TCP (dialer, listener)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        loop.create_future()
    )

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        their_reader, their_writer = await accepted
        a, b = await asyncio.gather(
            secret_handshake(reader, writer, KEY_A),
            secret_handshake(their_reader, their_writer, KEY_B),
        )
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def connection_pair(
    config_a: MConnectionConfig = FAST,
    config_b: MConnectionConfig | None = None,
    *,
    channels: Sequence[ChannelDescriptor] = CHANNELS,
    backlog_b: int | None = None,
) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two started Connections on the same channels; closed (without flush) at the end."""
    async with secret_pair() as (sa, sb), asyncio.timeout(BOUND_S):
        a = Connection(sa, channels, config_a)
        if backlog_b is None:
            b = Connection(sb, channels, config_b or config_a)
        else:
            b = Connection(sb, channels, config_b or config_a, recv_backlog_bytes=backlog_b)
        a.start()
        b.start()
        try:
            yield a, b
        finally:
            await a.close(flush_timeout_s=0)
            await b.close(flush_timeout_s=0)


@contextlib.asynccontextmanager
async def raw_peer(
    config: MConnectionConfig = FAST,
) -> AsyncIterator[tuple[Connection, SecretConnection]]:
    """A started Connection whose peer is a bare SecretConnection driven by the test."""
    async with secret_pair() as (sa, sb), asyncio.timeout(BOUND_S):
        a = Connection(sa, CHANNELS, config)
        a.start()
        try:
            yield a, sb
        finally:
            await a.close(flush_timeout_s=0)


async def receive_exactly(conn: Connection, channel_id: int, count: int) -> list[bytes]:
    messages: list[bytes] = []
    while len(messages) < count:
        messages += await conn.receive_many(channel_id, count - len(messages))
    return messages


async def read_to_end(peer: SecretConnection) -> bytes:
    """What ``peer`` reads until the stream ends (a reset counts as an end)."""
    data = b""
    with contextlib.suppress(ConnectionBrokenError):
        while chunk := await peer.read_some():
            data += chunk
    return data


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("config", [FAST, DEFAULT], ids=["unlimited", "node-defaults"])
async def test_messages_cross_every_channel_both_ways_byte_identical(
    config: MConnectionConfig,
) -> None:
    async with connection_pair(config) as (a, b):
        expected: dict[int, list[bytes]] = {}
        for i, channel in enumerate((CH_LOW, CH_MID, CH_HIGH, CH_WIDE)):
            expected[channel] = [bytes((i + size + k) % 256 for k in range(size)) for size in SIZES]
        for sender, receiver in ((a, b), (b, a)):
            for channel, messages in expected.items():
                for message in messages:
                    assert await sender.send(channel, message)
            for channel, messages in expected.items():
                got = [await receiver.receive(channel) for _ in messages]
                assert [len(m) for m in got] == [len(m) for m in messages]
                assert got == messages
        # Both directions at once, interleaved on all channels.
        sends = [
            asyncio.create_task(sender.send(channel, numbered(i, 2000 + i)))
            for i in range(20)
            for sender in (a, b)
            for channel in (CH_LOW, CH_HIGH)
        ]
        assert all(await asyncio.gather(*sends))
        for receiver in (a, b):
            for channel in (CH_LOW, CH_HIGH):
                got = await receive_exactly(receiver, channel, 20)
                assert got == [numbered(i, 2000 + i) for i in range(20)]
        assert not a.closed
        assert not b.closed


async def test_receive_many_and_receive_nowait_return_buffered_messages_in_order() -> None:
    async with connection_pair() as (a, b):
        assert b.receive_nowait(CH_MID) is None
        for i in range(10):
            assert a.try_send(CH_MID, numbered(i, 8))
        await a.flush()
        first = await b.receive(CH_MID)
        assert first == numbered(0, 8)
        rest = await receive_exactly(b, CH_MID, 9)
        assert rest == [numbered(i, 8) for i in range(1, 10)]
        assert b.receive_nowait(CH_MID) is None
        for i in range(5):
            assert a.try_send(CH_MID, numbered(i, 8))
        first_two = await receive_exactly(b, CH_MID, 2)
        assert first_two == [numbered(0, 8), numbered(1, 8)]
        later = await receive_exactly(b, CH_MID, 3)
        assert later == [numbered(i, 8) for i in range(2, 5)]
        with pytest.raises(LocalProtocolError):
            await b.receive_many(CH_MID, -1)


async def test_undeclared_channel_is_a_local_error() -> None:
    async with connection_pair() as (a, _b):
        with pytest.raises(LocalProtocolError, match="not declared"):
            a.try_send(0x07, b"x")
        with pytest.raises(LocalProtocolError):
            await a.send(0x07, b"x")
        with pytest.raises(LocalProtocolError):
            await a.receive(0x07)
        with pytest.raises(LocalProtocolError):
            a.receive_nowait(0x07)
        assert a.channel_ids == (CH_LOW, CH_MID, CH_HIGH, CH_WIDE)
        assert not a.closed


async def test_initial_plaintext_is_delivered_first() -> None:
    async with secret_pair() as (sa, sb), asyncio.timeout(BOUND_S):
        leftover = encode_packet_msg(CH_LOW, True, b"early") + encode_packet_msg(
            CH_LOW, False, b"spl"
        )
        a = Connection(sa, CHANNELS, FAST, initial_plaintext=leftover)
        a.start()
        sb.write(encode_packet_msg(CH_LOW, True, b"it"))
        await sb.drain()
        assert await a.receive(CH_LOW) == b"early"
        assert await a.receive(CH_LOW) == b"split"
        await a.close()


# --------------------------------------------------------------------------- sending


async def test_try_send_never_blocks_and_refuses_when_the_queue_is_full() -> None:
    channels = [ChannelDescriptor(CH_LOW, priority=1, send_queue_capacity=2)]
    async with connection_pair(channels=channels) as (a, b):
        # No await in between: the writer cannot run, so the queue only fills.
        assert a.try_send(CH_LOW, b"one")
        assert a.try_send(CH_LOW, b"two")
        assert not a.try_send(CH_LOW, b"refused")
        assert [ch.send_queue_size for ch in a.status().channels] == [2]
        await a.flush()
        assert a.status().channels[0].send_queue_size == 0
        assert a.try_send(CH_LOW, b"three")
        assert await receive_exactly(b, CH_LOW, 3) == [b"one", b"two", b"three"]


@pytest.mark.parametrize("config", [FAST, DEFAULT], ids=["unlimited", "node-defaults"])
async def test_an_abandoned_full_channel_does_not_hold_up_the_others(
    config: MConnectionConfig,
) -> None:
    """A caller that gets False from try_send and drops its message stalls nothing.

    The core ends a write batch so that a sender woken by SendQueueReady can refill
    first; here nobody refills, and the other channel must still go out at once.
    """
    channels = [
        ChannelDescriptor(CH_LOW, priority=1, send_queue_capacity=1),
        ChannelDescriptor(CH_MID, priority=1, send_queue_capacity=8),
    ]
    async with connection_pair(config, channels=channels) as (a, b):
        assert a.try_send(CH_LOW, b"kept")
        assert not a.try_send(CH_LOW, b"dropped by its caller")
        others = [numbered(i, 10) for i in range(5)]
        for message in others:
            assert a.try_send(CH_MID, message)
        async with asyncio.timeout(2.0):  # the next Ping is 60 s away
            assert await receive_exactly(b, CH_MID, len(others)) == others
            assert await b.receive(CH_LOW) == b"kept"


async def fill_until_send_times_out(
    sender: Connection, channel_id: int, size: int, limit: int = 400
) -> list[bytes]:
    """Send numbered messages until ``send`` gives up; returns those it accepted."""
    accepted: list[bytes] = []
    for i in range(limit):
        message = numbered(i, size)
        if not await sender.send(channel_id, message, timeout_s=0.25):
            return accepted
        accepted.append(message)
    pytest.fail(f"{limit} sends of {size} bytes all succeeded although the peer read nothing")


STALL_CHANNELS = (
    ChannelDescriptor(CH_LOW, priority=1, send_queue_capacity=2, recv_message_capacity=MIB),
    ChannelDescriptor(CH_MID, priority=1, send_queue_capacity=2),
)


async def test_send_times_out_with_false_while_the_peer_reads_nothing() -> None:
    # b keeps at most 64 KiB unconsumed, then stops reading: TCP fills, then a's queue.
    async with connection_pair(channels=STALL_CHANNELS, backlog_b=64 * 1024) as (a, b):
        accepted = await fill_until_send_times_out(a, CH_LOW, 256 * 1024)
        assert accepted
        assert not a.try_send(CH_LOW, b"still full")
        assert not a.closed
        # Once b consumes, everything that was accepted arrives, in order.
        assert await receive_exactly(b, CH_LOW, len(accepted)) == accepted
        assert await a.send(CH_LOW, b"after", timeout_s=BOUND_S)
        assert await b.receive(CH_LOW) == b"after"


async def test_cancelling_a_blocked_send_leaves_the_connection_usable() -> None:
    async with connection_pair(channels=STALL_CHANNELS, backlog_b=64 * 1024) as (a, b):
        accepted = await fill_until_send_times_out(a, CH_LOW, 256 * 1024)
        blocked = asyncio.create_task(a.send(CH_LOW, b"cancelled", timeout_s=BOUND_S))
        for _ in range(5):
            await asyncio.sleep(0)  # yield only: let the send reach its wait
        assert not blocked.done()
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert not a.closed
        # The cancelled message was never queued; later sends still go through.
        assert await receive_exactly(b, CH_LOW, len(accepted)) == accepted
        assert await a.send(CH_LOW, b"after", timeout_s=BOUND_S)
        assert await b.receive(CH_LOW) == b"after"
        assert b.receive_nowait(CH_LOW) is None
        assert await a.send(CH_MID, b"other channel", timeout_s=BOUND_S)
        assert await b.receive(CH_MID) == b"other channel"


# --------------------------------------------------------------------------- liveness


async def test_slow_consumer_delays_neither_other_channels_nor_ping_pong() -> None:
    """b never reads CH_LOW; CH_MID round trips go on and a's Pings keep being answered.

    Only a pings (every 0.15 s, 0.12 s pong timeout): had b's reader waited for the
    CH_LOW consumer, a would have closed the connection with a pong timeout.
    """
    pinging = MConnectionConfig(
        send_rate_bytes_per_s=0,
        recv_rate_bytes_per_s=0,
        flush_throttle_s=0.0,
        ping_interval_s=0.15,
        pong_timeout_s=0.12,
    )
    async with connection_pair(pinging, FAST) as (a, b):
        backlog = [numbered(i, 64 * 1024) for i in range(32)]  # 2 MiB < b's 4 MiB bound
        for message in backlog:
            assert await a.send(CH_LOW, message)

        async def echo() -> None:
            while True:
                message = await b.receive(CH_MID)
                assert await b.send(CH_MID, message)

        echo_task = asyncio.create_task(echo())
        loop = asyncio.get_running_loop()
        round_trips = 0
        deadline = loop.time() + 0.75  # five ping intervals
        while loop.time() < deadline or round_trips < 20:
            message = numbered(round_trips, 16)
            assert await a.send(CH_MID, message)
            assert await a.receive(CH_MID) == message
            round_trips += 1
        echo_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await echo_task

        assert not a.closed
        assert not b.closed
        # Everything a received from b is echoes plus Pongs: count the Pongs.
        echo_bytes = sum(
            len(encode_packet_msg(CH_MID, True, numbered(i, 16))) for i in range(round_trips)
        )
        pong_bytes = a.status().bytes_received - echo_bytes
        assert pong_bytes % 3 == 0
        assert pong_bytes // 3 >= 3
        # The slow channel's backlog is intact and in order.
        assert await receive_exactly(b, CH_LOW, len(backlog)) == backlog


async def test_unanswered_pings_end_the_connection_with_a_pong_timeout() -> None:
    pinging = MConnectionConfig(
        send_rate_bytes_per_s=0,
        recv_rate_bytes_per_s=0,
        flush_throttle_s=0.0,
        ping_interval_s=0.05,
        pong_timeout_s=0.04,
    )
    async with raw_peer(pinging) as (a, peer):
        ping = await peer.read_exactly(len(PING_FRAME))  # read, never answer
        assert ping == PING_FRAME
        error = await a.wait_closed()
        assert isinstance(error, RemoteProtocolError)
        assert "pong timeout" in str(error)
        assert a.status().state is MConnectionState.FAILED


async def test_pings_from_the_peer_are_answered() -> None:
    async with raw_peer() as (a, peer):
        peer.write(PING_FRAME * 3)  # coalesced: at least one Pong
        await peer.drain()
        assert await peer.read_exactly(3) == b"\x02\x12\x00"
        peer.write(encode_packet_msg(CH_LOW, True, b"still here"))
        await peer.drain()
        assert await a.receive(CH_LOW) == b"still here"


# --------------------------------------------------------------------------- closing


async def test_graceful_close_flushes_queued_messages() -> None:
    async with connection_pair(DEFAULT) as (a, b):  # rate-limited: the queue is still full
        sent = [numbered(i, 20_000) for i in range(16)]
        for message in sent:
            assert a.try_send(CH_HIGH, message)
        await a.close()
        assert await a.wait_closed() is None
        assert a.closed
        assert not a.try_send(CH_HIGH, b"late")
        assert not await a.send(CH_HIGH, b"late")
        with pytest.raises(ConnectionClosedError):
            await a.receive(CH_HIGH)
        assert await receive_exactly(b, CH_HIGH, len(sent)) == sent
        error = await b.wait_closed()
        assert isinstance(error, ConnectionBrokenError)


async def test_close_gives_up_flushing_after_its_timeout() -> None:
    slow = MConnectionConfig(send_rate_bytes_per_s=20_000, recv_rate_bytes_per_s=0)
    async with connection_pair(slow, FAST) as (a, b):
        for i in range(4):
            assert a.try_send(CH_LOW, numbered(i, 100_000))  # 20 s at 20 kB/s
        await a.close(flush_timeout_s=0.05)
        assert a.closed
        assert await a.wait_closed() is None
        with pytest.raises(ConnectionBrokenError):
            await receive_exactly(b, CH_LOW, 4)


async def test_cancelled_close_still_closes() -> None:
    slow = MConnectionConfig(send_rate_bytes_per_s=20_000, recv_rate_bytes_per_s=0)
    async with connection_pair(slow, FAST) as (a, b):
        assert a.try_send(CH_LOW, numbered(0, 100_000))
        closing = asyncio.create_task(a.close(flush_timeout_s=BOUND_S))
        for _ in range(5):
            await asyncio.sleep(0)  # yield only: let close() start its flush
        assert not closing.done()
        assert not a.try_send(CH_LOW, b"refused while closing")
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert a.closed
        assert await a.wait_closed() is None
        assert isinstance(await b.wait_closed(), ConnectionBrokenError)
        await a.close()  # idempotent


async def test_concurrent_closes_all_return() -> None:
    async with connection_pair() as (a, _b):
        assert a.try_send(CH_LOW, b"x")
        await asyncio.gather(a.close(), a.close(), a.close())
        assert a.closed


async def test_peer_eof_ends_the_connection_with_connection_broken() -> None:
    async with connection_pair() as (a, b):
        for i in range(3):
            assert b.try_send(CH_MID, numbered(i, 100))
        await b.close()
        error = await a.wait_closed()
        assert isinstance(error, ConnectionBrokenError)
        assert a.status().state is MConnectionState.PEER_CLOSED
        # What arrived before the end is still there; then the error.
        assert await receive_exactly(a, CH_MID, 3) == [numbered(i, 100) for i in range(3)]
        with pytest.raises(ConnectionBrokenError):
            await a.receive(CH_MID)
        with pytest.raises(ConnectionBrokenError):
            await a.flush()
        assert not a.try_send(CH_MID, b"x")
        assert not await a.send(CH_MID, b"x")


async def test_done_callbacks_run_once_with_the_end_error_after_the_socket_closed() -> None:
    async with connection_pair() as (a, b):
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[CometP2PError | None] = loop.create_future()
        calls: list[CometP2PError | None] = []

        def record(error: CometP2PError | None) -> None:
            calls.append(error)
            if not ended.done():
                ended.set_result(error)

        a.add_done_callback(record)
        b_done: asyncio.Future[CometP2PError | None] = loop.create_future()
        b.add_done_callback(b_done.set_result)
        await b.close()
        error = await asyncio.wait_for(ended, 5.0)
        assert isinstance(error, PeerClosedError)
        assert error is await a.wait_closed()
        # Added after the end: called at once (on the next loop turn), with the same error.
        late: asyncio.Future[CometP2PError | None] = loop.create_future()
        a.add_done_callback(late.set_result)
        assert await asyncio.wait_for(late, 5.0) is error
        assert calls == [error]  # once
        assert await asyncio.wait_for(b_done, 5.0) is None  # we closed b: no error


async def test_receivers_waiting_when_the_peer_leaves_are_woken() -> None:
    async with connection_pair() as (a, b):
        waiting: list[asyncio.Task[object]] = [
            asyncio.create_task(a.receive(CH_LOW)),
            asyncio.create_task(a.receive_many(CH_HIGH)),
        ]
        await asyncio.sleep(0)  # yield only
        await b.close()
        for task in waiting:
            with pytest.raises(ConnectionBrokenError):
                await task


HOSTILE = {
    "oversized packet": encode_uvarint(5000) + bytes(5000),
    "unknown channel": encode_packet_msg(0x09, True, b"x"),
    "garbage": b"\x03\xff\xff\xff",
    "empty packet": b"\x00",
}


@pytest.mark.parametrize("hostile", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_packet_ends_the_connection_with_a_remote_protocol_error(
    hostile: bytes,
) -> None:
    async with raw_peer() as (a, peer):
        peer.write(encode_packet_msg(CH_LOW, True, b"before") + hostile)
        await peer.drain()
        error = await a.wait_closed()
        assert isinstance(error, RemoteProtocolError)
        assert a.status().state is MConnectionState.FAILED
        assert await a.receive(CH_LOW) == b"before"
        with pytest.raises(RemoteProtocolError):
            await a.receive(CH_LOW)
        assert not a.try_send(CH_LOW, b"x")
        # We hang up: the peer sees the end of the stream, nothing else.
        assert await read_to_end(peer) == b""


async def test_oversized_packet_error_says_what_arrived() -> None:
    async with raw_peer() as (a, peer):
        peer.write(encode_uvarint(70_000) + bytes(70_000))
        await peer.drain()
        error = await a.wait_closed()
        assert isinstance(error, RemoteProtocolError)
        assert "70000" in str(error)
        assert "65548" in str(error)


async def test_end_of_stream_inside_a_packet_is_a_remote_protocol_error() -> None:
    async with raw_peer() as (a, peer):
        peer.write(encode_packet_msg(CH_LOW, True, b"0123456789")[:-3])
        await peer.drain()
        await peer.close()
        error = await a.wait_closed()
        assert isinstance(error, RemoteProtocolError)
        assert "middle of a Packet" in str(error)


async def test_a_larger_senders_packets_are_accepted_unless_strict() -> None:
    """A peer configured with a larger max payload (4096) stays connected (issue #12);
    with Go's strict check (``recv_packet_msg_payload_bytes=1``) it is cut off."""
    wide = MConnectionConfig(
        send_rate_bytes_per_s=0,
        recv_rate_bytes_per_s=0,
        flush_throttle_s=0.0,
        max_packet_msg_payload_bytes=4096,
    )
    async with connection_pair(wide, FAST) as (a, b):
        assert a.try_send(CH_LOW, bytes(10_000))  # 4096-byte chunks
        assert await b.receive(CH_LOW) == bytes(10_000)
    strict = dataclasses.replace(FAST, recv_packet_msg_payload_bytes=1)
    async with connection_pair(wide, strict) as (a, b):
        assert a.try_send(CH_LOW, bytes(1024))  # fits our limit
        assert await b.receive(CH_LOW) == bytes(1024)
        assert a.try_send(CH_LOW, bytes(2000))  # one 2000-byte chunk: too big for b
        error = await b.wait_closed()
        assert isinstance(error, RemoteProtocolError)
        assert "exceeds max size" in str(error)
        assert isinstance(await a.wait_closed(), ConnectionBrokenError)


# --------------------------------------------------------------------------- misc


async def test_flush_before_start_and_double_start_are_local_errors() -> None:
    async with secret_pair() as (sa, _sb), asyncio.timeout(BOUND_S):
        a = Connection(sa, CHANNELS, FAST)
        with pytest.raises(LocalProtocolError):
            await a.flush()
        a.start()
        with pytest.raises(LocalProtocolError):
            a.start()
        await a.close()
        with pytest.raises(LocalProtocolError):
            a.start()
        with pytest.raises(LocalProtocolError):
            Connection(sa, CHANNELS, FAST, recv_backlog_bytes=0)


async def test_receive_rate_limit_still_delivers() -> None:
    limited = MConnectionConfig(recv_rate_bytes_per_s=2_000_000, flush_throttle_s=0.0)
    async with connection_pair(FAST, limited) as (a, b):
        messages = [numbered(i, 50_000) for i in range(4)]
        for message in messages:
            assert await a.send(CH_MID, message)
        assert await receive_exactly(b, CH_MID, 4) == messages


async def test_status_counts_bytes_per_channel() -> None:
    async with connection_pair() as (a, b):
        assert await a.send(CH_HIGH, bytes(3000))
        assert await b.receive(CH_HIGH) == bytes(3000)
        sent = {ch.id: ch.bytes_sent for ch in a.status().channels}
        received = {ch.id: ch.bytes_received for ch in b.status().channels}
        assert sent[CH_HIGH] == received[CH_HIGH] == 3000
        assert sent[CH_LOW] == received[CH_LOW] == 0


async def test_receive_rate_wait_uses_the_one_core_timer() -> None:
    """A reader held back by the receive rate is woken by the core's timer, and the rate holds."""
    limited = MConnectionConfig(
        send_rate_bytes_per_s=0, recv_rate_bytes_per_s=100_000, flush_throttle_s=0.0
    )
    async with connection_pair(FAST, limited) as (a, b):
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = [numbered(i, 10_000) for i in range(6)]  # 60 kB: > 0.4 s at 100 kB/s
        for message in sent:
            assert await a.send(CH_LOW, message)
        assert await receive_exactly(b, CH_LOW, len(sent)) == sent
        # The burst is 10 kB (0.1 s of rate); the rest must have waited for the rate.
        assert loop.time() - started >= 0.4
        assert not b.closed


async def _writer_asleep(conn: Connection) -> None:
    # The writer parks itself once its start-up work is done (bounded by BOUND_S).
    while not conn._writer.asleep:  # noqa: ASYNC110 - an internal flag, no event to wait on
        await asyncio.sleep(0)


async def test_idle_link_at_throttle_0_writes_on_the_senders_turn() -> None:
    async with connection_pair(FAST) as (a, b):
        await _writer_asleep(a)
        before = a._secret._sealer.counter
        assert a.try_send(CH_LOW, b"now")
        # Sealed and handed to the socket before try_send returned: no writer wakeup.
        assert a._secret._sealer.counter == before + 1
        assert await b.receive(CH_LOW) == b"now"


async def test_a_burst_in_one_turn_is_still_batched_by_the_writer() -> None:
    async with connection_pair(FAST) as (a, b):
        await _writer_asleep(a)
        before = a._secret._sealer.counter
        for index in range(12):  # the channel queue holds 16
            assert a.try_send(CH_LOW, numbered(index, 100))
        # Only the first went out at once; the rest waits for the writer's one write.
        assert a._secret._sealer.counter == before + 1
        got = [await b.receive(CH_LOW) for _ in range(12)]
        assert got == [numbered(index, 100) for index in range(12)]


async def test_at_the_node_defaults_an_idle_link_also_writes_at_once() -> None:
    # 100 ms flush throttle and 5 MB/s: the core sends at once when its queues run dry
    # and the rate allows it, so the sender's turn writes it too.
    async with connection_pair(DEFAULT) as (a, b):
        await _writer_asleep(a)
        before = a._secret._sealer.counter
        assert a.try_send(CH_LOW, b"soon")
        assert a._secret._sealer.counter == before + 1
        assert await b.receive(CH_LOW) == b"soon"


async def test_when_the_send_rate_is_spent_the_writer_keeps_the_rest() -> None:
    slow = dataclasses.replace(FAST, send_rate_bytes_per_s=2000)
    async with connection_pair(slow, FAST) as (a, _b):
        await _writer_asleep(a)
        before = a._secret._sealer.counter
        big = numbered(1, 64 * 1024)  # far beyond the 2000 B/s allowance
        assert a.try_send(CH_LOW, big)
        assert a.try_send(CH_LOW, b"after")
        # Rate-limited: at most the allowance went out at once; the rest waits for the
        # writer's timer, not the sender's turn.
        assert a._secret._sealer.counter - before < 64
        assert a._core.has_queued_messages() or a._core.has_pending_data()
