"""The upgrade pipeline: a fresh TCP stream to an authenticated, compatible peer link.

One pipeline for every caller (wire.md §3, §5; behaviour.md §1.5): the
:class:`~cometp2p.aio.transport.Transport` and the
:class:`~cometp2p.crawler.crawler.Crawler` both call :func:`upgrade_stream`, and differ
only in how they name a failure (a :class:`~cometp2p.errors.RejectReason`, a crawl
``FailureReason``) and in how they close the socket. The steps:

1. SecretConnection handshake (``timeout_s``);
2. when dialing, the authenticated node ID must equal the dialed ID;
3. NodeInfo exchange (a fresh ``timeout_s``): each side writes its NodeInfo as one
   uvarint-delimited message and reads the peer's (≤ 10240 bytes);
4. :func:`check_peer_node_info` (pure): the NodeInfo is valid, its ID equals the
   authenticated ID *exactly* (the authenticated ID is lowercase; an upper-case NodeInfo
   ID is refused, as Go refuses it), it is not our own ID, and it is compatible with ours.

Every failure is an :class:`UpgradeError` naming the :class:`UpgradeStep` that failed,
the peer's ID when it is known, and the peer's NodeInfo when it was received (a crawler
keeps what an incompatible node told it). The socket is left to the caller.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from cometp2p.aio.secret_connection import SecretConnection, secret_handshake
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    CometP2PError,
    ConnectionBrokenError,
    HandshakeError,
    HandshakeStage,
    IncompatiblePeerError,
    NodeInfoInvalidError,
)
from cometp2p.types import NodeID
from cometp2p.wire.nodeinfo import MAX_NODE_INFO_BYTES, NodeInfo
from cometp2p.wire.varint import DelimitedReader, encode_delimited

__all__ = [
    "UpgradeError",
    "UpgradeStep",
    "UpgradedStream",
    "check_peer_node_info",
    "exchange_node_info",
    "upgrade_stream",
]


class UpgradeStep(enum.Enum):
    """The step of the upgrade pipeline that refused a peer."""

    SECRET_CONNECTION = "secret connection"
    """The SecretConnection handshake failed (``cause`` says how: a bad signature is an
    :class:`~cometp2p.errors.AuthenticationError`, a hang-up a
    :class:`~cometp2p.errors.ConnectionBrokenError`)."""
    DIALED_ID = "dialed id"
    """The authenticated ID is not the ID we dialed."""
    NODE_INFO_EXCHANGE = "node info exchange"
    """No NodeInfo: timeout, end of stream, oversized or undecodable."""
    NODE_INFO_INVALID = "node info invalid"
    """The NodeInfo failed ``validate()``."""
    NODE_INFO_ID = "node info id"
    """The NodeInfo's ID is not (exactly) the authenticated ID."""
    SELF = "self"
    """The peer is ourselves."""
    INCOMPATIBLE = "incompatible"
    """The NodeInfo is not compatible with ours (network, block version, channels)."""


class UpgradeError(CometP2PError):
    """The upgrade pipeline refused a peer.

    Attributes:
        step: the :class:`UpgradeStep` that failed.
        detail: what went wrong, in words.
        node_id: the authenticated ID once the SecretConnection is up, else ``None``.
        node_info: the peer's NodeInfo once it was received (even if invalid), else None.
        cause: the underlying error, if any (also ``__cause__``).
    """

    def __init__(
        self,
        step: UpgradeStep,
        detail: str,
        *,
        node_id: NodeID | None = None,
        node_info: NodeInfo | None = None,
        cause: CometP2PError | None = None,
    ) -> None:
        super().__init__(f"upgrade failed at {step.value}: {detail}")
        self.step = step
        self.detail = detail
        self.node_id = node_id
        self.node_info = node_info
        self.cause = cause


@dataclass(frozen=True, slots=True)
class UpgradedStream:
    """A stream that passed the whole pipeline.

    Attributes:
        secret: the authenticated SecretConnection.
        node_info: the peer's validated, compatible NodeInfo.
        leftover: decrypted bytes received after the NodeInfo (the first Packets).
    """

    secret: SecretConnection
    node_info: NodeInfo
    leftover: bytes


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


def check_peer_node_info(ours: NodeInfo, theirs: NodeInfo, authenticated_id: NodeID) -> None:
    """Step 4 of the pipeline, pure: may a peer that sent ``theirs`` be accepted?

    Args:
        ours: our NodeInfo.
        theirs: the peer's NodeInfo, as decoded.
        authenticated_id: the (lowercase) ID the SecretConnection proved.

    Raises:
        UpgradeError: step NODE_INFO_INVALID, NODE_INFO_ID (compared exactly), SELF or
            INCOMPATIBLE, carrying ``theirs``.
    """

    def refuse(step: UpgradeStep, detail: str, cause: CometP2PError | None = None) -> UpgradeError:
        return UpgradeError(step, detail, node_id=authenticated_id, node_info=theirs, cause=cause)

    try:
        theirs.validate()
    except NodeInfoInvalidError as exc:
        raise refuse(UpgradeStep.NODE_INFO_INVALID, str(exc), exc) from exc
    if theirs.node_id != authenticated_id:
        raise refuse(
            UpgradeStep.NODE_INFO_ID,
            f"NodeInfo ID {theirs.node_id} differs from authenticated ID {authenticated_id}",
        )
    if theirs.node_id == ours.node_id:
        raise refuse(UpgradeStep.SELF, "connected to ourselves")
    try:
        ours.compatible_with(theirs)
    except IncompatiblePeerError as exc:
        raise refuse(UpgradeStep.INCOMPATIBLE, str(exc), exc) from exc


async def upgrade_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    node_key: NodeKey,
    ours: NodeInfo,
    *,
    dialed_id: NodeID | None,
    timeout_s: float,
    first_bytes_timeout_s: float | None = None,
) -> UpgradedStream:
    """Run the whole pipeline on a connected TCP stream (module docstring, steps 1-4).

    Args:
        reader: the stream's reader.
        writer: the stream's writer (not closed here, whatever happens).
        node_key: our identity.
        ours: the NodeInfo we send.
        dialed_id: the ID we dialed, or ``None`` for an inbound stream.
        timeout_s: the bound of the handshake, and again of the NodeInfo exchange (s).
        first_bytes_timeout_s: a shorter bound for the peer's first handshake bytes (s),
            or ``None`` (see :func:`~cometp2p.aio.secret_connection.secret_handshake`).

    Raises:
        UpgradeError: the failing step, with the peer's ID and NodeInfo when known.
    """
    try:
        secret = await secret_handshake(
            reader,
            writer,
            node_key,
            timeout_s=timeout_s,
            first_bytes_timeout_s=first_bytes_timeout_s,
        )
    except CometP2PError as exc:
        raise UpgradeError(UpgradeStep.SECRET_CONNECTION, str(exc), cause=exc) from exc
    remote_id = secret.remote_node_id
    if dialed_id is not None and dialed_id != remote_id:
        raise UpgradeError(
            UpgradeStep.DIALED_ID,
            f"dialed ID mismatch: dialed {dialed_id}, authenticated {remote_id}",
            node_id=remote_id,
        )
    try:
        theirs, leftover = await exchange_node_info(secret, ours, timeout_s=timeout_s)
    except CometP2PError as exc:
        raise UpgradeError(
            UpgradeStep.NODE_INFO_EXCHANGE, str(exc), node_id=remote_id, cause=exc
        ) from exc
    check_peer_node_info(ours, theirs, remote_id)
    return UpgradedStream(secret, theirs, leftover)
