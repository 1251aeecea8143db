"""Sealing and opening SecretConnection frames, sans-IO (wire.md §3.6).

One responsibility: turn a plaintext byte stream into 1044-byte ChaCha20-Poly1305 frames
and back. Each frame carries ``LE32(n) || n payload bytes || zero padding`` (1028 bytes,
n <= 1024) sealed under the nonce ``00000000 || LE64(counter)``; each direction has its
own key and counter, both starting at 0 and never wrapping.

This is the hot path of every connection: one AEAD object per direction, nonces packed
with a precompiled :class:`struct.Struct`, whole frames sliced without per-byte work, and
all frames of one write joined into a single buffer for a single socket write.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from cometp2p.errors import FrameError, LocalProtocolError

__all__ = [
    "FRAME_KEY_BYTES",
    "FRAME_PAYLOAD_MAX_BYTES",
    "FRAME_PLAINTEXT_BYTES",
    "MAX_FRAME_COUNTER",
    "SEALED_FRAME_BYTES",
    "FrameOpener",
    "FrameSealer",
    "frame_nonce",
]

FRAME_KEY_BYTES: Final = 32
FRAME_PAYLOAD_MAX_BYTES: Final = 1024
"""``dataMaxSize``: payload bytes per frame."""
FRAME_LENGTH_BYTES: Final = 4
FRAME_PLAINTEXT_BYTES: Final = FRAME_LENGTH_BYTES + FRAME_PAYLOAD_MAX_BYTES
"""``totalFrameSize``: every frame is padded to this many plaintext bytes."""
FRAME_TAG_BYTES: Final = 16
SEALED_FRAME_BYTES: Final = FRAME_PLAINTEXT_BYTES + FRAME_TAG_BYTES
"""What every frame occupies on the wire: 1044 bytes."""
MAX_FRAME_COUNTER: Final = 2**64 - 2
"""The last counter a frame may use. Go seals with 2**64 - 1 but panics before writing it
(``incrNonce``), so no frame with that nonce ever reaches the wire."""

_NONCE: Final = struct.Struct("<4xQ")
_pack_nonce: Final = _NONCE.pack
_unpack_length: Final = struct.Struct("<I").unpack_from
_FULL_FRAME_HEADER: Final = FRAME_PAYLOAD_MAX_BYTES.to_bytes(FRAME_LENGTH_BYTES, "little")
_ZERO_PADDING: Final = bytes(FRAME_PAYLOAD_MAX_BYTES)


def frame_nonce(counter: int) -> bytes:
    """Return the 12-byte AEAD nonce of frame number ``counter``: ``00000000 || LE64``.

    Raises:
        LocalProtocolError: if ``counter`` is outside 0..2**64 - 1.
    """
    if not 0 <= counter < 2**64:
        raise LocalProtocolError(f"frame counter must be in 0..2**64-1, got {counter}")
    return _pack_nonce(counter)


def _make_aead(key: bytes, counter: int) -> ChaCha20Poly1305:
    if len(key) != FRAME_KEY_BYTES:
        raise LocalProtocolError(f"frame key must be {FRAME_KEY_BYTES} bytes, got {len(key)}")
    if not 0 <= counter <= MAX_FRAME_COUNTER + 1:
        raise LocalProtocolError(f"frame counter must be in 0..2**64-1, got {counter}")
    return ChaCha20Poly1305(bytes(key))


class FrameSealer:
    """Seals the outgoing plaintext stream of one SecretConnection direction.

    Args:
        key: the 32-byte send key (wire.md §3.2 step 7).
        counter: the nonce counter of the next frame; 0 for a new connection. Tests use
            it to reach the overflow limit.

    Raises:
        LocalProtocolError: if ``key`` is not 32 bytes or ``counter`` is out of range.
    """

    __slots__ = ("_aead", "_counter")

    def __init__(self, key: bytes, *, counter: int = 0) -> None:
        self._aead = _make_aead(key, counter)
        self._counter = counter

    @property
    def counter(self) -> int:
        """The nonce counter the next frame will use (= frames sealed so far from 0)."""
        return self._counter

    def seal(self, data: bytes | bytearray | memoryview) -> bytes:
        """Seal ``data`` into consecutive 1044-byte frames.

        ``data`` is cut into 1024-byte chunks (the last may be shorter); each chunk
        becomes one frame, so ``len(result) == 1044 * ceil(len(data) / 1024)``. Empty
        input yields no frame at all: a zero-length frame confuses Go's readers (§3.6).

        Args:
            data: plaintext of any length.

        Returns:
            The frames concatenated, ready for one socket write.

        Raises:
            LocalProtocolError: if sealing would use a nonce counter past
                :data:`MAX_FRAME_COUNTER`; nothing is sealed in that case.
        """
        size = len(data)
        if not size:
            return b""
        frames_needed = -(-size // FRAME_PAYLOAD_MAX_BYTES)
        first = self._counter
        if first + frames_needed > MAX_FRAME_COUNTER + 1:
            raise LocalProtocolError(
                f"send nonce counter exhausted: {frames_needed} frames needed from counter "
                f"{first}, last usable counter is {MAX_FRAME_COUNTER}"
            )
        self._counter = first + frames_needed
        encrypt = self._aead.encrypt
        full = size // FRAME_PAYLOAD_MAX_BYTES
        full_end = full * FRAME_PAYLOAD_MAX_BYTES
        header = _FULL_FRAME_HEADER
        frames = [
            encrypt(nonce, header + data[offset : offset + FRAME_PAYLOAD_MAX_BYTES], None)
            for nonce, offset in zip(
                map(_pack_nonce, range(first, first + full)),
                range(0, full_end, FRAME_PAYLOAD_MAX_BYTES),
                strict=True,
            )
        ]
        if full_end != size:
            tail = data[full_end:]
            tail_len = size - full_end
            plaintext = tail_len.to_bytes(FRAME_LENGTH_BYTES, "little") + tail
            frames.append(
                encrypt(_pack_nonce(first + full), plaintext + _ZERO_PADDING[tail_len:], None)
            )
        if len(frames) == 1:
            return frames[0]
        return b"".join(frames)


class FrameOpener:
    """Opens the incoming frame stream of one SecretConnection direction.

    Feed ciphertext in pieces of any size; plaintext comes out as soon as whole frames
    have arrived. The same plaintext comes out however the ciphertext is split.

    Args:
        key: the 32-byte receive key (wire.md §3.2 step 7).
        counter: the nonce counter of the next expected frame; 0 for a new connection.

    Raises:
        LocalProtocolError: if ``key`` is not 32 bytes or ``counter`` is out of range.
    """

    __slots__ = ("_aead", "_buffer", "_counter", "_dead")

    def __init__(self, key: bytes, *, counter: int = 0) -> None:
        self._aead = _make_aead(key, counter)
        self._counter = counter
        self._buffer = bytearray()
        self._dead: str | None = None

    @property
    def counter(self) -> int:
        """The nonce counter the next frame must have been sealed with."""
        return self._counter

    @property
    def buffered_bytes(self) -> int:
        """Ciphertext bytes held back because they do not yet make a whole frame."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed ciphertext; return the plaintext of every frame it completes.

        Args:
            data: the next ciphertext bytes; ``b""`` signals end of stream.

        Returns:
            The payload bytes of all newly completed frames in order (``b""`` if none).
            Frames with a zero length field contribute nothing.

        Raises:
            FrameError: a frame failed authentication, declared more than 1024 payload
                bytes or would need a counter past :data:`MAX_FRAME_COUNTER`, or the
                stream ended inside a frame. Plaintext of earlier frames in the same call
                is discarded with it; the opener is dead afterwards.
            LocalProtocolError: if called after a failure or after end of stream.
        """
        if self._dead is not None:
            raise LocalProtocolError(f"frame opener is no longer usable: {self._dead}")
        if not data:
            return self._end_of_stream()
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray | memoryview = buffer
        else:
            source = data
        total = len(source)
        frame_count = total // SEALED_FRAME_BYTES
        consumed = frame_count * SEALED_FRAME_BYTES
        try:
            plaintext = self._open_frames(source, frame_count) if frame_count else b""
        except FrameError as exc:
            self._dead = str(exc)
            self._buffer = bytearray()
            raise
        if source is buffer:
            del buffer[:consumed]
        elif consumed != total:
            buffer += source[consumed:]
        return plaintext

    def _open_frames(self, source: bytes | bytearray | memoryview, frame_count: int) -> bytes:
        counter = self._counter
        if counter + frame_count > MAX_FRAME_COUNTER + 1:
            raise FrameError(
                f"receive nonce counter exhausted at {counter}: a frame would need a counter "
                f"past {MAX_FRAME_COUNTER}"
            )
        decrypt = self._aead.decrypt
        payloads: list[bytes] = []
        with memoryview(source) as view:
            try:
                for offset in range(0, frame_count * SEALED_FRAME_BYTES, SEALED_FRAME_BYTES):
                    frame = decrypt(
                        _pack_nonce(counter), view[offset : offset + SEALED_FRAME_BYTES], None
                    )
                    counter += 1
                    length = _unpack_length(frame)[0]
                    if length == FRAME_PAYLOAD_MAX_BYTES:
                        payloads.append(frame[FRAME_LENGTH_BYTES:])
                    elif length > FRAME_PAYLOAD_MAX_BYTES:
                        raise FrameError(
                            f"frame {counter - 1} declares {length} payload bytes, "
                            f"expected at most {FRAME_PAYLOAD_MAX_BYTES}"
                        )
                    elif length:
                        payloads.append(frame[FRAME_LENGTH_BYTES : FRAME_LENGTH_BYTES + length])
            except InvalidTag:
                raise FrameError(
                    f"frame {counter} failed authentication (tampered, replayed, reordered "
                    "or sealed with another key)"
                ) from None
        self._counter = counter
        if len(payloads) == 1:
            return payloads[0]
        return b"".join(payloads)

    def _end_of_stream(self) -> bytes:
        pending = len(self._buffer)
        self._buffer = bytearray()
        if pending:
            message = (
                f"stream ended inside frame {self._counter}: got {pending} of "
                f"{SEALED_FRAME_BYTES} bytes"
            )
            self._dead = message
            raise FrameError(message)
        self._dead = "end of stream already received"
        return b""
