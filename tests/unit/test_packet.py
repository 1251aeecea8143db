"""The MConnection Packet codec against golden bytes and protobuf (wire.md §2.2, §4.3, §4.6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cometp2p.errors import LocalProtocolError, RemoteProtocolError
from cometp2p.wire import packet as packet_module
from cometp2p.wire.packet import (
    KIND_MSG,
    KIND_PING,
    KIND_PONG,
    PING_FRAME,
    PONG_FRAME,
    Packet,
    PacketMsg,
    PacketPing,
    PacketPong,
    PacketSpan,
    decode_packet,
    encode_packet_msg,
    max_packet_msg_size,
    packet_msg_body_size,
    packet_msg_header,
    scan_packet,
)
from cometp2p.wire.proto.tendermint.p2p import conn_pb2
from cometp2p.wire.varint import decode_uvarint, encode_uvarint

VECTORS = Path(__file__).parents[2] / "../shared/vectors"


def _strip_prefix(delimited: bytes) -> bytes:
    decoded = decode_uvarint(delimited)
    assert decoded is not None
    length, start = decoded
    assert length == len(delimited) - start
    return delimited[start:]


def _to_pb(packet: Packet) -> conn_pb2.Packet:
    if isinstance(packet, PacketPing):
        return conn_pb2.Packet(packet_ping=conn_pb2.PacketPing())
    if isinstance(packet, PacketPong):
        return conn_pb2.Packet(packet_pong=conn_pb2.PacketPong())
    return conn_pb2.Packet(
        packet_msg=conn_pb2.PacketMsg(
            channel_id=packet.channel_id, eof=packet.eof, data=packet.data
        )
    )


def _from_pb(pb: conn_pb2.Packet) -> Packet:
    which = pb.WhichOneof("sum")
    if which == "packet_ping":
        return PacketPing()
    if which == "packet_pong":
        return PacketPong()
    assert which == "packet_msg"
    m = pb.packet_msg
    return PacketMsg(m.channel_id, m.eof, m.data)


def _span_to_packet(buf: bytes, span: PacketSpan) -> Packet:
    kind, channel_id, eof, data_start, data_end = span
    if kind == KIND_PING:
        return PacketPing()
    if kind == KIND_PONG:
        return PacketPong()
    assert kind == KIND_MSG
    return PacketMsg(channel_id, eof, buf[data_start:data_end])


# ------------------------------------------------------------------ golden bytes (§4.6)


def test_ping_and_pong_frames() -> None:
    assert PING_FRAME.hex() == "020a00"
    assert PONG_FRAME.hex() == "021200"
    assert decode_packet(_strip_prefix(PING_FRAME)) == PacketPing()
    assert decode_packet(_strip_prefix(PONG_FRAME)) == PacketPong()


@pytest.mark.parametrize(
    ("channel_id", "eof", "data", "expected"),
    [
        (0x30, True, b"abc", "0b1a09083010011a03616263"),
        (0x20, False, b"", "041a020820"),
        (0x00, True, bytes.fromhex("0a00"), "081a0610011a020a00"),  # PexRequest
        (0x00, False, b"", "021a00"),
        (0x00, True, b"", "041a021001"),
    ],
)
def test_worked_encodings(channel_id: int, eof: bool, data: bytes, expected: str) -> None:
    encoded = encode_packet_msg(channel_id, eof, data)
    assert encoded.hex() == expected
    assert decode_packet(_strip_prefix(encoded)) == PacketMsg(channel_id, eof, data)


def test_chunks_of_a_2500_byte_message() -> None:
    first = encode_packet_msg(0x21, False, bytes(1024))
    assert first.startswith(bytes.fromhex("88081a850808211a8008"))
    assert len(first) == 1034
    last = encode_packet_msg(0x21, True, bytes(452))
    assert last.startswith(bytes.fromhex("ce031acb03082110011a"))
    assert len(last) == 464


def test_max_packet_msg_size_default() -> None:
    assert max_packet_msg_size(1024) == 1034
    path = VECTORS / "known-answers.json"
    if not path.exists():
        pytest.skip(f"shared vectors not found at {path}")
    expected = json.loads(path.read_text())["max_packet_msg_size_default"]["value"]
    assert max_packet_msg_size(1024) == expected


@given(st.integers(min_value=1, max_value=70_000))
def test_max_packet_msg_size_matches_protobuf(payload: int) -> None:
    pb = conn_pb2.Packet(packet_msg=conn_pb2.PacketMsg(channel_id=1, eof=True, data=bytes(payload)))
    assert max_packet_msg_size(payload) == len(pb.SerializeToString())


def test_encoder_rejects_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        encode_packet_msg(256, True, b"")
    with pytest.raises(LocalProtocolError):
        encode_packet_msg(-1, True, b"x")
    with pytest.raises(LocalProtocolError):
        packet_msg_header(1, True, -1)
    with pytest.raises(LocalProtocolError):
        max_packet_msg_size(0)


# ------------------------------------------------------------- byte-identity with protobuf

channel_ids = st.integers(min_value=0, max_value=255)
payloads = st.binary(max_size=2100) | st.sampled_from(
    [b"", bytes(1024), bytes(16384), bytes(70000)]
)
packet_msgs = st.builds(PacketMsg, channel_ids, st.booleans(), payloads)
packets: st.SearchStrategy[Packet] = st.one_of(
    st.just(PacketPing()), st.just(PacketPong()), packet_msgs
)


def _encode(packet: Packet) -> bytes:
    if isinstance(packet, PacketPing):
        return PING_FRAME
    if isinstance(packet, PacketPong):
        return PONG_FRAME
    return encode_packet_msg(packet.channel_id, packet.eof, packet.data)


@given(packets)
@example(PacketMsg(255, True, bytes(1024)))
@example(PacketMsg(128, False, b""))
def test_byte_identity_with_protobuf_both_directions(packet: Packet) -> None:
    ours = _encode(packet)
    pb_body = _to_pb(packet).SerializeToString()
    # our encoder == protobuf's, prefix included
    assert ours == encode_uvarint(len(pb_body)) + pb_body
    # our decoder reads protobuf's bytes back to the original
    assert decode_packet(pb_body) == packet
    # protobuf reads our bytes back to the original
    assert _from_pb(conn_pb2.Packet.FromString(_strip_prefix(ours))) == packet
    # the canonical fast path and the general parser agree
    assert _span_to_packet(pb_body, packet_module._scan_general(pb_body, 0, len(pb_body))) == packet


@given(packet_msgs)
def test_header_size_helpers_agree(msg: PacketMsg) -> None:
    header = packet_msg_header(msg.channel_id, msg.eof, len(msg.data))
    encoded = encode_packet_msg(msg.channel_id, msg.eof, msg.data)
    assert header + msg.data == encoded
    assert len(_strip_prefix(encoded)) == packet_msg_body_size(
        msg.channel_id, msg.eof, len(msg.data)
    )
    assert encode_packet_msg(msg.channel_id, msg.eof, memoryview(msg.data)) == encoded


# ------------------------------------------- non-canonical but valid encodings (Go accepts)


def _key(field: int, wire_type: int) -> bytes:
    return encode_uvarint(field << 3 | wire_type)


def _overlong(value: int, extra: int, max_len: int = 10) -> bytes:
    """A valid varint of ``value`` padded with ``extra`` redundant continuation bytes.

    Lengths stay within 5 bytes (``max_len``) where protobuf-python is the cross-check:
    upb refuses longer length prefixes although Go accepts them.
    """
    raw = bytearray(encode_uvarint(value))
    extra = max(0, min(extra, max_len - len(raw)))
    for _ in range(extra):
        raw[-1] |= 0x80
        raw.append(0)
    return bytes(raw)


def _fixed(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


unknown_fields = st.lists(
    st.one_of(
        st.builds(
            lambda f, v: _key(f, 0) + encode_uvarint(v),
            st.integers(4, 2**29 - 1),
            st.integers(0, 2**64 - 1),
        ),
        st.builds(
            lambda f, b: _key(f, 1) + b, st.integers(4, 1000), st.binary(min_size=8, max_size=8)
        ),
        st.builds(
            lambda f, b: _key(f, 2) + encode_uvarint(len(b)) + b,
            st.integers(4, 1000),
            st.binary(max_size=20),
        ),
        st.builds(
            lambda f, b: _key(f, 5) + b, st.integers(4, 1000), st.binary(min_size=4, max_size=4)
        ),
        st.builds(
            lambda f, v: _key(f, 3) + _key(1, 0) + encode_uvarint(v) + _key(f, 4),
            st.integers(4, 1000),
            st.integers(0, 1000),
        ),
    ),
    max_size=3,
)


@st.composite
def non_canonical_msgs(draw: st.DrawFn) -> tuple[PacketMsg, bytes]:
    msg = draw(packet_msgs)
    pad = st.integers(0, 9)
    fields: list[bytes] = []
    # Earlier occurrences with other values: the last occurrence must win.
    for _ in range(draw(st.integers(0, 2))):
        fields.append(_key(1, 0) + _overlong(draw(channel_ids), draw(pad)))
        fields.append(_key(2, 0) + _overlong(draw(st.integers(0, 5)), draw(pad)))
        junk = draw(st.binary(max_size=5))
        fields.append(_key(3, 2) + encode_uvarint(len(junk)) + junk)
    final = [
        _key(1, 0) + _overlong(msg.channel_id, draw(pad)),
        _key(2, 0) + _overlong(draw(st.integers(1, 2**64 - 1)) if msg.eof else 0, draw(pad)),
        _key(3, 2) + _overlong(len(msg.data), draw(pad), 5) + msg.data,
    ]
    final = draw(st.permutations(final))
    body = b"".join(fields) + b"".join(draw(unknown_fields)) + b"".join(final)
    body += b"".join(draw(unknown_fields))
    outer = draw(unknown_fields)
    packet = b"".join(outer) + _key(3, 2) + _overlong(len(body), draw(pad), 5) + body
    return msg, packet


@given(non_canonical_msgs())
def test_decoder_accepts_any_valid_encoding(case: tuple[PacketMsg, bytes]) -> None:
    msg, body = case
    assert decode_packet(body) == msg
    assert _from_pb(conn_pb2.Packet.FromString(body)) == msg


def test_ten_byte_length_prefix_is_accepted_like_go() -> None:
    body = b"\x1a" + _overlong(4, 9) + b"\x08\x30\x10\x01"
    assert decode_packet(body) == PacketMsg(0x30, True, b"")


def test_later_oneof_member_replaces_earlier() -> None:
    body = _strip_prefix(encode_packet_msg(5, True, b"x")) + b"\x0a\x00"
    assert decode_packet(body) == PacketPing()
    body = b"\x0a\x00" + _strip_prefix(encode_packet_msg(5, True, b"x"))
    assert decode_packet(body) == PacketMsg(5, True, b"x")


def test_ping_with_unknown_fields_is_still_a_ping() -> None:
    assert decode_packet(b"\x0a\x02\x08\x01") == PacketPing()
    assert decode_packet(b"\x12\x03\x1a\x01\x00") == PacketPong()


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "body_hex",
    [
        "",  # empty Packet: no oneof set
        "2000",  # only an unknown field: no oneof set
        "0800",  # Packet field 1 (ping) with wire type 0
        "1a0508301001",  # PacketMsg length runs past the end
        "1a",  # truncated length
        "1a0110",  # truncated eof varint
        "1a020a00",  # PacketMsg.channel_id with wire type 2
        "1a021100",  # PacketMsg.eof with wire type 1
        "1a02180a",  # PacketMsg.data with wire type 0
        "1a031a0561",  # PacketMsg.data length past the end
        "1a0b08ffffffffffffffffff01",  # channel_id = -1 (10-byte varint)
        "1a03088002",  # channel_id = 256
        "1a0108",  # channel_id varint missing
        "0c",  # stray end group
        "1a020c00",  # end group inside PacketMsg
        "00",  # field number 0
        "1a0100",  # field number 0 inside PacketMsg
        "2600",  # unknown field with wire type 6
        "2700",  # unknown field with wire type 7
        "1e00",  # known field with wire type 6
        "23",  # start group never closed
        "2308002c24",  # end group when none is open (after a closed one)
        "290000",  # fixed64 field cut short
        "1a0d08" + "ff" * 11 + "01",  # varint longer than 10 bytes
    ],
)
def test_malformed_packets_raise_remote_protocol_error(body_hex: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_packet(bytes.fromhex(body_hex))


def test_error_messages_say_what_arrived() -> None:
    with pytest.raises(RemoteProtocolError, match="no ping, pong or msg"):
        decode_packet(b"")
    with pytest.raises(RemoteProtocolError, match="unknown channel -1"):
        decode_packet(bytes.fromhex("1a0b08ffffffffffffffffff01"))
    with pytest.raises(RemoteProtocolError, match="wire type 2"):
        decode_packet(bytes.fromhex("1a020a00"))


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_remote_protocol_error(body: bytes) -> None:
    try:
        result = decode_packet(body)
    except RemoteProtocolError:
        return
    assert isinstance(result, PacketPing | PacketPong | PacketMsg)
    if isinstance(result, PacketMsg):
        assert 0 <= result.channel_id <= 255


@given(packets, st.data())
def test_mutated_packets_raise_only_remote_protocol_error(
    packet: Packet, data: st.DataObject
) -> None:
    body = bytearray(_strip_prefix(_encode(packet)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and body:
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut" and body:
            i = data.draw(st.integers(0, len(body) - 1))
            del body[i:]
        else:
            i = data.draw(st.integers(0, len(body)))
            body[i:i] = data.draw(st.binary(min_size=1, max_size=3))
    try:
        result = decode_packet(bytes(body))
    except RemoteProtocolError:
        return
    assert isinstance(result, PacketPing | PacketPong | PacketMsg)


# ------------------------------------------------ the one parser: scan_packet (offsets)


@given(
    st.one_of(
        packets.map(lambda p: _to_pb(p).SerializeToString()),
        non_canonical_msgs().map(lambda case: case[1]),
    ),
    st.binary(max_size=8),
    st.binary(max_size=8),
)
def test_scan_packet_agrees_with_protobuf(body: bytes, before: bytes, after: bytes) -> None:
    """The single parser, on a body inside a larger buffer, reads what protobuf reads."""
    expected = _from_pb(conn_pb2.Packet.FromString(body))
    buf = before + body + after
    span = scan_packet(buf, len(before), len(before) + len(body))
    kind, _, _, data_start, data_end = span
    if kind == KIND_MSG:
        assert len(before) <= data_start <= data_end <= len(before) + len(body)
    assert _span_to_packet(buf, span) == expected
    assert decode_packet(body) == expected


@given(st.binary(max_size=48))
def test_scan_packet_never_accepts_what_protobuf_refuses(body: bytes) -> None:
    """Random bytes: if ours decodes them, protobuf decodes them to the same Packet."""
    try:
        span = scan_packet(body, 0, len(body))
    except RemoteProtocolError:
        return
    try:
        pb = conn_pb2.Packet.FromString(body)
    except Exception:  # upb refuses some encodings Go accepts (e.g. 10-byte lengths)
        return
    assert _span_to_packet(body, span) == _from_pb(pb)
