"""Unsigned LEB128 varints and uvarint-delimited messages (wire.md §2.1).

Every message above TCP (the ephemeral key, AuthSigMessage, NodeInfo and each
MConnection ``Packet``) travels as ``uvarint(len(body)) || body``. The reader enforces a
maximum body length *before* buffering the body, as Go's ``protoio`` reader does.

Pure functions and one small sans-IO buffer; no IO.
"""

from __future__ import annotations

from typing import Final

from cometp2p.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_UVARINT_BYTES",
    "DelimitedReader",
    "decode_uvarint",
    "encode_delimited",
    "encode_uvarint",
]

MAX_UVARINT_BYTES: Final = 10
"""A uint64 needs at most 10 LEB128 bytes."""

_ONE_BYTE: Final = tuple(bytes([i]) for i in range(128))


def encode_uvarint(value: int) -> bytes:
    """Encode ``value`` (0 <= value < 2**64) as unsigned LEB128.

    Raises:
        LocalProtocolError: if ``value`` is negative or does not fit in 64 bits.
    """
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    if value < 0 or value >= 1 << 64:
        raise LocalProtocolError(f"uvarint out of range: expected 0 <= value < 2**64, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode a uvarint starting at ``buf[pos]``.

    Returns:
        ``(value, next_pos)``, or ``None`` if ``buf`` ends before the varint does.

    Raises:
        RemoteProtocolError: if the varint is longer than 10 bytes or overflows 64 bits.
    """
    end = len(buf)
    if pos < end:
        b = buf[pos]
        if b < 0x80:  # the overwhelmingly common case: a length below 128
            return b, pos + 1
    result = 0
    shift = 0
    i = pos
    while i < end:
        b = buf[i]
        i += 1
        if i - pos > MAX_UVARINT_BYTES or (i - pos == MAX_UVARINT_BYTES and b > 1):
            raise RemoteProtocolError("uvarint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
    return None


def encode_delimited(body: bytes) -> bytes:
    """Return ``uvarint(len(body)) || body``."""
    return encode_uvarint(len(body)) + body


class DelimitedReader:
    """Incremental splitter of a byte stream into uvarint-delimited bodies.

    Feed bytes with :meth:`feed`, then pull complete bodies with :meth:`next_message`.
    The same bodies come out however the stream is split.

    Args:
        max_size_bytes: the largest body accepted; a longer declared length raises
            before any of the body is buffered.
    """

    __slots__ = ("_buf", "_pos", "max_size_bytes")

    def __init__(self, max_size_bytes: int) -> None:
        self.max_size_bytes = max_size_bytes
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as part of a message."""
        return len(self._buf) - self._pos

    def next_message(self) -> bytes | None:
        """Return the next complete body, or ``None`` if more bytes are needed.

        Raises:
            RemoteProtocolError: the declared length exceeds ``max_size_bytes`` or the
                varint is malformed.
        """
        buf = self._buf
        decoded = decode_uvarint(buf, self._pos)
        if decoded is None:
            if len(buf) - self._pos >= MAX_UVARINT_BYTES:
                raise RemoteProtocolError("uvarint length prefix longer than 10 bytes")
            return None
        length, start = decoded
        if length > self.max_size_bytes:
            raise RemoteProtocolError(
                f"message exceeds max size: declared {length} bytes, limit {self.max_size_bytes}"
            )
        end = start + length
        if end > len(buf):
            return None
        body = bytes(buf[start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end > 65536:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return body

    def take_rest(self) -> bytes:
        """Return and clear whatever is buffered past the last returned message."""
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest
