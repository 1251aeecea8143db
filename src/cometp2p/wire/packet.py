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
parses with :func:`scan_packet`, which returns offsets into the received buffer instead
of a copy (:func:`decode_packet` is the same parser, building the object).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cometp2p.errors import LocalProtocolError, RemoteProtocolError
from cometp2p.wire.varint import encode_uvarint

__all__ = [
    "KIND_MSG",
    "KIND_PING",
    "KIND_PONG",
    "MAX_CHANNEL_ID",
    "PING_FRAME",
    "PONG_FRAME",
    "Packet",
    "PacketMsg",
    "PacketPing",
    "PacketPong",
    "PacketSpan",
    "decode_packet",
    "encode_packet_msg",
    "max_packet_msg_size",
    "packet_msg_body_size",
    "packet_msg_header",
    "scan_packet",
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


# Kinds of Packet returned by scan_packet: the oneof field numbers of wire.md §4.6.
KIND_PING: Final = 1
KIND_PONG: Final = 2
KIND_MSG: Final = 3

PacketSpan = tuple[int, int, bool, int, int]
"""What :func:`scan_packet` returns: ``(kind, channel_id, eof, data_start, data_end)``."""

_PING_SPAN: Final[PacketSpan] = (KIND_PING, 0, False, 0, 0)
_PONG_SPAN: Final[PacketSpan] = (KIND_PONG, 0, False, 0, 0)


def _scan_msg(buf: _Buf, pos: int, end: int) -> PacketSpan:
    channel_id = 0
    eof = False
    data_start = data_end = pos
    while pos < end:
        field, wire_type, pos = _tag(buf, pos, end, "PacketMsg")
        if field == 1 or field == 2:
            if wire_type != 0:
                name = "channel_id" if field == 1 else "eof"
                raise RemoteProtocolError(
                    f"malformed Packet: PacketMsg.{name} has wire type {wire_type}, "
                    "expected 0 (varint)"
                )
            value, pos = _varint(buf, pos, end)
            if field == 2:
                eof = value != 0
                continue
            channel_id = value & 0xFFFFFFFF  # int32 on the wire: keep the low 32 bits
            if channel_id >= 1 << 31:
                channel_id -= 1 << 32
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
    return KIND_MSG, channel_id, eof, data_start, data_end


def _scan_general(buf: _Buf, start: int, end: int) -> PacketSpan:
    """Any valid proto3 encoding of a Packet, the way Go's generated Unmarshal reads it."""
    pos = start
    result: PacketSpan | None = None
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
                result = _scan_msg(buf, pos, sub_end)
            elif field == 1:
                _decode_empty(buf, pos, sub_end, "PacketPing")
                result = _PING_SPAN
            else:
                _decode_empty(buf, pos, sub_end, "PacketPong")
                result = _PONG_SPAN
            pos = sub_end
        else:
            pos = _skip(buf, pos, end, wire_type)
    if result is None:
        raise RemoteProtocolError(
            f"unknown message type: Packet of {end - start} bytes has no ping, pong or msg set"
        )
    return result


def scan_packet(buf: _Buf, start: int, end: int) -> PacketSpan:
    """Parse the Packet body ``buf[start:end]`` into offsets, copying nothing.

    The one Packet parser (of :func:`decode_packet` and MConnection). Go's canonical
    layout ``1a L [08 ch] [10 01] [1a len data]`` (wire.md §4.6) takes a fast path of a
    few byte comparisons; any other valid proto3 encoding goes through the general parser
    (unknown fields skipped, last occurrence wins, varints of any legal length).

    Args:
        buf: the buffer holding the body.
        start: index of the body's first byte.
        end: index just past its last byte (``start <= end <= len(buf)``).

    Returns:
        ``(kind, channel_id, eof, data_start, data_end)``: ``kind`` is :data:`KIND_PING`,
        :data:`KIND_PONG` or :data:`KIND_MSG`; for a PacketMsg the chunk payload is
        ``buf[data_start:data_end]`` (other kinds: zeros).

    Raises:
        RemoteProtocolError: the body is not a valid ``Packet``, sets no oneof member,
            or carries a channel id outside 0..255.
    """
    # Canonical PacketMsg; any mismatch falls through to the general parser.
    if end - start > 2 and buf[start] == 0x1A:
        p = buf[start + 1]  # the PacketMsg length must span exactly to `end`
        if p < 0x80:
            p = start + 2 if start + 2 + p == end else -1
        else:
            b = buf[start + 2]
            p = (p & 0x7F) | (b << 7) if b < 0x80 else -1
            p = start + 3 if start + 3 + p == end else -1
        if 0 < p < end:
            cid = 0
            eof = False
            if buf[p] == 0x08 and p + 1 < end:
                cid = buf[p + 1]
                p += 2
                if cid >= 0x80:  # ids 128..255 are two-byte varints ending in 0x01
                    cid = (cid & 0x7F) | 0x80 if p < end and buf[p] == 0x01 else -1
                    p += 1
            if p + 1 < end and buf[p] == 0x10 and buf[p + 1] == 0x01:
                eof = True
                p += 2
            if p == end and cid >= 0:
                return KIND_MSG, cid, eof, end, end
            if p + 1 < end and buf[p] == 0x1A and cid >= 0:
                dlen = buf[p + 1]
                p += 2
                if dlen >= 0x80:
                    b = buf[p] if p < end else 0x80
                    dlen = (dlen & 0x7F) | (b << 7) if b < 0x80 else 0
                    p += 1
                if dlen and p + dlen == end:
                    return KIND_MSG, cid, eof, p, end
    elif end - start == 2 and buf[start + 1] == 0:
        if buf[start] == 0x0A:
            return _PING_SPAN
        if buf[start] == 0x12:
            return _PONG_SPAN
    return _scan_general(buf, start, end)


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
    kind, channel_id, eof, data_start, data_end = scan_packet(body, 0, len(body))
    if kind == KIND_MSG:
        return PacketMsg(channel_id, eof, bytes(body[data_start:data_end]))
    return _PING if kind == KIND_PING else _PONG
