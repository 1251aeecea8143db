"""The single error hierarchy of cometp2p.

Every error the library raises on purpose derives from :class:`CometP2PError`. The tree
separates *who* is at fault, following the h11/trio split:

* :class:`LocalProtocolError`: the caller misused the API (sending on an undeclared
  channel, a message too large for our own limits). Fix the calling code.
* :class:`RemoteProtocolError`: the peer broke the protocol (malformed, oversized or
  hostile bytes, a bad signature, an incompatible NodeInfo). The driver stops that peer
  with the error as the logged reason; the node goes on.
* :class:`ConnectionClosedError` (we closed it) vs :class:`ConnectionBrokenError` (the
  peer or the network broke it; the OS error is chained with ``from``).
* :class:`RejectedError`: the Switch/Transport refused a peer, with a
  :class:`RejectReason` (behaviour.md §1.15).

Messages say what was expected and what arrived.
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthenticationError",
    "CometP2PError",
    "ConfigError",
    "ConnectionBrokenError",
    "ConnectionClosedError",
    "CrawlError",
    "FrameError",
    "HandshakeError",
    "HandshakeStage",
    "IncompatiblePeerError",
    "IncompatibleReason",
    "KeyFileError",
    "LocalProtocolError",
    "NetAddressError",
    "NetAddressLookupError",
    "NodeInfoField",
    "NodeInfoInvalidError",
    "PeerClosedError",
    "ReactorTooLateError",
    "RejectReason",
    "RejectedError",
    "RemoteProtocolError",
]


class CometP2PError(Exception):
    """Root of every error raised on purpose by cometp2p."""


class LocalProtocolError(CometP2PError):
    """The caller misused the API; the connection state is unchanged unless stated."""


class ReactorTooLateError(LocalProtocolError):
    """A reactor was added after the Switch (or Node) started: its channels could no
    longer be advertised in our NodeInfo, so peers would drop its messages."""


class RemoteProtocolError(CometP2PError):
    """The remote peer violated the protocol. The connection that raised it is dead."""


class HandshakeStage(enum.Enum):
    """Where in the SecretConnection / NodeInfo upgrade a failure happened (wire.md §3.2, §5)."""

    EPHEMERAL_KEY = "ephemeral key exchange"
    KEY_AGREEMENT = "key agreement"
    AUTH_SIG = "auth signature exchange"
    NODE_INFO = "node info exchange"


class HandshakeError(RemoteProtocolError):
    """The SecretConnection or NodeInfo handshake failed because of what the peer sent.

    Attributes:
        stage: the handshake stage that failed.
    """

    def __init__(self, stage: HandshakeStage, message: str) -> None:
        super().__init__(f"{stage.value}: {message}")
        self.stage = stage


class AuthenticationError(HandshakeError):
    """The peer could not prove its identity (bad signature, wrong key type, wrong ID)."""

    def __init__(self, message: str, stage: HandshakeStage = HandshakeStage.AUTH_SIG) -> None:
        super().__init__(stage, message)


class FrameError(RemoteProtocolError):
    """A SecretConnection frame could not be opened (wire.md §3.6, §3.7).

    It did not authenticate (tampered, replayed, reordered or truncated on the wire),
    declared more than 1024 payload bytes, or the stream ended inside a frame. The
    connection is dead.
    """


class IncompatibleReason(enum.Enum):
    """Which ``CompatibleWith`` rule a peer's NodeInfo failed (wire.md §6.5)."""

    BLOCK_VERSION = "different block protocol version"
    NETWORK = "different network"
    NO_COMMON_CHANNEL = "no common channel"


class IncompatiblePeerError(RemoteProtocolError):
    """The peer's NodeInfo is valid but incompatible with ours (wire.md §6.5).

    Attributes:
        reason: the :class:`IncompatibleReason`.
    """

    def __init__(self, reason: IncompatibleReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class NodeInfoField(enum.Enum):
    """A DefaultNodeInfo field, named as in ``types.proto`` (wire.md §4.4)."""

    NODE_ID = "default_node_id"
    LISTEN_ADDR = "listen_addr"
    VERSION = "version"
    CHANNELS = "channels"
    MONIKER = "moniker"
    TX_INDEX = "other.tx_index"
    RPC_ADDRESS = "other.rpc_address"


class NodeInfoInvalidError(RemoteProtocolError):
    """The peer's NodeInfo decoded but fails ``Validate()`` (wire.md §6.4).

    Attributes:
        field: the offending :class:`NodeInfoField`.
    """

    def __init__(self, field: NodeInfoField, message: str) -> None:
        super().__init__(f"invalid NodeInfo {field.value}: {message}")
        self.field = field


class ConnectionClosedError(CometP2PError):
    """The operation failed because *we* closed the connection (or are closing it)."""


class ConnectionBrokenError(CometP2PError):
    """The peer or the network broke the connection; the underlying error is chained."""


class PeerClosedError(ConnectionBrokenError):
    """The peer closed the connection cleanly: end of stream between two Packets.

    Routine for a p2p node (a peer that restarts or drops us), so it is logged at INFO
    where other ways a connection breaks are warnings.
    """


class NetAddressError(CometP2PError, ValueError):
    """A node ID or ``id@host:port`` address failed to parse or validate (wire.md §6.2)."""


class NetAddressLookupError(NetAddressError):
    """The host of an ``id@host:port`` address is a name that did not resolve (wire.md §6.2)."""


class KeyFileError(CometP2PError):
    """A key file (``node_key.json``) is missing, unreadable or malformed."""


class ConfigError(CometP2PError):
    """A configuration file or value is invalid."""


class CrawlError(CometP2PError):
    """A crawl could not start: e.g. no seed told us its network (chain ID)."""


class RejectReason(enum.Enum):
    """Why the Transport or Switch refused a peer (behaviour.md §1.15)."""

    SELF = "self"
    DUPLICATE = "duplicate"
    FILTERED = "filtered"
    INCOMPATIBLE = "incompatible"
    NODE_INFO_INVALID = "node info invalid"
    AUTH_FAILURE = "auth failure"
    HANDSHAKE_FAILURE = "handshake failure"  # no NodeInfo, or one that did not decode
    LIMIT = "limit"
    REMOTE_CLOSED = "closed by the remote"
    """The remote closed the connection before or during the SecretConnection handshake:
    all the other side can observe of a refusal such as Go's duplicate-IP filter."""


class RejectedError(CometP2PError):
    """A peer was refused by the Transport or the Switch.

    Attributes:
        reason: the :class:`RejectReason`.
        node_id: the peer's node ID when known, else ``None``.
    """

    def __init__(self, reason: RejectReason, message: str, node_id: str | None = None) -> None:
        who = f"peer {node_id}" if node_id else "peer"
        super().__init__(f"{who} rejected ({reason.value}): {message}")
        self.reason = reason
        self.node_id = node_id
