"""SecretConnection over asyncio streams (wire.md §3, §5.3).

One responsibility: move bytes between an asyncio ``StreamReader``/``StreamWriter`` pair
and the sans-IO pieces. :func:`secret_handshake` drives
:class:`~cometp2p.sansio.secret_connection.SecretHandshake` under a deadline (Go gives the
whole handshake 3 s) and returns a :class:`SecretConnection`, whose reads and writes are
a thin layer over :class:`~cometp2p.crypto.frames.FrameSealer` and
:class:`~cometp2p.crypto.frames.FrameOpener`. Reads take large chunks off the socket and
open every complete frame at once; a write seals all its frames into one buffer.

Foreign errors are translated here: ``OSError`` and end of stream become
:class:`~cometp2p.errors.ConnectionBrokenError` (chained), a timeout becomes a
:class:`~cometp2p.errors.HandshakeError` naming the stage.
"""

from __future__ import annotations

import asyncio
from typing import Final

from cometp2p.crypto.frames import FRAME_PAYLOAD_MAX_BYTES, SEALED_FRAME_BYTES
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    ConnectionBrokenError,
    ConnectionClosedError,
    HandshakeError,
    HandshakeStage,
    LocalProtocolError,
)
from cometp2p.sansio.secret_connection import (
    HandshakeComplete,
    SecretHandshake,
    SecretHandshakeStage,
)
from cometp2p.types import NodeID

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT_S", "SecretConnection", "secret_handshake"]

DEFAULT_HANDSHAKE_TIMEOUT_S: Final = 3.0
"""Go's deadline for the whole SecretConnection handshake (wire.md §5.3)."""

_READ_CHUNK_BYTES: Final = 64 * SEALED_FRAME_BYTES

_CLOSE_TIMEOUT_S: Final = 1.0
"""The longest :meth:`SecretConnection.close` waits for unsent bytes before it aborts."""
"""Ciphertext asked of the socket per read: 64 whole frames (~65 KiB)."""

_STAGE_OF: Final = {
    SecretHandshakeStage.AWAIT_EPHEMERAL_KEY: HandshakeStage.EPHEMERAL_KEY,
    SecretHandshakeStage.AWAIT_AUTH_SIG: HandshakeStage.AUTH_SIG,
}


def _address(value: object) -> tuple[str, int] | None:
    # IPv4 peers give (host, port), IPv6 peers (host, port, flowinfo, scope_id).
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


async def secret_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    node_key: NodeKey,
    *,
    timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
    first_bytes_timeout_s: float | None = None,
) -> SecretConnection:
    """Run the SecretConnection handshake (wire.md §3.2) on an open stream.

    Both sides call this; there is no dialer/listener difference. On failure the stream
    is left open for the caller to close.

    Args:
        reader: the TCP stream's reader.
        writer: the TCP stream's writer.
        node_key: our Ed25519 node key.
        timeout_s: deadline for the whole handshake, seconds.
        first_bytes_timeout_s: a shorter deadline for the peer's first bytes (its
            ephemeral key is sent at once by every honest peer), seconds; ``None``: only
            ``timeout_s``. An idle socket then holds a handshake slot this long at most.

    Returns:
        The authenticated :class:`SecretConnection`. The caller still checks the peer's
        node ID against the dialed ID and its NodeInfo (wire.md §7).

    Raises:
        HandshakeError: the peer sent bad bytes, or the deadline passed (the stage
            says which message was awaited).
        AuthenticationError: the peer's key or signature is unacceptable.
        ConnectionBrokenError: the peer closed the stream or the OS reported an error.
    """
    handshake = SecretHandshake(node_key)
    try:
        async with asyncio.timeout(timeout_s):
            complete = await _run_handshake(handshake, reader, writer, first_bytes_timeout_s)
    except _NoFirstBytesError as exc:
        raise HandshakeError(
            HandshakeStage.EPHEMERAL_KEY, f"no bytes from the peer within {exc.timeout_s:g} s"
        ) from exc
    except TimeoutError as exc:  # before OSError: TimeoutError is an OSError subclass
        stage = _STAGE_OF.get(handshake.stage, HandshakeStage.AUTH_SIG)
        raise HandshakeError(
            stage, f"timed out after {timeout_s} s {handshake.stage.value}"
        ) from exc
    except OSError as exc:
        raise ConnectionBrokenError(
            f"SecretConnection handshake failed {handshake.stage.value}: {exc!r}"
        ) from exc
    return SecretConnection(reader, writer, complete, node_key)


class _NoFirstBytesError(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.timeout_s = timeout_s


async def _run_handshake(
    handshake: SecretHandshake,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    first_bytes_timeout_s: float | None = None,
) -> HandshakeComplete:
    writer.write(handshake.data_to_send())
    await writer.drain()
    first = first_bytes_timeout_s
    while True:
        event = handshake.next_event()
        if event is not None:
            return event
        if first is not None:
            try:
                async with asyncio.timeout(first):
                    data = await reader.read(_READ_CHUNK_BYTES)
            except TimeoutError as exc:
                raise _NoFirstBytesError(first) from exc
            first = None
        else:
            data = await reader.read(_READ_CHUNK_BYTES)
        if not data:
            stage = handshake.stage
            try:
                handshake.receive_data(b"")
            except HandshakeError as exc:
                raise ConnectionBrokenError(
                    f"peer closed the connection during the SecretConnection handshake: {exc}"
                ) from exc
            raise LocalProtocolError(f"handshake ignored end of stream in stage {stage}")
        handshake.receive_data(data)
        out = handshake.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()


class SecretConnection:
    """An authenticated, encrypted byte stream to one peer (wire.md §3.6).

    Created by :func:`secret_handshake`. One task may read while another writes. The
    stream is a byte stream: message boundaries are the caller's business (uvarint
    delimiting, wire.md §5.1).

    Args:
        reader: the TCP stream's reader, positioned after the handshake.
        writer: the TCP stream's writer.
        complete: the handshake's result (keys, counters, leftover plaintext).
        node_key: our node key.
    """

    __slots__ = (
        "_closed",
        "_complete",
        "_eof",
        "_local_address",
        "_local_node_id",
        "_opener",
        "_pending",
        "_pending_pos",
        "_reader",
        "_remote_address",
        "_sealer",
        "_unopened",
        "_writer",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        complete: HandshakeComplete,
        node_key: NodeKey,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._complete = complete
        self._sealer = complete.sealer
        self._opener = complete.opener
        self._local_node_id = node_key.node_id
        self._pending = complete.leftover_plaintext
        self._pending_pos = 0
        self._unopened = complete.leftover_ciphertext
        self._eof = False
        self._closed = False
        # Captured now: a closed socket no longer reports its addresses.
        self._remote_address = _address(writer.get_extra_info("peername"))
        self._local_address = _address(writer.get_extra_info("sockname"))

    @property
    def remote_public_key(self) -> bytes:
        """The peer's authenticated 32-byte Ed25519 public key."""
        return self._complete.remote_public_key

    @property
    def remote_node_id(self) -> NodeID:
        """The peer's authenticated node ID (wire.md §6.1)."""
        return self._complete.remote_node_id

    @property
    def local_node_id(self) -> NodeID:
        """Our node ID."""
        return self._local_node_id

    def remote_address(self) -> tuple[str, int]:
        """The peer's socket address as ``(ip, port)``.

        Raises:
            ConnectionBrokenError: if the socket never reported a peer address.
        """
        if self._remote_address is None:
            raise ConnectionBrokenError("the socket has no peer address")
        return self._remote_address

    def local_address(self) -> tuple[str, int]:
        """Our socket address as ``(ip, port)``.

        Raises:
            ConnectionBrokenError: if the socket never reported a local address.
        """
        if self._local_address is None:
            raise ConnectionBrokenError("the socket has no local address")
        return self._local_address

    def write(self, data: bytes) -> None:
        """Seal ``data`` and buffer it in the transport, without waiting.

        All frames of one call go to the transport in one ``write``; call :meth:`drain`
        for back-pressure. Empty data writes nothing.

        Raises:
            ConnectionClosedError: if :meth:`close` was called.
            LocalProtocolError: if the send nonce counter is exhausted.
        """
        if self._closed:
            raise ConnectionClosedError("write on a SecretConnection we closed")
        if data:
            self._writer.write(self._sealer.seal(data))

    def write_buffer_size(self) -> int:
        """Bytes the transport holds that the socket did not take yet (0: all sent)."""
        return int(self._writer.transport.get_write_buffer_size())

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark.

        Raises:
            ConnectionClosedError: if :meth:`close` was called.
            ConnectionBrokenError: the peer or the network broke the connection.
        """
        if self._closed:
            raise ConnectionClosedError("drain on a SecretConnection we closed")
        try:
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionBrokenError(f"write to {self.remote_node_id} failed: {exc!r}") from exc

    async def read_some(self, max_bytes: int = 65536) -> bytes:
        """Return the next 1..``max_bytes`` plaintext bytes, or ``b""`` at end of stream.

        Args:
            max_bytes: upper bound on the returned length, at least 1.

        Raises:
            FrameError: a frame failed to open or the stream ended inside a frame.
            ConnectionClosedError: if :meth:`close` was called.
            ConnectionBrokenError: the OS reported an error on the socket.
            LocalProtocolError: if ``max_bytes`` < 1.
        """
        if max_bytes < 1:
            raise LocalProtocolError(f"max_bytes must be at least 1, got {max_bytes}")
        if self._pending:
            return self._take(self._pending, self._pending_pos, max_bytes)
        if self._closed:
            raise ConnectionClosedError("read on a SecretConnection we closed")
        if self._eof:
            return b""
        if self._unopened:
            ciphertext, self._unopened = self._unopened, b""
            plaintext = self._opener.receive_data(ciphertext)
            if plaintext:
                return self._take(plaintext, 0, max_bytes)
        want = max(
            _READ_CHUNK_BYTES, (max_bytes // FRAME_PAYLOAD_MAX_BYTES + 1) * SEALED_FRAME_BYTES
        )
        while True:
            try:
                ciphertext = await self._reader.read(want)
            except OSError as exc:
                raise ConnectionBrokenError(
                    f"read from {self.remote_node_id} failed: {exc!r}"
                ) from exc
            if not ciphertext:
                self._eof = True
                self._opener.receive_data(b"")  # raises FrameError inside a frame
                return b""
            plaintext = self._opener.receive_data(ciphertext)
            if plaintext:
                return self._take(plaintext, 0, max_bytes)

    async def read_exactly(self, n: int) -> bytes:
        """Return exactly ``n`` plaintext bytes.

        Raises:
            ConnectionBrokenError: the stream ended before ``n`` bytes arrived, or the OS
                reported an error.
            FrameError: a frame failed to open.
            ConnectionClosedError: if :meth:`close` was called.
            LocalProtocolError: if ``n`` is negative.
        """
        if n < 0:
            raise LocalProtocolError(f"read_exactly needs n >= 0, got {n}")
        parts: list[bytes] = []
        missing = n
        while missing:
            chunk = await self.read_some(missing)
            if not chunk:
                raise ConnectionBrokenError(
                    f"peer {self.remote_node_id} closed the stream after {n - missing} of {n} bytes"
                )
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    async def close(self) -> None:
        """Close the TCP stream; idempotent. Errors while closing are ignored.

        Bytes already written are flushed for at most 1 s; a peer that stops reading
        gets the socket aborted instead, so a close never hangs and never leaves the
        socket open (also when the caller is cancelled meanwhile).
        """
        self._closed = True
        self._pending = b""
        self._pending_pos = 0
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()
        except asyncio.CancelledError:
            self._writer.transport.abort()
            raise

    def _take(self, data: bytes, start: int, max_bytes: int) -> bytes:
        # Hand out the decrypted bytes without copying when they fit; otherwise keep the
        # rest (and where it starts) for the next read.
        end = start + max_bytes
        if end >= len(data):
            self._pending = b""
            self._pending_pos = 0
            return data if start == 0 else data[start:]
        self._pending = data
        self._pending_pos = end
        return data[start:end]
