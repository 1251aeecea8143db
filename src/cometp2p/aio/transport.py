"""The Transport: listen, dial, and upgrade a TCP socket to an authenticated peer link.

Follows behaviour.md §1.5 and wire.md §5, §7. Every socket, dialed or accepted, is first
checked against the *conn set* (the remote ``ip:port`` of every socket we hold, in
upgrade or as a peer) and the conn filters, then upgraded by the one upgrade pipeline,
:func:`~cometp2p.aio.upgrade.upgrade_stream` (SecretConnection handshake, dialed-ID check,
NodeInfo exchange, ``validate()``, exact ID equality, self check, ``compatible_with()``;
``handshake_timeout_s`` for the handshake and again for the NodeInfo exchange).

Every failure closes the socket, drops it from the conn set and raises
:class:`~cometp2p.errors.RejectedError` with a :class:`~cometp2p.errors.RejectReason`:
AUTH_FAILURE for the SecretConnection, the dialed ID and the NodeInfo ID;
HANDSHAKE_FAILURE when no NodeInfo arrived or it did not decode (Go says
"auth failure" there too); NODE_INFO_INVALID, SELF and INCOMPATIBLE.
A socket that passed stays in the conn set until :meth:`Transport.cleanup`.

Deviations from CometBFT v0.38, all deliberate:

* quirk Q1.1: the configured ``handshake_timeout`` and ``dial_timeout`` are honoured
  instead of Go's hard-coded 3 s and 1 s;
* quirk Q1.2: conn filters run concurrently under *one* ``filter_timeout_s``, not one
  fresh timer per result;
* the cap on inbound sockets counts sockets still in the upgrade pipeline only (the
  Switch enforces ``max_num_inbound_peers`` on upgraded peers); a socket over the cap is
  closed at once and reported with reason ``LIMIT`` instead of waiting in the backlog;
* handshake slots (issue #12): at most ``max_incoming_handshakes_per_ip`` inbound sockets
  of one remote IP are in the pipeline at once, and the peer's first handshake bytes
  must arrive within ``first_bytes_timeout_s`` (honest peers send their ephemeral key at
  once). Go lets 40 idle sockets of one IP lock every new inbound peer out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from cometp2p.aio.fuzz import SocketWrapper
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.aio.upgrade import UpgradeError, UpgradeStep, exchange_node_info, upgrade_stream
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    CometP2PError,
    ConnectionBrokenError,
    RejectedError,
    RejectReason,
)
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = [
    "DEFAULT_FILTER_TIMEOUT_S",
    "ConnFilter",
    "RemoteAddress",
    "Transport",
    "UpgradedConnection",
    "close_writer",
    "exchange_node_info",
]

logger = logging.getLogger(__name__)

DEFAULT_FILTER_TIMEOUT_S: Final = 5.0
"""CometBFT's ``filterTimeout``: the longest a conn or peer filter may take (seconds)."""

_CLOSE_TIMEOUT_S: Final = 1.0
"""How long closing a socket may wait for its write buffer before it is aborted."""

DEFAULT_MAX_HANDSHAKES_PER_IP: Final = 8
"""Inbound sockets of one remote IP allowed in the upgrade pipeline at once."""

DEFAULT_FIRST_BYTES_TIMEOUT_S: Final = 3.0
"""The longest a new socket may stay silent before its first handshake bytes (Go gives
the whole SecretConnection handshake 3 s)."""

ConnFilter = Callable[[str, int], Awaitable[None]]
"""``async filter(remote_ip, remote_port)``; raise any exception to refuse the socket."""

RemoteAddress = tuple[str, int]
"""A socket's remote ``(ip, port)``."""


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

    @property
    def remote_address(self) -> RemoteAddress:
        """The socket's remote ``(ip, port)``: its key in the Transport's conn set."""
        return self.secret.remote_address()


async def close_writer(writer: asyncio.StreamWriter, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
    """Close a socket gracefully (FIN after what is buffered), aborting after ``timeout_s``.

    A peer that stopped reading must not be able to hold our close forever.
    """
    try:
        writer.close()
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    except TimeoutError:
        _abort_writer(writer)
    except Exception:  # closing must never fail the caller
        logger.debug("error while closing a socket", exc_info=True)
        _abort_writer(writer)


def _abort_transport(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:  # pragma: no cover - every TCP transport is a WriteTransport
        transport.close()


def _abort_writer(writer: asyncio.StreamWriter) -> None:
    # Nothing we wrote before a refusal matters: drop the socket without lingering.
    with contextlib.suppress(Exception):
        writer.transport.abort()


class _AcceptedProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, plus a register of the sockets not yet claimed.

    A socket is *unclaimed* from the moment asyncio accepts it until its upgrade hands it
    to a peer (or it closes). :meth:`Transport.close` aborts every unclaimed socket, so
    one accepted just before the close (whose handler task may never run) cannot leak.
    """

    # Attribute names carry a prefix: StreamReaderProtocol has private ones of its own
    # (``_closed`` is a future there).

    def __init__(
        self,
        reader: asyncio.StreamReader,
        handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        unclaimed: set[asyncio.BaseTransport],
        closed: Callable[[], bool],
    ) -> None:
        super().__init__(reader, handle)
        self._cometp2p_unclaimed = unclaimed
        self._cometp2p_closed = closed
        self._cometp2p_socket: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._cometp2p_closed():
            _abort_transport(transport)
            return
        self._cometp2p_socket = transport
        self._cometp2p_unclaimed.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._cometp2p_socket is not None:
            self._cometp2p_unclaimed.discard(self._cometp2p_socket)
        super().connection_lost(exc)


@dataclass(slots=True)
class _Held:
    """One socket of the conn set."""

    ip: str
    writer: asyncio.StreamWriter


class Transport:
    """Dials and accepts TCP connections and upgrades them to authenticated peers.

    Args:
        node_key: our identity.
        node_info: the NodeInfo we send (our ID, network, channels, listen address).
        handshake_timeout_s: bound on each of the SecretConnection handshake and the
            NodeInfo exchange (``[p2p] handshake_timeout``), seconds.
        dial_timeout_s: bound on the TCP connect (``[p2p] dial_timeout``), seconds.
        max_incoming_handshakes: cap on inbound sockets still in the upgrade pipeline;
            extra connections are closed at once. 0 or less: no cap.
        conn_filters: run on every socket (both directions) before any handshake byte.
        allow_duplicate_ip: when False, a socket whose remote IP is already in the conn
            set is refused (``[p2p] allow_duplicate_ip``; Go's duplicate-IP conn filter).
        filter_timeout_s: bound on the conn filters of one socket, seconds.
        max_incoming_handshakes_per_ip: cap on inbound sockets of one remote IP in the
            upgrade pipeline; extra ones are closed at once. 0 or less: no cap.
        first_bytes_timeout_s: bound on the wait for the peer's first handshake bytes,
            seconds (also on dialed sockets); ``None``: only ``handshake_timeout_s``.

    Attributes:
        socket_wrapper: called on every TCP socket before its upgrade, as
            ``wrap(reader, writer, outbound)``, and its streams are used instead; the
            fuzzed connection (:func:`cometp2p.aio.fuzz.transport_fuzzer`) is one.
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
        allow_duplicate_ip: bool = True,
        filter_timeout_s: float = DEFAULT_FILTER_TIMEOUT_S,
        max_incoming_handshakes_per_ip: int = DEFAULT_MAX_HANDSHAKES_PER_IP,
        first_bytes_timeout_s: float | None = DEFAULT_FIRST_BYTES_TIMEOUT_S,
    ) -> None:
        self.node_key = node_key
        self.node_info = node_info
        self.handshake_timeout_s = handshake_timeout_s
        self.dial_timeout_s = dial_timeout_s
        self.max_incoming_handshakes = max_incoming_handshakes
        self.conn_filters = list(conn_filters or [])
        self.allow_duplicate_ip = allow_duplicate_ip
        self.filter_timeout_s = filter_timeout_s
        self.socket_wrapper: SocketWrapper | None = None
        self.max_incoming_handshakes_per_ip = max_incoming_handshakes_per_ip
        self.first_bytes_timeout_s = first_bytes_timeout_s
        self._server: asyncio.Server | None = None
        self._in_handshake = 0
        self._in_handshake_by_ip: dict[str, int] = {}
        self._handshakes: set[asyncio.Task[object]] = set()
        self._conns: dict[RemoteAddress, _Held] = {}
        self._unclaimed: set[asyncio.BaseTransport] = set()
        self._closed = False

    # ------------------------------------------------------------------ conn set

    @property
    def num_incoming_handshakes(self) -> int:
        """Inbound sockets currently in the upgrade pipeline."""
        return self._in_handshake

    def connections(self) -> list[RemoteAddress]:
        """The remote ``(ip, port)`` of every socket held: in upgrade or as a peer."""
        return list(self._conns)

    def has_ip(self, ip: str) -> bool:
        """True if some socket in the conn set has remote IP ``ip``."""
        wanted = _normalise_ip(ip)
        return any(held.ip == wanted for held in self._conns.values())

    def cleanup(self, remote_address: RemoteAddress) -> None:
        """Forget a socket (a removed peer's) so its address may connect again."""
        self._conns.pop(remote_address, None)

    def abort(self, remote_address: RemoteAddress) -> None:
        """Abort a held socket at once (RST), e.g. when a graceful close hangs."""
        held = self._conns.get(remote_address)
        if held is not None:
            _abort_writer(held.writer)

    def _admit(self, remote: RemoteAddress, writer: asyncio.StreamWriter) -> None:
        """Record ``remote`` in the conn set, or refuse it (behaviour.md §1.5 filterConn)."""
        if remote in self._conns:
            raise RejectedError(
                RejectReason.DUPLICATE, f"a connection from {remote[0]}:{remote[1]} is held"
            )
        ip = _normalise_ip(remote[0])
        if not self.allow_duplicate_ip and self.has_ip(ip):
            raise RejectedError(
                RejectReason.FILTERED,
                f"duplicate IP {ip}: already connected and allow_duplicate_ip is false",
            )
        self._conns[remote] = _Held(ip, writer)

    async def _run_conn_filters(self, remote: RemoteAddress) -> None:
        if not self.conn_filters:
            return
        ip, port = remote
        try:
            async with asyncio.timeout(self.filter_timeout_s):
                await asyncio.gather(*(f(ip, port) for f in self.conn_filters))
        except TimeoutError as exc:
            raise RejectedError(
                RejectReason.FILTERED,
                f"conn filters on {ip}:{port} took more than {self.filter_timeout_s:g} s",
            ) from exc
        except Exception as exc:
            raise RejectedError(
                RejectReason.FILTERED, f"conn filter refused {ip}:{port}: {exc}"
            ) from exc

    # ------------------------------------------------------------------ listening

    async def listen(
        self,
        host: str,
        port: int,
        on_connection: Callable[[UpgradedConnection], Awaitable[None]],
        on_rejected: Callable[[CometP2PError, RemoteAddress], None] | None = None,
    ) -> RemoteAddress:
        """Start accepting on ``host:port`` (port 0 = ephemeral).

        Each accepted socket is upgraded in its own task (no head-of-line blocking), then
        handed to ``on_connection``, which owns it from then on; failures of the pipeline
        go to ``on_rejected``.

        Returns:
            The bound ``(host, port)``.

        Raises:
            OSError: the address cannot be bound.
        """
        self._closed = False

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._handshakes.add(task)
            try:
                await self._handle_inbound(reader, writer, on_connection, on_rejected)
            except asyncio.CancelledError:
                # Only close() (or loop shutdown) cancels this task, which nothing awaits
                # but asyncio's own callback; ending it normally keeps Python 3.11's
                # stream callback from logging the cancellation as an error.
                _abort_writer(writer)
            finally:
                if task is not None:
                    self._handshakes.discard(task)

        loop = asyncio.get_running_loop()

        def protocol() -> _AcceptedProtocol:
            return _AcceptedProtocol(
                asyncio.StreamReader(), handle, self._unclaimed, lambda: self._closed
            )

        self._server = await loop.create_server(protocol, host, port)
        sock = self._server.sockets[0]
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def _handle_inbound(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_connection: Callable[[UpgradedConnection], Awaitable[None]],
        on_rejected: Callable[[CometP2PError, RemoteAddress], None] | None,
    ) -> None:
        remote = _peername(writer)

        def reject(error: CometP2PError) -> None:
            if on_rejected is not None:
                try:
                    on_rejected(error, remote)
                except Exception:
                    logger.exception("on_rejected callback failed")

        if self._closed:
            _abort_writer(writer)
            return
        ip = _normalise_ip(remote[0])
        refusal = self._handshake_slot_refusal(remote, ip)
        if refusal is not None:
            _abort_writer(writer)
            reject(refusal)
            return
        upgraded = await self._upgrade_inbound(reader, writer, remote, ip, reject)
        if upgraded is None:
            return
        if self._closed:
            await close_writer(writer)
            self.cleanup(remote)
            return
        self._unclaimed.discard(writer.transport)  # a peer's now: close() leaves it alone
        try:
            await on_connection(upgraded)
        except asyncio.CancelledError:
            _abort_writer(writer)
            self.cleanup(remote)
            raise
        except Exception:
            logger.exception("handling inbound peer %s failed", upgraded.node_info.node_id)
            await close_writer(writer)
            self.cleanup(remote)

    def _handshake_slot_refusal(self, remote: RemoteAddress, ip: str) -> RejectedError | None:
        """``LIMIT`` if the handshake cap, overall or for ``ip``, is reached; else ``None``."""
        cap = self.max_incoming_handshakes
        if cap > 0 and self._in_handshake >= cap:
            return RejectedError(
                RejectReason.LIMIT,
                f"{self._in_handshake} inbound connections already in handshake "
                f"(cap {cap}); {remote[0]}:{remote[1]} closed",
            )
        per_ip = self.max_incoming_handshakes_per_ip
        held = self._in_handshake_by_ip.get(ip, 0)
        if per_ip > 0 and held >= per_ip:
            return RejectedError(
                RejectReason.LIMIT,
                f"{held} inbound connections from {ip} already in handshake "
                f"(cap {per_ip} per IP); {remote[0]}:{remote[1]} closed",
            )
        return None

    async def _upgrade_inbound(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: RemoteAddress,
        ip: str,
        reject: Callable[[CometP2PError], None],
    ) -> UpgradedConnection | None:
        """Upgrade holding a handshake slot (overall and for ``ip``); ``None``: refused."""
        self._in_handshake += 1
        self._in_handshake_by_ip[ip] = self._in_handshake_by_ip.get(ip, 0) + 1
        try:
            return await self.upgrade(reader, writer, dialed=None)
        except CometP2PError as exc:
            reject(exc)
            return None
        except Exception as exc:  # a bug below us must not kill the accept loop
            logger.exception("inbound upgrade from %s:%d failed", remote[0], remote[1])
            _abort_writer(writer)
            self.cleanup(remote)
            reject(RejectedError(RejectReason.AUTH_FAILURE, f"upgrade failed: {exc!r}"))
            return None
        finally:
            self._in_handshake -= 1
            left = self._in_handshake_by_ip.get(ip, 1) - 1
            if left > 0:
                self._in_handshake_by_ip[ip] = left
            else:
                self._in_handshake_by_ip.pop(ip, None)

    async def close(self) -> None:
        """Stop accepting and abort every inbound socket still in the upgrade pipeline.

        Established peers are not touched: the owner closes them (then calls
        :meth:`cleanup`). Idempotent.
        """
        self._closed = True
        if self._server is not None:
            self._server.close()
        handshakes = [t for t in self._handshakes if t is not asyncio.current_task()]
        for task in handshakes:
            task.cancel()
        for task in handshakes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Sockets accepted whose handler had not started yet: nothing else would close them.
        for sock in list(self._unclaimed):
            _abort_transport(sock)
        self._unclaimed.clear()
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
        """Run the filters and the upgrade pipeline on a fresh TCP connection (§1.5).

        On success the socket is in the conn set until :meth:`cleanup`.

        Raises:
            RejectedError: with the reason of the failing step; the socket is closed
                and dropped from the conn set.
        """
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.socket_wrapper is not None:
            reader, writer = self.socket_wrapper(reader, writer, dialed is not None)
        remote = _peername(writer)
        try:
            self._admit(remote, writer)
        except RejectedError:
            _abort_writer(writer)
            raise
        try:
            return await self._upgrade_admitted(reader, writer, dialed, remote)
        except BaseException:
            self.cleanup(remote)
            raise

    async def _upgrade_admitted(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dialed: NetAddress | None,
        remote: RemoteAddress,
    ) -> UpgradedConnection:
        try:
            await self._run_conn_filters(remote)
        except BaseException:
            _abort_writer(writer)
            raise
        try:
            stream = await upgrade_stream(
                reader,
                writer,
                self.node_key,
                self.node_info,
                dialed_id=None if dialed is None else dialed.id,
                timeout_s=self.handshake_timeout_s,
                first_bytes_timeout_s=self.first_bytes_timeout_s,
            )
        except UpgradeError as exc:
            if exc.step is UpgradeStep.SECRET_CONNECTION:
                _abort_writer(writer)
            else:
                # Graceful: the peer should read our NodeInfo and refuse us with its own reason.
                await close_writer(writer)
            raise _rejection(exc, remote, dialed) from (exc.cause or exc)
        except BaseException:
            _abort_writer(writer)
            raise
        return UpgradedConnection(
            secret=stream.secret,
            node_info=stream.node_info,
            leftover=stream.leftover,
            outbound=dialed is not None,
            dialed_address=dialed,
        )


def _host_port_text(remote: RemoteAddress) -> str:
    host, port = remote
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_REJECT_REASONS: Final = {
    UpgradeStep.SECRET_CONNECTION: (RejectReason.AUTH_FAILURE, "secret connection failed: "),
    UpgradeStep.DIALED_ID: (RejectReason.AUTH_FAILURE, ""),
    UpgradeStep.NODE_INFO_EXCHANGE: (RejectReason.HANDSHAKE_FAILURE, "NodeInfo exchange failed: "),
    UpgradeStep.NODE_INFO_INVALID: (RejectReason.NODE_INFO_INVALID, ""),
    UpgradeStep.NODE_INFO_ID: (RejectReason.AUTH_FAILURE, ""),
    UpgradeStep.SELF: (RejectReason.SELF, ""),
    UpgradeStep.INCOMPATIBLE: (RejectReason.INCOMPATIBLE, ""),
}


def _rejection(
    exc: UpgradeError, remote: RemoteAddress, dialed: NetAddress | None
) -> RejectedError:
    """The Transport's name for a failed upgrade step (behaviour.md §1.15)."""
    if exc.step is UpgradeStep.SECRET_CONNECTION and isinstance(exc.cause, ConnectionBrokenError):
        # All we can see of a refusal by the remote (duplicate IP, a full peer list,
        # a filter) is the connection ending here: say so, not "auth failure".
        if dialed is None:
            message = f"{_host_port_text(remote)} hung up during the handshake: {exc.cause}"
        else:
            message = (
                f"{_host_port_text(remote)} closed the connection during the "
                "SecretConnection handshake (it may refuse duplicate IPs, "
                "allow_duplicate_ip = false; be at its peer limit; or filter us): "
                f"{exc.cause}"
            )
        return RejectedError(
            RejectReason.REMOTE_CLOSED, message, node_id=None if dialed is None else dialed.id
        )
    reason, prefix = _REJECT_REASONS[exc.step]
    return RejectedError(reason, prefix + exc.detail, node_id=exc.node_id)


def _normalise_ip(ip: str) -> str:
    """The canonical text of an IP (IPv4-mapped IPv6 as IPv4); other text unchanged."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _peername(writer: asyncio.StreamWriter) -> RemoteAddress:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "", 0
