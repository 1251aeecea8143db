"""The sans-IO MConnection, pumped against itself with a fake clock (wire.md §8)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cometp2p.errors import (
    ConfigError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LocalProtocolError,
    RemoteProtocolError,
)
from cometp2p.sansio import mconnection
from cometp2p.sansio.flowrate import UNLIMITED
from cometp2p.sansio.mconnection import (
    ChannelDescriptor,
    ConnectionTerminated,
    MConnection,
    MConnectionConfig,
    MConnectionState,
    MessageReceived,
    SendQueueReady,
    recv_payload_limit,
)
from cometp2p.testing.pump import pump, run_until
from cometp2p.wire.packet import (
    PING_FRAME,
    PONG_FRAME,
    PacketMsg,
    PacketPing,
    PacketPong,
    decode_packet,
    encode_packet_msg,
)
from cometp2p.wire.proto.tendermint.p2p import conn_pb2
from cometp2p.wire.varint import decode_uvarint, encode_uvarint

UNLIMITED_CONFIG = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0)
CHANNELS = (
    ChannelDescriptor(0x00, priority=1, send_queue_capacity=10, recv_message_capacity=64_000),
    ChannelDescriptor(0x20, priority=6, send_queue_capacity=100),
    ChannelDescriptor(0x30, priority=5, send_queue_capacity=1000),
    ChannelDescriptor(0x81, priority=3, send_queue_capacity=100),
)


def _pair(
    channels: Sequence[ChannelDescriptor] = CHANNELS,
    config: MConnectionConfig = UNLIMITED_CONFIG,
    now: float = 0.0,
) -> tuple[MConnection, MConnection]:
    return MConnection(channels, config, now), MConnection(channels, config, now)


def _split_packets(stream: bytes) -> list[bytes]:
    """Cut a byte stream into delimited Packet bodies."""
    bodies = []
    pos = 0
    while pos < len(stream):
        decoded = decode_uvarint(stream, pos)
        assert decoded is not None
        length, start = decoded
        bodies.append(stream[start : start + length])
        pos = start + length
    assert pos == len(stream)
    return bodies


def _packets(stream: bytes) -> list[PacketPing | PacketPong | PacketMsg]:
    return [decode_packet(body) for body in _split_packets(stream)]


def _messages(events: Iterable[object]) -> list[tuple[int, bytes]]:
    return [(e.channel_id, e.message) for e in events if isinstance(e, MessageReceived)]


def _wire_size(channel_id: int, size: int, chunk: int = 1024) -> int:
    """Delimited bytes of one message of ``size`` bytes, as Go chunks it."""
    total = 0
    while size > chunk:
        total += len(encode_packet_msg(channel_id, False, bytes(chunk)))
        size -= chunk
    return total + len(encode_packet_msg(channel_id, True, bytes(size)))


def _state(conn: MConnection) -> MConnectionState:
    """The state, read through a call so mypy does not pin it after an assert."""
    return conn.state


def _drain_all(conn: MConnection, now: float) -> bytes:
    out = []
    while data := conn.data_to_send(now):
        out.append(data)
    return b"".join(out)


# ------------------------------------------------------------------ descriptors & config


def test_channel_descriptor_validation() -> None:
    assert ChannelDescriptor(0x30, 5).send_queue_capacity == 1
    assert ChannelDescriptor(0x30, 5).recv_message_capacity == 22_020_096
    bad_descriptors: list[Callable[[], object]] = [
        lambda: ChannelDescriptor(256, 1),
        lambda: ChannelDescriptor(-1, 1),
        lambda: ChannelDescriptor(1, 0),
        lambda: ChannelDescriptor(1, 1, send_queue_capacity=0),
        lambda: ChannelDescriptor(1, 1, recv_message_capacity=-1),
    ]
    for bad in bad_descriptors:
        with pytest.raises(LocalProtocolError):
            bad()
    with pytest.raises(LocalProtocolError, match="declared twice"):
        MConnection([ChannelDescriptor(1, 1), ChannelDescriptor(1, 2)], UNLIMITED_CONFIG, 0.0)


def test_config_validation() -> None:
    config = MConnectionConfig()
    assert (config.send_rate_bytes_per_s, config.recv_rate_bytes_per_s) == (5_120_000, 5_120_000)
    assert (config.ping_interval_s, config.pong_timeout_s) == (60.0, 45.0)
    with pytest.raises(ConfigError, match="pong timeout"):
        MConnectionConfig(ping_interval_s=10, pong_timeout_s=10)
    with pytest.raises(ConfigError):
        MConnectionConfig(send_rate_bytes_per_s=-1)
    with pytest.raises(ConfigError):
        MConnectionConfig(max_packet_msg_payload_bytes=0)
    with pytest.raises(ConfigError):
        MConnectionConfig(flush_throttle_s=-0.1)


def test_config_from_p2p_section() -> None:
    from cometp2p.config import P2PConfig

    p2p = P2PConfig(send_rate_bytes_per_s=7, recv_rate_bytes_per_s=9, flush_throttle_timeout_s=0.01)
    config = MConnectionConfig.from_p2p(p2p)
    assert config.send_rate_bytes_per_s == 7
    assert config.recv_rate_bytes_per_s == 9
    assert config.flush_throttle_s == 0.01
    assert config.max_packet_msg_payload_bytes == 1024


# ------------------------------------------------------------------ chunking & bytes


def test_small_message_is_one_eof_packet_sent_at_once() -> None:
    a, _ = _pair()
    assert a.send(0x30, b"abc")
    # Idle link: the queue ran dry, so the packet is flushed without the 100 ms throttle.
    assert a.data_to_send(0.0) == bytes.fromhex("0b1a09083010011a03616263")
    assert a.data_to_send(0.0) == b""


def test_empty_message_is_one_empty_eof_packet() -> None:
    a, b = _pair()
    a.send(0x00, b"")
    data = a.data_to_send(0.0)
    assert data == bytes.fromhex("041a021001")
    b.receive_data(data)
    assert b.next_event() == MessageReceived(0x00, b"")


@pytest.mark.parametrize(
    ("size", "chunks"),
    [(1, [1]), (1023, [1023]), (1024, [1024]), (1025, [1024, 1]), (2500, [1024, 1024, 452])],
)
def test_chunking(size: int, chunks: list[int]) -> None:
    a, b = _pair()
    message = random.Random(size).randbytes(size)
    a.send(0x20, message)
    data = _drain_all(a, 0.0)
    packets = _packets(data)
    assert [len(p.data) for p in packets if isinstance(p, PacketMsg)] == chunks
    assert [p.eof for p in packets if isinstance(p, PacketMsg)] == [False] * (len(chunks) - 1) + [
        True
    ]
    # byte-identical to what Go writes: each chunk via the reference encoder
    expected = b""
    offset = 0
    for i, n in enumerate(chunks):
        expected += encode_packet_msg(0x20, i == len(chunks) - 1, message[offset : offset + n])
        offset += n
    assert data == expected
    b.receive_data(data)
    assert _messages(b.drain_events()) == [(0x20, message)]


def test_high_channel_ids_use_chunks_that_fit_the_receivers_limit() -> None:
    a, b = _pair()
    a.send(0x81, bytes(3000))
    data = _drain_all(a, 0.0)
    bodies = _split_packets(data)
    assert max(map(len, bodies)) <= 1034  # Go's maxPacketMsgSize for a 1024-byte payload
    assert [len(p.data) for p in map(decode_packet, bodies) if isinstance(p, PacketMsg)] == [
        1023,
        1023,
        954,
    ]
    b.receive_data(data)
    assert _messages(b.drain_events()) == [(0x81, bytes(3000))]


def test_output_parses_as_protobuf_packets() -> None:
    a, _ = _pair()
    sent = {0x20: b"x" * 3000, 0x30: b"y" * 10, 0x00: b""}
    for ch, msg in sent.items():
        a.send(ch, msg)
    data = _drain_all(a, 0.0)
    got: dict[int, bytes] = {}
    for body in _split_packets(data):
        packet = conn_pb2.Packet.FromString(body)
        assert packet.WhichOneof("sum") == "packet_msg"
        got[packet.packet_msg.channel_id] = (
            got.get(packet.packet_msg.channel_id, b"") + packet.packet_msg.data
        )
    assert got == sent


# ------------------------------------------------------------------ round trips


@st.composite
def _splitters(draw: st.DrawFn) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(1, 2000), min_size=1, max_size=8)))


def _splitter(sizes: tuple[int, ...]) -> Callable[[bytes], Iterator[bytes]]:
    def split(data: bytes) -> Iterator[bytes]:
        pos = 0
        i = 0
        while pos < len(data):
            step = sizes[i % len(sizes)]
            yield data[pos : pos + step]
            pos += step
            i += 1

    return split


messages_strategy = st.lists(
    st.tuples(
        st.sampled_from([c.id for c in CHANNELS]),
        st.binary(max_size=3000) | st.sampled_from([b"", bytes(1024), bytes(2048)]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(messages_strategy, _splitters(), st.integers(200, 70_000))
def test_messages_arrive_intact_and_in_order_however_split(
    messages: list[tuple[int, bytes]], sizes: tuple[int, ...], batch: int
) -> None:
    config = MConnectionConfig(
        send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0, write_batch_bytes=batch
    )
    a, b = _pair(config=config)
    split = _splitter(sizes)
    pending = list(messages)
    result = pump(a, b, 0.0, split=split)
    while pending:
        ch, msg = pending[0]
        if a.send(ch, msg):
            pending.pop(0)
        else:
            pump(a, b, 0.0, split=split, result=result)
    pump(a, b, 0.0, split=split, result=result)
    received = _messages(result.b_events)
    for channel in {c.id for c in CHANNELS}:
        assert [m for c, m in received if c == channel] == [m for c, m in messages if c == channel]
    assert len(received) == len(messages)
    assert all(len(w) <= batch + 1040 for w in result.a_to_b)


@st.composite
def _wire_packets(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[int, bytes]], int]:
    """Packets a peer may legally send, in canonical or other valid encodings.

    Returns the delimited packets, the messages they carry and the number of Pings.
    """
    channels = [c.id for c in CHANNELS]
    out: list[bytes] = []
    expected: list[tuple[int, bytes]] = []
    pings = 0
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["msg", "msg", "msg", "ping", "pong"]))
        if kind == "ping":
            out.append(PING_FRAME)
            pings += 1
            continue
        if kind == "pong":
            out.append(PONG_FRAME)
            continue
        ch = draw(st.sampled_from(channels))
        message = draw(st.binary(max_size=2500))
        pieces = draw(st.lists(st.integers(0, 1024), max_size=3))
        chunks = []
        pos = 0
        for size in pieces:
            chunks.append(message[pos : pos + size])
            pos += size
        chunks.append(message[pos:])
        if any(len(c) > 1023 for c in chunks):
            chunks = [message[i : i + 1000] for i in range(0, len(message), 1000)] or [b""]
        for i, chunk in enumerate(chunks):
            eof = i == len(chunks) - 1
            if draw(st.booleans()):
                out.append(encode_packet_msg(ch, eof, chunk))
            else:  # the same PacketMsg, fields reversed and explicit defaults
                inner = b"\x1a" + encode_uvarint(len(chunk)) + chunk
                inner += b"\x10" + (b"\x01" if eof else b"\x00") + b"\x08" + encode_uvarint(ch)
                body = b"\x1a" + encode_uvarint(len(inner)) + inner
                out.append(encode_uvarint(len(body)) + body)
        expected.append((ch, message))
    return out, expected, pings


@settings(max_examples=80, deadline=None)
@given(_wire_packets(), _splitters())
def test_receiver_accepts_any_valid_stream_however_split(
    stream: tuple[list[bytes], list[tuple[int, bytes]], int], sizes: tuple[int, ...]
) -> None:
    packets, expected, pings = stream
    _, b = _pair()
    for piece in _splitter(sizes)(b"".join(packets)):
        b.receive_data(piece)
    assert _messages(b.drain_events()) == expected
    # Any number of Pings is answered by exactly one Pong (they coalesce).
    assert b.data_to_send(0.0) == (PONG_FRAME if pings else b"")


# ------------------------------------------------------------------ scheduling


def _reference_packet_order(
    channels: Sequence[ChannelDescriptor], queued: dict[int, list[bytes]]
) -> list[tuple[int, bytes, bool]]:
    """Go's per-packet rule, written out plainly (wire.md §8.3)."""
    sending: dict[int, bytes | None] = {c.id: None for c in channels}
    recently: dict[int, int] = {c.id: 0 for c in channels}
    queues = {c.id: list(queued.get(c.id, [])) for c in channels}
    order: list[tuple[int, bytes, bool]] = []
    while True:
        best: tuple[Fraction, ChannelDescriptor] | None = None
        for c in channels:
            if sending[c.id] is None and not queues[c.id]:
                continue
            ratio = Fraction(recently[c.id], c.priority)
            if best is None or ratio < best[0]:
                best = (ratio, c)
        if best is None:
            return order
        c = best[1]
        if sending[c.id] is None:
            sending[c.id] = queues[c.id].pop(0)
        msg = sending[c.id]
        assert msg is not None
        chunk = 1024 if c.id < 0x80 else 1023
        eof = len(msg) <= chunk
        data = msg if eof else msg[:chunk]
        sending[c.id] = None if eof else msg[chunk:]
        recently[c.id] += len(encode_packet_msg(c.id, eof, data))
        order.append((c.id, data, eof))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 10), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5000)), max_size=30),
    st.integers(1, 100_000),
)
def test_batched_scheduler_matches_gos_per_packet_order(
    priorities: list[int], queued: list[tuple[int, int]], batch: int
) -> None:
    channels = [
        ChannelDescriptor(0x10 + i, priority=p, send_queue_capacity=100)
        for i, p in enumerate(priorities)
    ]
    by_channel: dict[int, list[bytes]] = {}
    config = MConnectionConfig(
        send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0, write_batch_bytes=batch
    )
    a = MConnection(channels, config, 0.0)
    for index, size in queued:
        ch = channels[index % len(channels)].id
        msg = bytes([index]) * size
        by_channel.setdefault(ch, []).append(msg)
        assert a.send(ch, msg)
    got = [
        (p.channel_id, p.data, p.eof)
        for p in _packets(_drain_all(a, 0.0))
        if isinstance(p, PacketMsg)
    ]
    assert got == [
        (ch, data, eof) for ch, data, eof in _reference_packet_order(channels, by_channel)
    ]


def test_ties_go_to_the_channel_declared_first() -> None:
    channels = [ChannelDescriptor(0x40, 2, 10), ChannelDescriptor(0x10, 2, 10)]
    a = MConnection(channels, UNLIMITED_CONFIG, 0.0)
    for _ in range(3):
        a.send(0x10, b"b" * 10)
        a.send(0x40, b"a" * 10)
    order = [p.channel_id for p in _packets(_drain_all(a, 0.0)) if isinstance(p, PacketMsg)]
    assert order == [0x40, 0x10, 0x40, 0x10, 0x40, 0x10]


def test_fairness_under_saturation_follows_priorities() -> None:
    """Two always-full channels of priority 1 and 5 share the rate-limited link 1:5.

    The senders behave like blocking ``send`` callers: they fill their queue until
    ``send`` returns False, then refill whenever the connection lets them (here:
    between ``data_to_send`` calls at the same instant).
    """
    channels = [ChannelDescriptor(0x01, 1, 4), ChannelDescriptor(0x05, 5, 4)]
    config = MConnectionConfig(send_rate_bytes_per_s=200_000, recv_rate_bytes_per_s=0)
    a = MConnection(channels, config, 0.0)
    b = MConnection(channels, config, 0.0)
    message = bytes(300)

    def refill() -> int:
        queued = 0
        for ch in (0x01, 0x05):
            while a.send(ch, message):
                queued += 1
        return queued

    refill()
    now = 0.0
    received = {0x01: 0, 0x05: 0}
    for _ in range(100_000):
        if now >= 10.0:
            break
        a.handle_timer(now)
        while True:
            data = a.data_to_send(now)
            if data:
                b.receive_data(data)
                for ch, msg in _messages(b.drain_events()):
                    received[ch] += len(msg)
            a.drain_events()
            if not refill() and not data:
                break
        timer = a.get_timer()
        assert timer is not None
        assert timer > now
        now = timer
    ratio = received[0x05] / received[0x01]
    assert 4.5 <= ratio <= 5.5, received
    total = sum(received.values())
    # and the send rate held: 200 kB/s for 10 s plus one 20 kB burst, minus framing
    assert 1_850_000 <= total <= 2_020_000, total


def test_recently_sent_decays_every_2_seconds() -> None:
    a, _ = _pair()
    a.send(0x20, bytes(5000))
    _drain_all(a, 0.0)
    sent = a.status(0.0).channels[1].recently_sent
    # delimited bytes: 4 full chunks of 1034 bytes + the 904-byte last chunk in 916
    assert sent == 4 * 1034 + 916 == _wire_size(0x20, 5000)
    assert a.status(1.99).channels[1].recently_sent == sent
    assert a.status(2.0).channels[1].recently_sent == int(sent * 0.8)
    assert a.status(6.5).channels[1].recently_sent == int(int(int(sent * 0.8) * 0.8) * 0.8)


# ------------------------------------------------------------------ queues


def test_queue_capacity_counts_whole_messages_and_ready_event_follows() -> None:
    channels = [ChannelDescriptor(0x30, 5, send_queue_capacity=2)]
    a, b = _pair(channels)
    assert a.send(0x30, bytes(5000))
    assert a.send(0x30, b"2")
    assert not a.can_send(0x30)
    assert not a.send(0x30, b"3")
    assert a.status(0.0).channels[0].send_queue_size == 2
    assert a.next_event() is None
    b.receive_data(_drain_all(a, 0.0))
    assert a.next_event() == SendQueueReady(0x30)
    assert a.next_event() is None
    assert a.send(0x30, b"3")
    b.receive_data(_drain_all(a, 0.0))
    assert _messages(b.drain_events()) == [(0x30, bytes(5000)), (0x30, b"2"), (0x30, b"3")]


def test_undeclared_channel_is_a_local_error() -> None:
    a, _ = _pair()
    with pytest.raises(LocalProtocolError, match="not declared"):
        a.send(0x99, b"x")
    with pytest.raises(LocalProtocolError):
        a.can_send(0x99)


def test_send_copies_mutable_buffers_and_refuses_non_bytes() -> None:
    a, b = _pair()
    buffer = bytearray(b"before")
    assert a.send(0x30, buffer)
    buffer[:] = b"after!"
    assert a.send(0x30, memoryview(b"view"))
    with pytest.raises(LocalProtocolError, match="must be bytes"):
        a.send(0x30, "text")  # type: ignore[arg-type]
    b.receive_data(_drain_all(a, 0.0))
    assert _messages(b.drain_events()) == [(0x30, b"before"), (0x30, b"view")]


def test_status_counts_per_channel() -> None:
    a, b = _pair()
    a.send(0x30, b"12345")
    a.send(0x20, bytes(2000))
    status = a.status(0.0)
    assert [c.send_queue_size for c in status.channels] == [0, 1, 1, 0]
    b.receive_data(_drain_all(a, 0.0))
    sent = a.status(0.0)
    assert [c.bytes_sent for c in sent.channels] == [0, 2000, 5, 0]
    assert [c.send_queue_size for c in sent.channels] == [0, 0, 0, 0]
    received = b.status(0.0)
    assert [c.bytes_received for c in received.channels] == [0, 2000, 5, 0]
    assert received.bytes_received == sent.bytes_sent > 2005


# ------------------------------------------------------------------ ping / pong


def test_ping_every_interval_and_pong_answers() -> None:
    a, b = _pair()
    assert a.get_timer() == 60.0
    assert a.data_to_send(59.9) == b""
    result = run_until(a, b, 0.0, 200.0)
    assert result.a_events == []
    assert result.b_events == []
    pings = [d for d in result.a_to_b if d.startswith(PING_FRAME) or d.endswith(PING_FRAME)]
    assert len(pings) == 3  # at 60, 120, 180
    assert _state(a) is MConnectionState.OPEN
    assert _state(b) is MConnectionState.OPEN


def test_pong_timeout_terminates_with_a_remote_error() -> None:
    a, _ = _pair()
    a.handle_timer(60.0)
    assert a.data_to_send(60.0) == PING_FRAME
    assert a.get_timer() == 105.0
    a.handle_timer(104.9)
    assert _state(a) is MConnectionState.OPEN
    a.handle_timer(105.0)
    assert _state(a) is MConnectionState.FAILED
    event = a.next_event()
    assert isinstance(event, ConnectionTerminated)
    assert isinstance(event.error, RemoteProtocolError)
    assert "pong timeout" in str(event.error)
    assert a.get_timer() is None
    assert a.data_to_send(106.0) == b""
    with pytest.raises(ConnectionBrokenError):
        a.send(0x30, b"x")


def test_any_pong_cancels_the_timeout() -> None:
    a, _ = _pair()
    a.handle_timer(60.0)
    a.data_to_send(60.0)
    a.receive_data(PONG_FRAME)
    assert a.get_timer() == 120.0
    a.handle_timer(119.0)
    assert _state(a) is MConnectionState.OPEN


def test_pings_coalesce_into_one_pong_flushed_with_pending_data() -> None:
    config = MConnectionConfig(send_rate_bytes_per_s=1000, recv_rate_bytes_per_s=0)
    a, _ = _pair(config=config)
    a.send(0x30, bytes(5000))
    assert a.data_to_send(0.0) == b""  # rate-limited and more to come: held back
    a.receive_data(PING_FRAME * 3)
    data = a.data_to_send(0.0)
    assert data.startswith(PONG_FRAME)
    assert data.count(PONG_FRAME) == 1
    assert len(data) > 1000  # the held packet went out with the pong


def test_pong_timeout_pauses_while_the_driver_does_not_read() -> None:
    a, _ = _pair()
    a.handle_timer(60.0)
    assert a.data_to_send(60.0) == PING_FRAME  # pong due by 105
    a.pause_pong_timeout(70.0)
    assert a.get_timer() == 120.0  # the next ping; the pong deadline is suspended
    a.handle_timer(110.0)
    assert _state(a) is MConnectionState.OPEN
    a.resume_pong_timeout(90.0)  # paused for 20 s: deadline 125
    assert a.get_timer() == 120.0
    a.handle_timer(120.0)
    a.data_to_send(120.0)  # the next ping: deadline 165
    a.handle_timer(130.0)
    assert _state(a) is MConnectionState.OPEN
    a.pause_pong_timeout(150.0)
    a.pause_pong_timeout(155.0)  # idempotent
    a.handle_timer(170.0)
    a.resume_pong_timeout(160.0)  # 10 s more: deadline 175
    a.handle_timer(174.9)
    assert _state(a) is MConnectionState.OPEN
    a.handle_timer(175.0)
    assert _state(a) is MConnectionState.FAILED


def test_ping_sent_while_paused_gets_its_full_timeout_after_resume() -> None:
    a, _ = _pair()
    a.pause_pong_timeout(50.0)
    a.handle_timer(60.0)
    a.data_to_send(60.0)
    a.resume_pong_timeout(100.0)  # 40 s of the pause came after the ping
    a.handle_timer(144.9)
    assert _state(a) is MConnectionState.OPEN
    a.handle_timer(145.0)
    assert _state(a) is MConnectionState.FAILED


# ------------------------------------------------------------------ flushing & rates


def test_has_pending_data_tells_the_driver_when_to_call_data_to_send() -> None:
    a, _ = _pair()
    assert not a.has_pending_data()
    a.send(0x30, b"x")
    assert a.has_pending_data()
    assert a.data_to_send(0.0)
    assert not a.has_pending_data()
    a.receive_data(PING_FRAME)
    assert a.has_pending_data()
    assert a.data_to_send(0.0) == PONG_FRAME
    assert not a.has_pending_data()
    limited = MConnectionConfig(send_rate_bytes_per_s=10_000, recv_rate_bytes_per_s=0)
    c, _ = _pair(config=limited)
    c.send(0x30, bytes(5000))
    assert c.has_pending_data()
    assert c.data_to_send(0.0) == b""  # held: the rate is spent
    assert not c.has_pending_data()  # nothing to do before the timer
    c.close()
    assert not c.has_pending_data()


def test_a_batch_ends_for_a_waiting_sender_until_it_refills() -> None:
    channels = [ChannelDescriptor(0x05, 5, 1), ChannelDescriptor(0x01, 1, 1)]
    a = MConnection(channels, UNLIMITED_CONFIG, 0.0)
    assert a.send(0x05, b"five")
    assert a.send(0x01, b"one")
    assert not a.send(0x05, b"blocked")  # the 0x05 sender now waits for room
    assert a.data_to_send(0.0) == b""  # 0x05 went first, ran dry: batch held for refill
    assert a.drain_events() == [SendQueueReady(0x05)]
    assert not a.has_pending_data()
    assert a.get_timer() == pytest.approx(0.1)  # at the latest, the flush throttle
    assert a.send(0x05, b"five again")
    assert a.has_pending_data()
    packets = _packets(a.data_to_send(0.0))
    # the held packet first, then Go's order: 0x01 (ratio 0) before 0x05 (ratio 12/5)
    assert [(p.channel_id, p.data) for p in packets if isinstance(p, PacketMsg)] == [
        (0x05, b"five"),
        (0x01, b"one"),
        (0x05, b"five again"),
    ]


def test_rate_limited_data_waits_for_the_flush_throttle() -> None:
    config = MConnectionConfig(send_rate_bytes_per_s=10_000, recv_rate_bytes_per_s=0)
    a, b = _pair(config=config)
    a.send(0x30, bytes(20_000))
    assert a.data_to_send(0.0) == b""  # one packet produced, held: queues not dry
    assert a.get_timer() == pytest.approx(0.1)
    assert a.data_to_send(0.05) == b""
    a.handle_timer(0.1)
    data = a.data_to_send(0.1)
    assert len(data) == 2 * 1034  # the packets produced at 0 and 0.05, held until 0.1
    b.receive_data(data)
    assert b.next_event() is None


def test_send_rate_limit_over_time() -> None:
    config = MConnectionConfig(send_rate_bytes_per_s=50_000, recv_rate_bytes_per_s=0)
    a, b = _pair(config=config)
    for _ in range(100):
        a.send(0x30, bytes(10_000))
    result = run_until(a, b, 0.0, 10.0)
    sent = result.bytes_a_to_b
    # 10 s at 50 kB/s plus the initial 5 kB burst, give or take one packet of debt and
    # at most one flush throttle (0.1 s) of data still held back
    assert 505_000 - 1034 - 5_000 - 1034 <= sent <= 505_000 + 1034
    eofs = sum(1 for p in _packets(b"".join(result.a_to_b)) if isinstance(p, PacketMsg) and p.eof)
    assert _messages(result.b_events) == [(0x30, bytes(10_000))] * eofs
    assert _state(b) is MConnectionState.OPEN


def test_unlimited_rate_sends_everything_at_once_in_batches() -> None:
    a, _ = _pair()
    for _ in range(100):
        a.send(0x30, bytes(10_000))
    writes = []
    while data := a.data_to_send(0.0):
        writes.append(data)
    assert sum(map(len, writes)) == 100 * _wire_size(0x30, 10_000)
    assert all(len(w) <= 65_536 + 1034 for w in writes)
    assert len(writes) > 10


def test_recv_allowance_tracks_the_recv_rate() -> None:
    config = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=10_000)
    a, b = _pair(config=config)
    assert b.recv_allowance(0.0) == 1000  # 100 ms of rate
    a.send(0x30, bytes(3000))
    data = _drain_all(a, 0.0)
    b.receive_data(data)  # 3032 bytes read against 1000 allowed: debt
    assert len(data) == 3032
    assert b.recv_allowance(0.0) == 0
    assert b.recv_resume_at() == pytest.approx((1 + 3032 - 1000) / 10_000)
    assert b.recv_allowance(0.2) == 0
    assert b.recv_allowance(b.recv_resume_at()) == 1
    assert b.recv_allowance(10.0) == 1000
    unlimited, _ = _pair()
    assert unlimited.recv_allowance(0.0) == UNLIMITED


# ------------------------------------------------------------------ hostile peers


def _assert_failed(conn: MConnection, match: str, bad: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        conn.receive_data(bad)
    assert _state(conn) is MConnectionState.FAILED
    events = conn.drain_events()
    assert events[-1] == ConnectionTerminated(info.value, by_peer=True)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(PING_FRAME)
    with pytest.raises(ConnectionBrokenError):
        conn.send(0x30, b"x")
    assert conn.data_to_send(1.0) == b""
    assert conn.get_timer() is None
    return info.value


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (encode_packet_msg(0x31, True, b"x"), "unknown channel 0x31"),
        (encode_packet_msg(0xFF, True, b"x"), "unknown channel 0xff"),
        (
            encode_uvarint(65549) + bytes(65549),
            "exceeds max size: declared 65549 bytes, limit 65548",
        ),
        (b"\xff" * 11, "overflows 64 bits"),
        (b"\x00", "no ping, pong or msg"),  # empty Packet
        (b"\x02\x20\x00", "no ping, pong or msg"),  # only an unknown field
        (b"\x03\x1a\x01\x0a", "malformed Packet"),
        (bytes.fromhex("0d1a0b08ffffffffffffffffff01"), "unknown channel -1"),
        (
            encode_packet_msg(0x00, False, bytes(1000)) * 64 + encode_packet_msg(0x00, True, b"!"),
            "exceeds available capacity on channel 0x00: 64001 bytes",
        ),
        (encode_packet_msg(0x00, True, bytes(1000)) * 64 + encode_packet_msg(0x00, True, b""), ""),
    ],
)
def test_hostile_bytes_fail_the_connection(bad: bytes, match: str) -> None:
    channels = [*CHANNELS[:1], ChannelDescriptor(0x30, 1)]
    conn = MConnection(channels, UNLIMITED_CONFIG, 0.0)
    if not match:  # 64 messages of 1000 bytes stay within the 64000-byte capacity
        conn.receive_data(bad)
        assert len(conn.drain_events()) == 65
        return
    _assert_failed(conn, match, bad)


def test_packets_of_a_larger_sender_are_accepted_up_to_64_kib() -> None:
    """Issue #12: a peer with max_packet_msg_payload_size 4096 (or up to 65 536) is not
    cut off on its first large packet, though we send at most 1024 bytes per PacketMsg."""
    channels = [ChannelDescriptor(0x30, 1, recv_message_capacity=1 << 20)]
    conn = MConnection(channels, UNLIMITED_CONFIG, 0.0)
    for size in (4096, 10_240, 65_536):
        conn.receive_data(encode_packet_msg(0x30, False, bytes(size)))
    conn.receive_data(encode_packet_msg(0x30, True, b"!"))
    assert conn.drain_events() == [MessageReceived(0x30, bytes(4096 + 10_240 + 65_536) + b"!")]
    _assert_failed(conn, "limit 65548", encode_packet_msg(0x30, True, bytes(65_537)))
    # Go's strict check on request: nothing beyond our own send size.
    strict = dataclasses.replace(UNLIMITED_CONFIG, recv_packet_msg_payload_bytes=1)
    assert recv_payload_limit(strict) == 1024
    _assert_failed(
        MConnection(channels, strict, 0.0),
        "limit 1034",
        encode_packet_msg(0x30, True, bytes(1025)),
    )
    # A larger send size raises the receive limit with it.
    wide = dataclasses.replace(UNLIMITED_CONFIG, max_packet_msg_payload_bytes=100_000)
    assert recv_payload_limit(wide) == 100_000


def test_over_capacity_single_chunk_and_multi_chunk() -> None:
    channels = [ChannelDescriptor(0x30, 1, recv_message_capacity=1500)]
    conn = MConnection(channels, UNLIMITED_CONFIG, 0.0)
    conn.receive_data(encode_packet_msg(0x30, True, bytes(1000)))  # fine
    conn.receive_data(encode_packet_msg(0x30, False, bytes(1000)))
    _assert_failed(
        conn, "1501 bytes > recv_message_capacity 1500", encode_packet_msg(0x30, True, bytes(501))
    )
    small = MConnection(
        [ChannelDescriptor(0x30, 1, recv_message_capacity=10)], UNLIMITED_CONFIG, 0.0
    )
    _assert_failed(
        small, "11 bytes > recv_message_capacity 10", encode_packet_msg(0x30, True, bytes(11))
    )


def test_messages_before_a_bad_packet_are_delivered_first() -> None:
    _, b = _pair()
    good = encode_packet_msg(0x30, True, b"ok")
    with pytest.raises(RemoteProtocolError):
        b.receive_data(good + encode_packet_msg(0x77, True, b"bad") + good)
    events = b.drain_events()
    assert events[0] == MessageReceived(0x30, b"ok")
    assert isinstance(events[1], ConnectionTerminated)
    assert len(events) == 2


def test_eof_mid_packet_is_an_error_and_at_a_boundary_is_clean() -> None:
    _, b = _pair()
    b.receive_data(encode_packet_msg(0x30, True, b"abc")[:-1])
    _assert_failed(b, "in the middle of a Packet", b"")
    _, c = _pair()
    c.receive_data(encode_packet_msg(0x30, False, b"abc"))  # an unfinished message is dropped
    c.receive_data(b"")
    assert c.drain_events() == [ConnectionTerminated(None, by_peer=True)]
    assert _state(c) is MConnectionState.PEER_CLOSED
    c.receive_data(b"late bytes are ignored")
    with pytest.raises(ConnectionBrokenError):
        c.send(0x30, b"x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_random_bytes_raise_only_remote_protocol_error(data: bytes, step: int) -> None:
    _, b = _pair()
    try:
        for i in range(0, len(data), step):
            b.receive_data(data[i : i + step])
        b.receive_data(b"")
    except RemoteProtocolError:
        assert _state(b) is MConnectionState.FAILED
        assert isinstance(b.drain_events()[-1], ConnectionTerminated)


def test_close_is_local_and_final() -> None:
    a, _ = _pair()
    a.send(0x30, b"dropped")
    a.close()
    assert _state(a) is MConnectionState.CLOSED
    assert a.drain_events() == [ConnectionTerminated(None, by_peer=False)]
    assert a.data_to_send(0.0) == b""
    assert a.get_timer() is None
    with pytest.raises(ConnectionClosedError):
        a.send(0x30, b"x")
    assert not a.can_send(0x30)
    a.close()
    assert a.next_event() is None
    a.receive_data(PING_FRAME)  # ignored once closed
    assert a.next_event() is None


# ------------------------------------------------------------------ state machine


class TwoEndpoints(RuleBasedStateMachine):
    """Random sends, clock steps and stream splits between two rate-limited endpoints.

    Invariants: messages arrive intact and in order per channel, nothing fails, queue
    sizes match what was accepted, and once the clock runs on everything is delivered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = MConnectionConfig(
            send_rate_bytes_per_s=40_000,
            recv_rate_bytes_per_s=0,
            write_batch_bytes=4096,
            ping_interval_s=3.0,
            pong_timeout_s=2.0,
        )
        self.channels = [
            ChannelDescriptor(0x01, 1, 3),
            ChannelDescriptor(0x02, 4, 2),
            ChannelDescriptor(0x90, 2, 5),
        ]
        self.a = MConnection(self.channels, self.config, 0.0)
        self.b = MConnection(self.channels, self.config, 0.0)
        self.now = 0.0
        self.sent: dict[int, list[bytes]] = {c.id: [] for c in self.channels}
        self.received: dict[int, list[bytes]] = {c.id: [] for c in self.channels}
        self.piece = 1000

    def _exchange(self) -> None:
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            data = src.data_to_send(self.now)
            if not data:  # a driver looping on has_pending_data() must not spin
                assert not src.has_pending_data()
            for i in range(0, len(data), self.piece):
                dst.receive_data(data[i : i + self.piece])
            for endpoint in (src, dst):
                for event in endpoint.drain_events():
                    assert not isinstance(event, ConnectionTerminated), event
                    if isinstance(event, MessageReceived):
                        assert endpoint is self.b  # only a sends messages
                        self.received[event.channel_id].append(event.message)

    @rule(
        channel=st.sampled_from([0x01, 0x02, 0x90]),
        size=st.integers(0, 3000),
        tag=st.integers(0, 255),
    )
    def send(self, channel: int, size: int, tag: int) -> None:
        message = bytes([tag]) * size
        if self.a.send(channel, message):
            self.sent[channel].append(message)

    @rule()
    def pump_now(self) -> None:
        self._exchange()

    @rule(piece=st.integers(1, 3000))
    def resplit(self, piece: int) -> None:
        self.piece = piece

    @rule(step=st.floats(0.0, 0.5))
    def advance(self, step: float) -> None:
        timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        self.now = max(self.now, min([self.now + step, *timers]))
        self.a.handle_timer(self.now)
        self.b.handle_timer(self.now)
        self._exchange()

    @invariant()
    def in_order_prefix(self) -> None:
        for ch, got in self.received.items():
            assert got == self.sent[ch][: len(got)]
        queued = [c.send_queue_size for c in self.a.status(self.now).channels]
        delivered_or_queued = [
            len(self.sent[c.id]) - len(self.received[c.id]) for c in self.channels
        ]
        # what is not delivered is queued, in flight in a held batch, or partly sent
        assert all(q <= d for q, d in zip(queued, delivered_or_queued, strict=True))

    def teardown(self) -> None:
        # Let the clock run: everything accepted is eventually delivered.
        for _ in range(10_000):
            if all(len(self.received[c.id]) == len(self.sent[c.id]) for c in self.channels):
                break
            self.advance(0.5)
        for ch in self.sent:
            assert self.received[ch] == self.sent[ch]


TwoEndpoints.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
test_two_endpoints_state_machine = TwoEndpoints.TestCase


# ------------------------------------------------------------------ only real deadlines


def test_get_timer_never_returns_a_past_time_for_due_work() -> None:
    a, b = _pair()
    a.handle_timer(60.0)  # the Ping is due now
    assert a.has_pending_data()
    timer = a.get_timer()
    assert timer is not None
    assert timer == 120.0  # the next real deadline, not "already due"
    b.receive_data(PING_FRAME)  # b owes a Pong
    assert b.has_pending_data()
    assert b.get_timer() == 60.0
    assert a.data_to_send(60.0) == PING_FRAME
    assert a.get_timer() == 105.0  # now the pong timeout
    assert b.data_to_send(0.5) == PONG_FRAME
    assert not b.has_pending_data()


def test_get_timer_includes_the_receive_resume_while_the_driver_waits() -> None:
    config = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=10_000)
    a, b = _pair(config=config)
    a.send(0x30, bytes(3000))
    b.receive_data(_drain_all(a, 0.0))  # debt: reading must wait
    assert b.get_timer() == 60.0  # nobody waits yet: only the Ping
    assert b.recv_allowance(0.0) == 0  # the driver now waits ...
    resume = b.recv_resume_at()
    assert b.get_timer() == pytest.approx(resume)  # ... and the one timer covers it
    b.handle_timer(resume)
    assert b.get_timer() == 60.0  # the wait is over
    assert b.recv_allowance(resume) == 1


def test_more_to_send_after_a_batch_that_ended_for_a_refilling_sender() -> None:
    channels = (
        ChannelDescriptor(0x01, priority=1, send_queue_capacity=1),
        ChannelDescriptor(0x02, priority=1, send_queue_capacity=100),
    )
    config = MConnectionConfig(
        send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0, flush_throttle_s=0.0
    )
    a = MConnection(channels, config, 0.0)
    assert a.send(0x01, b"x")
    assert not a.send(0x01, b"y")  # full: its sender now waits for SendQueueReady
    for _ in range(50):
        assert a.send(0x02, bytes(100))
    assert a.data_to_send(0.0)  # the batch ends once 0x01's sender is told to refill
    assert any(isinstance(e, SendQueueReady) for e in a.drain_events())
    assert not a.has_pending_data()  # not at once: let the sender refill first ...
    assert a.more_to_send()  # ... then go on (0x02 still has messages queued)
    assert a.has_queued_messages()
    while a.data_to_send(0.0):
        pass
    assert not a.more_to_send()
    assert not a.has_queued_messages()


def test_chunks_with_fields_after_the_data_are_reassembled() -> None:
    """A PacketMsg whose data is not its last field (valid proto3) takes the rare path."""
    _, b = _pair()

    def msg(eof: bool, data: bytes) -> bytes:
        inner = b"\x08\x30" + (b"\x10\x01" if eof else b"") + b"\x1a" + bytes([len(data)]) + data
        inner += b"\x20\x05"  # an unknown varint field after the data
        body = b"\x1a" + bytes([len(inner)]) + inner
        return bytes([len(body)]) + body

    b.receive_data(msg(False, b"hel") + msg(True, b"lo") + msg(True, b"!"))
    assert [(ch, m) for ch, m in _messages(b.drain_events())] == [
        (0x30, b"hello"),
        (0x30, b"!"),
    ]


def test_the_facade_keeps_every_public_name_and_each_instance_its_own_send() -> None:
    assert set(mconnection.__all__) == {
        "DEFAULT_RECV_MESSAGE_CAPACITY",
        "UNLIMITED",
        "ChannelDescriptor",
        "ChannelStatus",
        "ConnectionTerminated",
        "Event",
        "MConnection",
        "MConnectionConfig",
        "MConnectionState",
        "MConnectionStatus",
        "MessageReceived",
        "SendQueueReady",
        "recv_payload_limit",
    }
    assert all(hasattr(mconnection, name) for name in mconnection.__all__)
    a, b = _pair()
    assert a.send(0x30, b"to a")
    assert not b.has_queued_messages()  # send is bound to a's own queues
    a.close()
    with pytest.raises(ConnectionClosedError):
        a.send(0x30, b"x")
    assert b.send(0x30, b"still open")
    assert "TrySend" in (a.send.__doc__ or "")
