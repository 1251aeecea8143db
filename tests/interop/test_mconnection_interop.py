"""Our MConnection driver against CometBFT's own (wire.md §8), via the Go harness.

The Go side is ``goharness mconn-echo``: CometBFT v0.38's ``conn.MConnection`` over its
SecretConnection, with channels 0x01 (priority 1, 1 MiB messages), 0x02 (5, 1 MiB) and
0x03 (10, 4 MiB). Messages go both ways on all three channels with sizes 0, 1, 1024,
1025 and 1 MiB (1024 PacketMsgs), at CometBFT's node rates and with rate limits off;
every one must come back byte-identical. A packet beyond the receiver's limit ends the
connection, whichever side sends it.

Go v0.38 loses an empty (0-byte) message it *sends* whenever another channel also has
data pending: ``Channel.isSendPending`` moves the empty message into ``ch.sending``, and
a zero-length ``sending`` reads as "nothing in flight" at the next scheduling round, so
it is overwritten by the next queued message or forgotten. Our side sends and receives
empty messages on any channel (Go reports receiving each one); empty messages *from Go*
are therefore sent while no other channel is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import pytest

from cometp2p.aio.connection import Connection
from cometp2p.aio.secret_connection import secret_handshake
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import ConnectionBrokenError, RemoteProtocolError
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig, MConnectionState
from cometp2p.wire.packet import encode_packet_msg
from interop.conftest import StartHarness
from interop.goharness import GoHarness, payload

pytestmark = pytest.mark.interop

KEY = NodeKey.from_seed(bytes(range(100, 132)))
MIB = 1024 * 1024
BOUND_S = 30.0
SIZES = (0, 1, 1024, 1025, MIB)
NONEMPTY_SIZES = SIZES[1:]
# The harness's channels (common.go echoChannels), as we declare them.
CHANNELS = (
    ChannelDescriptor(0x01, priority=1, send_queue_capacity=100, recv_message_capacity=MIB),
    ChannelDescriptor(0x02, priority=5, send_queue_capacity=100, recv_message_capacity=MIB),
    ChannelDescriptor(0x03, priority=10, send_queue_capacity=100, recv_message_capacity=4 * MIB),
)
CHANNEL_IDS = tuple(ch.id for ch in CHANNELS)

# Node rates (5 120 000 B/s each way) with v1.0's 10 ms flush throttle.
NODE_RATES = (MConnectionConfig(flush_throttle_s=0.01), ("--flush-throttle-ms", "10"))
UNLIMITED = (
    MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0, flush_throttle_s=0.0),
    ("--send-rate", "0", "--recv-rate", "0", "--flush-throttle-ms", "1"),
)
SETTINGS = {"node-rates": NODE_RATES, "unlimited": UNLIMITED}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(channel_id: int, size: int) -> bytes:
    """A message that differs per channel and size (the Go payload is shifted)."""
    return bytes((k + channel_id * 7 + size) % 256 for k in range(size))


def numbered(channel_id: int, index: int) -> bytes:
    return index.to_bytes(4, "big") + bytes([channel_id]) * (index % 300)


async def listening(harness: GoHarness) -> tuple[str, int, str]:
    event = await harness.wait_for("listening")
    host, port = str(event["listen"]).rsplit(":", 1)
    return host, int(port), str(event["node_id"])


@contextlib.asynccontextmanager
async def dial(
    harness: GoHarness, config: MConnectionConfig
) -> AsyncIterator[tuple[Connection, dict[str, object]]]:
    """Dial a listening harness; yields our started Connection and its handshake event."""
    host, port, node_id = await listening(harness)
    reader, writer = await asyncio.open_connection(host, port)
    secret = await secret_handshake(reader, writer, KEY)
    assert secret.remote_node_id == node_id
    conn = Connection(secret, CHANNELS, config)
    conn.start()
    try:
        handshake = await harness.wait_for("handshake")
        assert handshake["remote_node_id"] == KEY.node_id
        yield conn, handshake
    finally:
        await conn.close(flush_timeout_s=0)


@contextlib.asynccontextmanager
async def accept_from(
    goharness: StartHarness, config: MConnectionConfig, *harness_args: str
) -> AsyncIterator[tuple[Connection, GoHarness]]:
    """Listen, let a harness dial us; yields our started Connection and the harness."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        harness = await goharness(
            "mconn-echo", "--dial", f"127.0.0.1:{port}", "--expect-id", KEY.node_id, *harness_args
        )
        reader, writer = await accepted
        secret = await secret_handshake(reader, writer, KEY)
        dialed = await harness.wait_for("dialed")
        assert secret.remote_node_id == dialed["node_id"]
        conn = Connection(secret, CHANNELS, config)
        conn.start()
        try:
            await harness.wait_for("handshake")
            yield conn, harness
        finally:
            await conn.close(flush_timeout_s=0)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
async def test_go_echoes_every_message_byte_identical(
    goharness: StartHarness, settings: tuple[MConnectionConfig, tuple[str, ...]]
) -> None:
    """Python -> Go -> Python on every channel and size; Go reports what it reassembled."""
    config, go_flags = settings
    harness = await goharness("mconn-echo", "--listen", "127.0.0.1:0", *go_flags)
    async with asyncio.timeout(BOUND_S), dial(harness, config) as (conn, _):
        for channel in CHANNEL_IDS:  # one at a time: see the module docstring
            assert await conn.send(channel, b"")
            assert await conn.receive(channel) == b""
            got = await harness.wait_for("receive", channel=channel, size=0)
            assert got["hex"] == ""
        for channel in CHANNEL_IDS:
            for size in NONEMPTY_SIZES:
                assert await conn.send(channel, pattern(channel, size))
        for channel in CHANNEL_IDS:
            for size in NONEMPTY_SIZES:
                echoed = await conn.receive(channel)
                assert len(echoed) == size
                assert echoed == pattern(channel, size)
                got = await harness.wait_for("receive", channel=channel, size=size)
                assert got["sha256"] == sha256_hex(pattern(channel, size))
        assert not harness.seen("disconnect")
        assert not conn.closed


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
async def test_go_dials_us_and_messages_flow_both_ways(
    goharness: StartHarness, settings: tuple[MConnectionConfig, tuple[str, ...]]
) -> None:
    """Go dials our listener; Go -> Python and Python -> Go, interleaved on all channels."""
    config, go_flags = settings
    async with (
        asyncio.timeout(BOUND_S),
        accept_from(goharness, config, "--no-echo", *go_flags) as (conn, harness),
    ):
        for channel in CHANNEL_IDS:  # one at a time: see the module docstring
            await harness.send({"cmd": "send", "channel": channel, "size": 0})
            assert await conn.receive(channel) == b""
            assert await conn.send(channel, b"")
            got = await harness.wait_for("receive", channel=channel, size=0)
            assert got["hex"] == ""
        for channel in CHANNEL_IDS:
            for size in NONEMPTY_SIZES:
                await harness.send({"cmd": "send", "channel": channel, "size": size})
                assert await conn.send(channel, pattern(channel, size))
        for channel in CHANNEL_IDS:
            for size in NONEMPTY_SIZES:
                sent = await harness.wait_for("sent", channel=channel, size=size)
                assert sent["ok"] is True
                from_go = await conn.receive(channel)
                assert len(from_go) == size
                assert from_go == payload(size)
                got = await harness.wait_for("receive", channel=channel, size=size)
                assert got["sha256"] == sha256_hex(pattern(channel, size))
                if size <= 512:
                    assert got["hex"] == pattern(channel, size).hex()
        assert not harness.seen("disconnect")


async def test_python_sends_empty_messages_on_busy_channels(goharness: StartHarness) -> None:
    """Empty messages from us reach Go however busy the other channels are."""
    config, go_flags = UNLIMITED
    harness = await goharness("mconn-echo", "--listen", "127.0.0.1:0", "--no-echo", *go_flags)
    async with asyncio.timeout(BOUND_S), dial(harness, config) as (conn, _):
        for _ in range(3):
            for channel in CHANNEL_IDS:
                assert await conn.send(channel, pattern(channel, 5000))
                assert await conn.send(channel, b"")
        for _ in range(3):
            for channel in CHANNEL_IDS:
                assert (await harness.wait_for("receive", channel=channel, size=5000))["sha256"]
                assert (await harness.wait_for("receive", channel=channel, size=0))["hex"] == ""


async def test_many_small_messages_keep_their_order_per_channel(goharness: StartHarness) -> None:
    config, go_flags = UNLIMITED
    harness = await goharness("mconn-echo", "--listen", "127.0.0.1:0", "--quiet", *go_flags)
    async with asyncio.timeout(BOUND_S), dial(harness, config) as (conn, _):
        count = 2000
        for i in range(count):
            for channel in CHANNEL_IDS:
                assert await conn.send(channel, numbered(channel, i))
        for channel in CHANNEL_IDS:
            got: list[bytes] = []
            while len(got) < count:
                got += await conn.receive_many(channel)
            assert got == [numbered(channel, i) for i in range(count)]


async def test_oversized_packet_from_python_makes_go_disconnect(goharness: StartHarness) -> None:
    harness = await goharness("mconn-echo", "--listen", "127.0.0.1:0", "--flush-throttle-ms", "1")
    wide = MConnectionConfig(max_packet_msg_payload_bytes=2048, flush_throttle_s=0.0)
    async with asyncio.timeout(BOUND_S), dial(harness, wide) as (conn, handshake):
        assert await conn.send(0x02, pattern(2, 1024))  # one 1034-byte Packet: Go's limit
        assert await conn.receive(0x02) == pattern(2, 1024)
        assert await conn.send(0x02, pattern(2, 2000))  # one 2010-byte Packet: too big
        disconnect = await harness.wait_for("disconnect", conn=handshake["conn"])
        assert "exceeds max size" in str(disconnect["reason"])
        error = await conn.wait_closed()
        assert isinstance(error, ConnectionBrokenError)
        assert not harness.seen("receive")[1:]  # only the 1024-byte message got through


async def test_larger_packets_from_go_are_accepted(goharness: StartHarness) -> None:
    """Issue #12: a Go peer with max_packet_msg_payload_size 4096 stays connected."""
    harness = await goharness(
        "mconn-echo", "--listen", "127.0.0.1:0", "--max-packet-payload", "4096",
        "--flush-throttle-ms", "1",
    )  # fmt: skip
    config = MConnectionConfig(flush_throttle_s=0.0)
    async with asyncio.timeout(BOUND_S), dial(harness, config) as (conn, _handshake):
        for size in (1024, 4000, 20_000):
            await harness.send({"cmd": "send", "channel": 1, "size": size})
            assert await conn.receive(0x01) == payload(size)
        assert conn.status().state is MConnectionState.OPEN


async def test_oversized_packet_from_go_makes_a_strict_python_disconnect(
    goharness: StartHarness,
) -> None:
    config = MConnectionConfig(flush_throttle_s=0.0, recv_packet_msg_payload_bytes=1)
    harness = await goharness(
        "mconn-echo", "--listen", "127.0.0.1:0", "--max-packet-payload", "2048",
        "--flush-throttle-ms", "1",
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S), dial(harness, config) as (conn, handshake):
        await harness.send({"cmd": "send", "channel": 1, "size": 1024})
        assert await conn.receive(0x01) == payload(1024)
        await harness.send({"cmd": "send", "channel": 1, "size": 2000})
        error = await conn.wait_closed()
        assert isinstance(error, RemoteProtocolError)
        assert "exceeds max size" in str(error)
        assert "1034" in str(error)
        disconnect = await harness.wait_for("disconnect", conn=handshake["conn"])
        assert disconnect["reason"]


async def test_unknown_channel_from_python_makes_go_disconnect(goharness: StartHarness) -> None:
    """Our own declared channel 0x09 is unknown to Go: it must hang up (wire.md §8.6)."""
    harness = await goharness("mconn-echo", "--listen", "127.0.0.1:0", "--flush-throttle-ms", "1")
    host, port, _ = await listening(harness)
    async with asyncio.timeout(BOUND_S):
        reader, writer = await asyncio.open_connection(host, port)
        secret = await secret_handshake(reader, writer, KEY)
        try:
            secret.write(encode_packet_msg(0x09, True, b"nobody listens here"))
            await secret.drain()
            disconnect = await harness.wait_for("disconnect")
            assert "unknown channel" in str(disconnect["reason"]).lower()
            with contextlib.suppress(ConnectionBrokenError):
                assert await secret.read_some() == b""
        finally:
            await secret.close()


async def test_pings_and_pongs_flow_both_ways_with_short_intervals(
    goharness: StartHarness,
) -> None:
    """Both sides ping every 0.2 s with a 0.15 s pong timeout; neither gives up.

    Go closes the connection if we do not answer its Pings in time, and we close it if
    Go does not answer ours; after a second both are up and Pings/Pongs were counted.
    """
    config = MConnectionConfig(
        send_rate_bytes_per_s=0,
        recv_rate_bytes_per_s=0,
        flush_throttle_s=0.0,
        ping_interval_s=0.2,
        pong_timeout_s=0.15,
    )
    harness = await goharness(
        "mconn-echo", "--listen", "127.0.0.1:0", "--ping-interval-ms", "200",
        "--pong-timeout-ms", "150", "--flush-throttle-ms", "1",
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S), dial(harness, config) as (conn, _):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.2
        sent = 0
        while loop.time() < deadline:
            message = sent.to_bytes(4, "big")
            assert await conn.send(0x01, message)
            assert await conn.receive(0x01) == message
            sent += 1
        assert not conn.closed
        assert not harness.seen("disconnect")
        echoes = (encode_packet_msg(0x01, True, i.to_bytes(4, "big")) for i in range(sent))
        echo_bytes = sum(map(len, echoes))
        control = conn.status().bytes_received - echo_bytes
        assert control % 3 == 0  # Ping and Pong are 3 bytes each on the wire
        assert control // 3 >= 6  # Go's Pings plus its Pongs to ours
