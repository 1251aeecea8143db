"""The Transport: listen, dial, and upgrade a TCP socket to an authenticated peer link.

Follows behaviour.md §1.5 and wire.md §5, §7. The upgrade pipeline is:

1. SecretConnection handshake (``handshake_timeout_s``);
2. when dialing, the authenticated node ID must equal the dialed ID;
3. NodeInfo exchange (a fresh ``handshake_timeout_s``): both sides write their
   DefaultNodeInfo as one uvarint-delimited message and read the peer's (≤ 10240 bytes);
4. the peer's NodeInfo is validated, its ID must equal the authenticated ID, it must not
   be our own ID, and it must be compatible with ours.

Every failure closes the socket and raises :class:`~cometp2p.errors.RejectedError` with a
:class:`~cometp2p.errors.RejectReason`. Deviation from CometBFT (quirk Q1.1): the
configured ``handshake_timeout`` and ``dial_timeout`` are honoured instead of Go's
hard-coded 3 s and 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cometp2p.aio.secret_connection import SecretConnection, secret_handshake
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    AuthenticationError,
    CometP2PError,
    ConnectionBrokenError,
    HandshakeError,
    HandshakeStage,
    IncompatiblePeerError,
    NodeInfoInvalidError,
    RejectedError,
    RejectReason,
)
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import MAX_NODE_INFO_BYTES, NodeInfo
from cometp2p.wire.varint import DelimitedReader, encode_delimited

__all__ = ["Transport", "UpgradedConnection", "exchange_node_info"]

logger = logging.getLogger(__name__)

ConnFilter = Callable[[str, int], Awaitable[None]]
"""``async filter(remote_ip, remote_port)``; raise to refuse the connection."""


@dataclass(frozen=True, slots=True)
class UpgradedConnection:
    """A socket that passed the whole upgrade pipeline.

    Attributes:
        secret: the authenticated SecretConnection.
        node_info: the peer's validated, compatible NodeInfo.
        leftover: decrypted bytes received after the NodeInfo (the first Packets).
        outbound: True if we dialed.
        dialed_address: the address we dialed (outbound only).
    """

    secret: SecretConnection
    node_info: NodeInfo
    leftover: bytes
    outbound: bool
    dialed_address: NetAddress | None


async def exchange_node_info(
    secret: SecretConnection, ours: NodeInfo, *, timeout_s: float
) -> tuple[NodeInfo, bytes]:
    """Send our NodeInfo and read the peer's (wire.md §5.2).

    Returns:
        ``(peer_node_info, leftover_plaintext)``; the NodeInfo is decoded, not validated.

    Raises:
        HandshakeError: timeout, EOF, or an oversized/undecodable NodeInfo.
        ConnectionBrokenError: an OS error on the socket.
    """
    secret.write(encode_delimited(ours.encode()))
    reader = DelimitedReader(MAX_NODE_INFO_BYTES)
    try:
        async with asyncio.timeout(timeout_s):
            await secret.drain()
            while (body := reader.next_message()) is None:
                data = await secret.read_some()
                if not data:
                    raise HandshakeError(
                        HandshakeStage.NODE_INFO, "peer closed the connection before its NodeInfo"
                    )
                reader.feed(data)
    except TimeoutError as exc:
        raise HandshakeError(
            HandshakeStage.NODE_INFO, f"no NodeInfo within {timeout_s:g} s"
        ) from exc
    except HandshakeError:
        raise
    except CometP2PError as exc:
        if isinstance(exc, ConnectionBrokenError):
            raise
        raise HandshakeError(HandshakeStage.NODE_INFO, str(exc)) from exc
    return NodeInfo.decode(body), reader.take_rest()


class Transport:
    """Dials and accepts TCP connections and upgrades them to authenticated peers.

    Args:
        node_key: our identity.
        node_info: the NodeInfo we send (our ID, network, channels, listen address).
        handshake_timeout_s: bound on each of the SecretConnection handshake and the
            NodeInfo exchange (``[p2p] handshake_timeout``).
        dial_timeout_s: bound on the TCP connect (``[p2p] dial_timeout``).
        max_incoming_handshakes: cap on inbound sockets still in the upgrade pipeline;
            extra connections are closed at once.
        conn_filters: run on every socket (both directions) before any handshake byte.
    """

    def __init__(
        self,
        node_key: NodeKey,
        node_info: NodeInfo,
        *,
        handshake_timeout_s: float = 20.0,
        dial_timeout_s: float = 3.0,
        max_incoming_handshakes: int = 64,
        conn_filters: list[ConnFilter] | None = None,
    ) -> None:
        self.node_key = node_key
        self.node_info = node_info
        self.handshake_timeout_s = handshake_timeout_s
        self.dial_timeout_s = dial_timeout_s
        self.max_incoming_handshakes = max_incoming_handshakes
        self.conn_filters = list(conn_filters or [])
        self._server: asyncio.Server | None = None
        self._in_handshake = 0

    # ------------------------------------------------------------------ listening

    async def listen(
        self,
        host: str,
        port: int,
        on_connection: Callable[[UpgradedConnection], Awaitable[None]],
        on_rejected: Callable[[CometP2PError, tuple[str, int]], None] | None = None,
    ) -> tuple[str, int]:
        """Start accepting on ``host:port`` (port 0 = ephemeral).

        Each accepted socket is upgraded in its own task (no head-of-line blocking), then
        handed to ``on_connection``; failures go to ``on_rejected``.

        Returns:
            The bound ``(host, port)``.
        """

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = _peername(writer)
            if self._in_handshake >= self.max_incoming_handshakes:
                writer.close()
                if on_rejected:
                    on_rejected(
                        RejectedError(RejectReason.LIMIT, "too many inbound handshakes"), peer
                    )
                return
            self._in_handshake += 1
            try:
                upgraded = await self.upgrade(reader, writer, dialed=None)
            except CometP2PError as exc:
                if on_rejected:
                    on_rejected(exc, peer)
                return
            finally:
                self._in_handshake -= 1
            await on_connection(upgraded)

        self._server = await asyncio.start_server(handle, host, port)
        sock = self._server.sockets[0]
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop accepting new connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ dialing

    async def dial(self, address: NetAddress) -> UpgradedConnection:
        """Dial ``address`` and upgrade the connection.

        Raises:
            ConnectionBrokenError: the TCP connect failed or timed out.
            RejectedError: the upgrade pipeline refused the peer.
        """
        try:
            async with asyncio.timeout(self.dial_timeout_s):
                reader, writer = await asyncio.open_connection(str(address.ip), address.port)
        except TimeoutError as exc:
            raise ConnectionBrokenError(
                f"dial {address} timed out after {self.dial_timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise ConnectionBrokenError(f"dial {address} failed: {exc}") from exc
        return await self.upgrade(reader, writer, dialed=address)

    # ------------------------------------------------------------------ upgrade

    async def upgrade(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        dialed: NetAddress | None,
    ) -> UpgradedConnection:
        """Run the upgrade pipeline on a fresh TCP connection (behaviour.md §1.5).

        Raises:
            RejectedError: with the reason of the failing step; the socket is closed.
        """
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ip, port = _peername(writer)
        try:
            for conn_filter in self.conn_filters:
                await conn_filter(ip, port)
        except CometP2PError as exc:
            writer.close()
            raise RejectedError(RejectReason.FILTERED, str(exc)) from exc

        try:
            secret = await secret_handshake(
                reader, writer, self.node_key, timeout_s=self.handshake_timeout_s
            )
        except CometP2PError as exc:
            writer.close()
            raise RejectedError(
                RejectReason.AUTH_FAILURE, f"secret connection failed: {exc}"
            ) from exc

        try:
            return await self._after_secret(secret, dialed)
        except BaseException:
            with contextlib.suppress(Exception):
                await secret.close()
            raise

    async def _after_secret(
        self, secret: SecretConnection, dialed: NetAddress | None
    ) -> UpgradedConnection:
        remote_id = secret.remote_node_id
        if dialed is not None and dialed.id != remote_id:
            raise RejectedError(
                RejectReason.AUTH_FAILURE,
                f"dialed ID mismatch: dialed {dialed.id}, authenticated {remote_id}",
                node_id=remote_id,
            )
        try:
            info, leftover = await exchange_node_info(
                secret, self.node_info, timeout_s=self.handshake_timeout_s
            )
        except CometP2PError as exc:
            raise RejectedError(
                RejectReason.AUTH_FAILURE, f"NodeInfo exchange failed: {exc}", node_id=remote_id
            ) from exc
        try:
            info.validate()
        except NodeInfoInvalidError as exc:
            raise RejectedError(
                RejectReason.NODE_INFO_INVALID, str(exc), node_id=remote_id
            ) from exc
        if info.node_id != remote_id:
            raise RejectedError(
                RejectReason.AUTH_FAILURE,
                f"NodeInfo ID {info.node_id} differs from authenticated ID {remote_id}",
                node_id=remote_id,
            )
        if info.node_id == self.node_info.node_id:
            raise RejectedError(RejectReason.SELF, "connected to ourselves", node_id=remote_id)
        try:
            self.node_info.compatible_with(info)
        except IncompatiblePeerError as exc:
            raise RejectedError(RejectReason.INCOMPATIBLE, str(exc), node_id=remote_id) from exc
        except AuthenticationError as exc:  # pragma: no cover - defensive
            raise RejectedError(RejectReason.AUTH_FAILURE, str(exc), node_id=remote_id) from exc
        return UpgradedConnection(
            secret=secret,
            node_info=info,
            leftover=leftover,
            outbound=dialed is not None,
            dialed_address=dialed,
        )


def _peername(writer: asyncio.StreamWriter) -> tuple[str, int]:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "", 0
