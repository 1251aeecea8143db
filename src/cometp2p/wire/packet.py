"""Hand-rolled codec for the MConnection ``Packet`` (wire.md §2.2, §4.3, §4.6, §5.1).

Encoding produces exactly the bytes Go's gogoproto marshaler produces: fields in
ascending order, proto3 defaults omitted, the set oneof member always emitted (so a
Ping body is ``0a 00``). Every encoder here returns *delimited* bytes, i.e. with the
uvarint length prefix of wire.md §2.1 in front, ready to be written.

Decoding accepts any valid proto3 encoding a Go node would accept (unknown fields
skipped, fields in any order, last occurrence wins, varints of any legal length) and
follows Go's generated ``Unmarshal`` on the edge cases (wrong wire type for a known
field, field number 0, a stray end-group). Anything else raises
:class:`~cometp2p.errors.RemoteProtocolError`. The exact canonical layout a Go node
emits is recognised by a fast path; everything else goes through the general parser.

The MConnection hot path does not build one object per packet: it uses
:func:`packet_msg_header` to emit header + payload pieces into one ``b"".join`` and has
its own inlined canonical parser, falling back to :func:`decode_packet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cometp2p.errors import LocalProtocolError, RemoteProtocolError
from cometp2p.wire.varint import encode_uvarint

__all__ = [
    "MAX_CHANNEL_ID",
    "PING_FRAME",
    "PONG_FRAME",
    "Packet",
    "PacketMsg",
    "PacketPing",
    "PacketPong",
    "decode_packet",
    "encode_packet_msg",
    "max_packet_msg_size",
    "packet_msg_body_size",
    "packet_msg_header",
]

MAX_CHANNEL_ID: Final = 255
"""Channel ids are one byte on the Go side (wire.md §4.3, §8.4)."""

PING_FRAME: Final[bytes] = b"\x02\x0a\x00"
"""A delimited ``Packet{packet_ping: {}}`` (wire.md §4.6)."""

PONG_FRAME: Final[bytes] = b"\x02\x12\x00"
"""A delimited ``Packet{packet_pong: {}}`` (wire.md §4.6)."""

_Buf = bytes | bytearray | memoryview
_UINT64_MASK: Final = (1 << 64) - 1
_TABLE_SIZE: Final = 1 << 14
# Every uvarint below 2**14 (one or two bytes) precomputed: lengths of packets built
# from payloads up to 16 KiB come straight from this table on the hot path.
_UV: Final[tuple[bytes, ...]] = tuple(encode_uvarint(i) for i in range(_TABLE_SIZE))


def _uv(value: int) -> bytes:
    return _UV[value] if value < _TABLE_SIZE else encode_uvarint(value)


# PacketMsg fields 1 and 2 (channel_id, eof) as emitted, indexed [eof][channel_id].
_MSG_FIELDS: Final[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = (
    tuple((b"\x08" + _UV[ch] if ch else b"") for ch in range(MAX_CHANNEL_ID + 1)),
    tuple((b"\x08" + _UV[ch] if ch else b"") + b"\x10\x01" for ch in range(MAX_CHANNEL_ID + 1)),
)


@dataclass(frozen=True, slots=True)
class PacketPing:
    """A keep-alive request; the peer answers with :class:`PacketPong` (wire.md §8.5)."""


@dataclass(frozen=True, slots=True)
class PacketPong:
    """The answer to a :class:`PacketPing` (wire.md §8.5)."""


@dataclass(frozen=True, slots=True)
class PacketMsg:
    """One chunk of a channel message (wire.md §4.3).

    Attributes:
        channel_id: the channel byte, 0..255.
        eof: true on the last chunk of a message.
        data: the chunk payload (may be empty).
    """

    channel_id: int
    eof: bool
    data: bytes


Packet = PacketPing | PacketPong | PacketMsg
"""The decoded forms of the ``Packet`` oneof."""

_PING: Final = PacketPing()
_PONG: Final = PacketPong()


def _check_channel_id(channel_id: int) -> None:
    if not 0 <= channel_id <= MAX_CHANNEL_ID:
        raise LocalProtocolError(f"channel id must be 0..255, got {channel_id}")


def packet_msg_body_size(channel_id: int, eof: bool, data_len: int) -> int:
    """Length of the protobuf body of ``Packet{PacketMsg{...}}`` without the prefix.

    Args:
        channel_id: channel byte, 0..255.
        eof: whether the chunk is the last of its message.
        data_len: chunk payload length in bytes (>= 0).

    Raises:
        LocalProtocolError: ``channel_id`` outside 0..255 or ``data_len`` negative.
    """
    _check_channel_id(channel_id)
    if data_len < 0:
        raise LocalProtocolError(f"payload length must be >= 0, got {data_len}")
    inner = len(_MSG_FIELDS[eof][channel_id])
    if data_len:
        inner += 1 + len(_uv(data_len)) + data_len
    return 1 + len(_uv(inner)) + inner


def max_packet_msg_size(max_payload_bytes: int) -> int:
    """The largest Packet *body* (prefix excluded) a Go receiver accepts (wire.md §5.1).

    Go computes it as the marshaled size of ``Packet{PacketMsg{channel_id=1, eof=true,
    data=<max_payload_bytes bytes>}}``; it is the limit given to the delimited reader.

    Args:
        max_payload_bytes: ``max_packet_msg_payload_size`` in bytes (>= 1).

    Returns:
        The limit in bytes, e.g. 1034 for the default payload of 1024 bytes.

    Raises:
        LocalProtocolError: ``max_payload_bytes`` < 1.
    """
    if max_payload_bytes < 1:
        raise LocalProtocolError(f"max payload must be >= 1 byte, got {max_payload_bytes}")
    return packet_msg_body_size(1, True, max_payload_bytes)


def packet_msg_header(channel_id: int, eof: bool, data_len: int) -> bytes:
    """The delimited ``Packet{PacketMsg}`` up to (excluding) its ``data_len`` payload bytes.

    ``packet_msg_header(ch, eof, len(data)) + data`` equals
    :func:`encode_packet_msg` ``(ch, eof, data)``; the MConnection joins headers and
    payload slices itself so each payload byte is copied once. Headers are memoised.

    Args:
        channel_id: channel byte, 0..255.
        eof: whether the chunk is the last of its message.
        data_len: payload length in bytes (>= 0).

    Raises:
        LocalProtocolError: ``channel_id`` outside 0..255 or ``data_len`` negative.
    """
    if 0 <= channel_id <= MAX_CHANNEL_ID and data_len >= 0:
        header = _HEADERS.get((data_len << 9) | (channel_id << 1) | eof)
        if header is not None:
            return header
    return _build_header(channel_id, eof, data_len)


_HEADERS: Final[dict[int, bytes]] = {}
_HEADERS_MAX: Final = 1 << 16  # bounds the memo; payloads are <= max payload in practice


def _build_header(channel_id: int, eof: bool, data_len: int) -> bytes:
    _check_channel_id(channel_id)
    if data_len < 0:
        raise LocalProtocolError(f"payload length must be >= 0, got {data_len}")
    fields = _MSG_FIELDS[eof][channel_id]
    if data_len == 0:
        inner = len(fields)
        # inner <= 5 and the body <= 7 bytes: both lengths are single-byte varints.
        header = _UV[inner + 2] + b"\x1a" + _UV[inner] + fields
    else:
        dl = _uv(data_len)
        inner = len(fields) + 1 + len(dl) + data_len
        il = _uv(inner)
        header = b"".join((_uv(1 + len(il) + inner), b"\x1a", il, fields, b"\x1a", dl))
    if len(_HEADERS) < _HEADERS_MAX:
        _HEADERS[(data_len << 9) | (channel_id << 1) | eof] = header
    return header


def encode_packet_msg(channel_id: int, eof: bool, data: bytes | memoryview) -> bytes:
    """Encode one delimited ``Packet{PacketMsg{channel_id, eof, data}}`` (wire.md §4.6).

    Args:
        channel_id: channel byte, 0..255.
        eof: whether the chunk is the last of its message.
        data: the chunk payload.

    Returns:
        ``uvarint(len(body)) || body``, byte-identical to Go's output.

    Raises:
        LocalProtocolError: ``channel_id`` outside 0..255.
    """
    if 0 <= channel_id <= MAX_CHANNEL_ID:
        header = _HEADERS.get((len(data) << 9) | (channel_id << 1) | eof)
        if header is not None:
            return header + data
    return _build_header(channel_id, eof, len(data)) + data


# --------------------------------------------------------------------------- decoding


def _varint(buf: _Buf, pos: int, end: int) -> tuple[int, int]:
    """Read a varint the way Go's generated code does: <= 10 bytes, kept mod 2**64."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise RemoteProtocolError("malformed Packet: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _UINT64_MASK, pos
        shift += 7
        if shift >= 64:
            raise RemoteProtocolError("malformed Packet: varint longer than 10 bytes")


def _length(buf: _Buf, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a length prefix and check it fits in what is left of the enclosing message."""
    length, pos = _varint(buf, pos, end)
    if length > end - pos:
        raise RemoteProtocolError(
            f"malformed Packet: {what} declares {length} bytes but only {end - pos} remain"
        )
    return length, pos


def _tag(buf: _Buf, pos: int, end: int, message: str) -> tuple[int, int, int]:
    """Read a field tag; returns (field number, wire type, next position)."""
    tag, pos = _varint(buf, pos, end)
    wire_type = tag & 7
    if wire_type == 4:
        raise RemoteProtocolError(f"malformed Packet: end-group tag in {message}")
    # Go truncates the field number to int32 and rejects <= 0.
    field = (tag >> 3) & 0xFFFFFFFF
    if field == 0 or field >= 1 << 31:
        raise RemoteProtocolError(f"malformed Packet: illegal field number in {message}")
    return field, wire_type, pos


def _skip(buf: _Buf, pos: int, end: int, wire_type: int) -> int:
    """Skip one unknown field whose tag has been read; returns the next position."""
    depth = 0
    while True:
        if wire_type == 0:
            _, pos = _varint(buf, pos, end)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = _varint(buf, pos, end)
            pos += length
        elif wire_type == 5:
            pos += 4
        elif wire_type == 3:
            depth += 1
        elif wire_type == 4:
            if depth == 0:
                raise RemoteProtocolError("malformed Packet: unexpected end of group")
            depth -= 1
        else:
            raise RemoteProtocolError(f"malformed Packet: illegal wire type {wire_type}")
        if pos > end:
            raise RemoteProtocolError("malformed Packet: unknown field runs past the end")
        if depth == 0:
            return pos
        tag, pos = _varint(buf, pos, end)
        wire_type = tag & 7


def _decode_empty(buf: _Buf, pos: int, end: int, message: str) -> None:
    """Validate a PacketPing/PacketPong body: no known fields, unknown ones skipped."""
    while pos < end:
        _, wire_type, pos = _tag(buf, pos, end, message)
        pos = _skip(buf, pos, end, wire_type)


def _decode_msg(buf: _Buf, pos: int, end: int) -> PacketMsg:
    channel_id = 0
    eof = False
    data_start = data_end = 0
    while pos < end:
        field, wire_type, pos = _tag(buf, pos, end, "PacketMsg")
        if field == 1:
            if wire_type != 0:
                raise RemoteProtocolError(
                    f"malformed Packet: PacketMsg.channel_id has wire type {wire_type}, "
                    "expected 0 (varint)"
                )
            value, pos = _varint(buf, pos, end)
            channel_id = value & 0xFFFFFFFF  # int32 on the wire: keep the low 32 bits
            if channel_id >= 1 << 31:
                channel_id -= 1 << 32
        elif field == 2:
            if wire_type != 0:
                raise RemoteProtocolError(
                    f"malformed Packet: PacketMsg.eof has wire type {wire_type}, "
                    "expected 0 (varint)"
                )
            value, pos = _varint(buf, pos, end)
            eof = value != 0
        elif field == 3:
            if wire_type != 2:
                raise RemoteProtocolError(
                    f"malformed Packet: PacketMsg.data has wire type {wire_type}, "
                    "expected 2 (length-delimited)"
                )
            length, pos = _length(buf, pos, end, "PacketMsg.data")
            data_start, data_end = pos, pos + length
            pos = data_end
        else:
            pos = _skip(buf, pos, end, wire_type)
    if not 0 <= channel_id <= MAX_CHANNEL_ID:
        raise RemoteProtocolError(f"unknown channel {channel_id}: channel ids are 0..255")
    return PacketMsg(channel_id, eof, bytes(buf[data_start:data_end]))


def _decode_general(buf: _Buf) -> Packet:
    end = len(buf)
    pos = 0
    result: Packet | None = None
    while pos < end:
        field, wire_type, pos = _tag(buf, pos, end, "Packet")
        if field in (1, 2, 3):
            if wire_type != 2:
                raise RemoteProtocolError(
                    f"malformed Packet: oneof field {field} has wire type {wire_type}, "
                    "expected 2 (length-delimited)"
                )
            length, pos = _length(buf, pos, end, "Packet member")
            sub_end = pos + length
            # A repeated oneof member replaces the earlier one, as in Go's Unmarshal.
            if field == 3:
                result = _decode_msg(buf, pos, sub_end)
            elif field == 1:
                _decode_empty(buf, pos, sub_end, "PacketPing")
                result = _PING
            else:
                _decode_empty(buf, pos, sub_end, "PacketPong")
                result = _PONG
            pos = sub_end
        else:
            pos = _skip(buf, pos, end, wire_type)
    if result is None:
        raise RemoteProtocolError(
            f"unknown message type: Packet of {end} bytes has no ping, pong or msg set"
        )
    return result


def _decode_canonical(buf: _Buf) -> PacketMsg | None:
    """Parse the exact layout Go emits for a PacketMsg; None when it is anything else."""
    end = len(buf)
    if end < 2 or buf[0] != 0x1A:
        return None
    inner = buf[1]
    pos = 2
    if inner >= 0x80:
        if end < 3 or buf[2] >= 0x80:
            return None
        inner = (inner & 0x7F) | (buf[2] << 7)
        pos = 3
    if pos + inner != end:
        return None
    channel_id = 0
    if pos < end and buf[pos] == 0x08:
        if pos + 1 >= end:
            return None
        channel_id = buf[pos + 1]
        pos += 2
        if channel_id >= 0x80:
            if pos >= end or buf[pos] != 0x01:
                return None  # ids 128..255 end in 0x01; anything else is general
            pos += 1
            channel_id &= 0x7F
            channel_id |= 0x80
    eof = False
    if pos + 1 < end and buf[pos] == 0x10 and buf[pos + 1] == 0x01:
        eof = True
        pos += 2
    if pos == end:
        return PacketMsg(channel_id, eof, b"")
    if buf[pos] != 0x1A or pos + 1 >= end:
        return None
    length = buf[pos + 1]
    pos += 2
    if length >= 0x80:
        if pos >= end or buf[pos] >= 0x80:
            return None
        length = (length & 0x7F) | (buf[pos] << 7)
        pos += 1
    if pos + length != end or length == 0:
        return None
    return PacketMsg(channel_id, eof, bytes(buf[pos:end]))


def decode_packet(body: bytes | bytearray | memoryview) -> Packet:
    """Decode one ``Packet`` body (the bytes after the uvarint prefix).

    Args:
        body: the protobuf body of one delimited Packet.

    Returns:
        :class:`PacketPing`, :class:`PacketPong` or :class:`PacketMsg`.

    Raises:
        RemoteProtocolError: the body is not a valid ``Packet``, sets no oneof member
            ("unknown message type", as Go says), or carries a channel id outside 0..255.
    """
    if body == b"\x0a\x00":
        return _PING
    if body == b"\x12\x00":
        return _PONG
    fast = _decode_canonical(body)
    if fast is not None:
        return fast
    return _decode_general(body)
