"""NodeInfo (``DefaultNodeInfo``): its protobuf body, ``Validate()`` and ``CompatibleWith``.

Implements wire.md §4.4 (message layout; ``protocol_version`` and ``other`` are always
emitted), §6.3 (what a node advertises), §6.4 (validation of a peer's NodeInfo) and §6.5
(compatibility), and behaviour.md §1.5.1. The uvarint length prefix and the 10240-byte
read limit belong to the exchange, not to this module; :meth:`NodeInfo.encode` and
:meth:`NodeInfo.decode` work on the bare protobuf body. No IO here: the listen address is
checked syntactically unless the caller asks for DNS resolution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from cometp2p.config import Config
from cometp2p.errors import (
    ConfigError,
    HandshakeError,
    HandshakeStage,
    IncompatiblePeerError,
    IncompatibleReason,
    LocalProtocolError,
    NetAddressError,
    NodeInfoField,
    NodeInfoInvalidError,
)
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, split_address, strip_scheme, validate_node_id
from cometp2p.wire.proto.tendermint.p2p import types_pb2

__all__ = [
    "BLOCK_PROTOCOL",
    "DEFAULT_SOFTWARE_VERSION",
    "MAX_CHANNELS",
    "MAX_NODE_INFO_BYTES",
    "P2P_PROTOCOL",
    "NodeInfo",
    "ProtocolVersion",
    "make_node_info",
]

MAX_NODE_INFO_BYTES: Final = 10240
"""Largest NodeInfo body a Go node reads (``maxNodeInfoSize``, wire.md §5.1)."""

MAX_CHANNELS: Final = 16
"""Most channels a NodeInfo may list (``maxNumChannels``, wire.md §6.4)."""

P2P_PROTOCOL: Final = 8
"""``version.P2PProtocol`` of CometBFT v0.38 (v1.0 uses 9; never compared, wire.md §6.6)."""

BLOCK_PROTOCOL: Final = 11
"""``version.BlockProtocol``; must equal the peer's (wire.md §6.5)."""

DEFAULT_SOFTWARE_VERSION: Final = "0.38.25"
"""The ``version`` string we advertise: the CometBFT release we are wire-compatible with."""

_UINT64_MAX: Final = (1 << 64) - 1
_TX_INDEX_VALUES: Final = frozenset({"", "on", "off"})
_SHOW: Final = 64  # how much of a hostile string to quote in an error message


def _quote(s: str) -> str:
    return repr(s) if len(s) <= _SHOW else repr(s[:_SHOW]) + f"... ({len(s)} characters)"


def _is_ascii_text(s: str) -> bool:
    """Go's ``IsASCIIText(s) && ASCIITrim(s) != ""``: bytes 0x20..0x7E, not only spaces."""
    return s.isascii() and s.isprintable() and s.strip(" ") != ""


@dataclass(frozen=True, slots=True)
class ProtocolVersion:
    """``tendermint.p2p.ProtocolVersion`` (wire.md §6.6); each field a uint64.

    Attributes:
        p2p: P2P protocol version (8 for v0.38, 9 for v1.0); not compared.
        block: block protocol version; peers must agree.
        app: the ABCI application's version; informational.
    """

    p2p: int = P2P_PROTOCOL
    block: int = BLOCK_PROTOCOL
    app: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """A node's self-description, sent once after the SecretConnection handshake.

    Field names follow Go's ``DefaultNodeInfo``; ``tx_index`` and ``rpc_address`` are the
    two members of its ``other`` sub-message.

    Attributes:
        protocol_version: P2P/block/app protocol versions.
        node_id: the node ID (``default_node_id``); lowercase hex when sent by us.
        listen_addr: where the node accepts connections, ``[scheme://]host:port``.
        network: the chain ID.
        version: software version, e.g. ``"0.38.25"``.
        channels: one byte per channel ID the node serves.
        moniker: human-readable name; required, printable ASCII.
        tx_index: ``"on"``, ``"off"`` or ``""``.
        rpc_address: the RPC listen address, e.g. ``"tcp://127.0.0.1:26657"``.
    """

    protocol_version: ProtocolVersion = ProtocolVersion()
    node_id: NodeID
    listen_addr: str
    network: str
    version: str = DEFAULT_SOFTWARE_VERSION
    channels: bytes
    moniker: str
    tx_index: str = ""
    rpc_address: str = ""

    # -- codec ------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The protobuf body of ``DefaultNodeInfo`` (no length prefix), as Go emits it.

        ``protocol_version`` and ``other`` are always present, even when empty.

        Raises:
            LocalProtocolError: if a version number is not a uint64, a string cannot be
                encoded as UTF-8, or the body exceeds :data:`MAX_NODE_INFO_BYTES`.
        """
        pv = self.protocol_version
        for name, value in (("p2p", pv.p2p), ("block", pv.block), ("app", pv.app)):
            if not 0 <= value <= _UINT64_MAX:
                raise LocalProtocolError(
                    f"NodeInfo protocol_version.{name}: expected a uint64, got {value}"
                )
        msg = types_pb2.DefaultNodeInfo()
        msg.protocol_version.SetInParent()
        msg.other.SetInParent()
        try:
            msg.protocol_version.p2p = pv.p2p
            msg.protocol_version.block = pv.block
            msg.protocol_version.app = pv.app
            msg.default_node_id = self.node_id
            msg.listen_addr = self.listen_addr
            msg.network = self.network
            msg.version = self.version
            msg.channels = bytes(self.channels)
            msg.moniker = self.moniker
            msg.other.tx_index = self.tx_index
            msg.other.rpc_address = self.rpc_address
            body = msg.SerializeToString()
        except (ValueError, TypeError) as exc:  # lone surrogates and the like
            raise LocalProtocolError(f"NodeInfo cannot be encoded: {exc}") from exc
        if len(body) > MAX_NODE_INFO_BYTES:
            raise LocalProtocolError(
                f"NodeInfo is {len(body)} bytes; peers accept at most {MAX_NODE_INFO_BYTES}"
            )
        return body

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview) -> NodeInfo:
        """Parse a peer's ``DefaultNodeInfo`` body (no length prefix). Does not validate.

        Raises:
            HandshakeError: (stage ``NODE_INFO``) if the body is longer than
                :data:`MAX_NODE_INFO_BYTES` or is not a well-formed ``DefaultNodeInfo``
                (including strings that are not UTF-8).
        """
        if len(body) > MAX_NODE_INFO_BYTES:
            raise HandshakeError(
                HandshakeStage.NODE_INFO,
                f"expected a NodeInfo of at most {MAX_NODE_INFO_BYTES} bytes, got {len(body)}",
            )
        msg = types_pb2.DefaultNodeInfo()
        try:
            msg.ParseFromString(bytes(body))
        except DecodeError as exc:
            raise HandshakeError(
                HandshakeStage.NODE_INFO, f"expected a DefaultNodeInfo protobuf: {exc}"
            ) from exc
        return cls(
            protocol_version=ProtocolVersion(
                msg.protocol_version.p2p, msg.protocol_version.block, msg.protocol_version.app
            ),
            node_id=NodeID(msg.default_node_id),
            listen_addr=msg.listen_addr,
            network=msg.network,
            version=msg.version,
            channels=msg.channels,
            moniker=msg.moniker,
            tx_index=msg.other.tx_index,
            rpc_address=msg.other.rpc_address,
        )

    # -- rules ------------------------------------------------------------------------------

    def validate(self, *, resolve: bool = False) -> None:
        """Apply Go's ``DefaultNodeInfo.Validate()`` (wire.md §6.4), in Go's order.

        Args:
            resolve: also DNS-resolve a listen address given as a host name, as Go does
                (blocking). By default a host name is accepted after a syntax check, which
                is the only leniency relative to Go; ``0.0.0.0`` is accepted either way.

        Raises:
            NodeInfoInvalidError: naming the first offending field: ``default_node_id``
                (not 20 bytes of hex), ``listen_addr`` (not ``[scheme://]host:port`` with
                a non-empty host and a 0..65535 port, or unresolvable), ``version`` or
                ``other.rpc_address`` (non-empty and not printable ASCII or all spaces),
                ``channels`` (more than 16 or a duplicate), ``moniker`` (empty, not
                printable ASCII, or all spaces), ``other.tx_index`` (not on/off/empty).
        """
        self._validate_addresses(resolve)
        if self.version and not _is_ascii_text(self.version):
            raise NodeInfoInvalidError(
                NodeInfoField.VERSION,
                f"expected printable ASCII, not only spaces, got {_quote(self.version)}",
            )
        self._validate_channels()
        if not _is_ascii_text(self.moniker):
            raise NodeInfoInvalidError(
                NodeInfoField.MONIKER,
                f"expected non-empty printable ASCII, got {_quote(self.moniker)}",
            )
        if self.tx_index not in _TX_INDEX_VALUES:
            raise NodeInfoInvalidError(
                NodeInfoField.TX_INDEX,
                f"expected 'on', 'off' or '', got {_quote(self.tx_index)}",
            )
        if self.rpc_address and not _is_ascii_text(self.rpc_address):
            raise NodeInfoInvalidError(
                NodeInfoField.RPC_ADDRESS,
                f"expected printable ASCII, not only spaces, got {_quote(self.rpc_address)}",
            )

    def _validate_addresses(self, resolve: bool) -> None:
        """The node ID and the listen address (see :meth:`validate`)."""
        try:
            validate_node_id(self.node_id)
        except NetAddressError as exc:
            raise NodeInfoInvalidError(NodeInfoField.NODE_ID, str(exc)) from exc
        full = f"{self.node_id}@{strip_scheme(self.listen_addr)}"
        try:
            if resolve:
                NetAddress.parse(full, resolve=True)
            else:
                split_address(full)
        except NetAddressError as exc:
            raise NodeInfoInvalidError(
                NodeInfoField.LISTEN_ADDR, f"{_quote(self.listen_addr)}: {exc}"
            ) from exc

    def _validate_channels(self) -> None:
        """At most 16 channels, no duplicate (see :meth:`validate`)."""
        if len(self.channels) > MAX_CHANNELS:
            raise NodeInfoInvalidError(
                NodeInfoField.CHANNELS,
                f"expected at most {MAX_CHANNELS} channels, got {len(self.channels)}",
            )
        seen: set[int] = set()
        for ch in self.channels:  # at most 16 by now
            if ch in seen:
                raise NodeInfoInvalidError(
                    NodeInfoField.CHANNELS, f"expected unique channel IDs, got 0x{ch:02x} twice"
                )
            seen.add(ch)

    def compatible_with(self, other: NodeInfo) -> None:
        """Check that peer ``other`` can talk to us, ``self`` (wire.md §6.5).

        The P2P and app protocol versions are not compared.

        Raises:
            IncompatiblePeerError: with reason ``BLOCK_VERSION`` if the block protocol
                versions differ, ``NETWORK`` if the chain IDs differ, or
                ``NO_COMMON_CHANNEL`` if we list channels and the peer lists none of them.
        """
        ours, theirs = self.protocol_version.block, other.protocol_version.block
        if ours != theirs:
            raise IncompatiblePeerError(
                IncompatibleReason.BLOCK_VERSION,
                f"expected block protocol {ours}, peer has {theirs}",
            )
        if self.network != other.network:
            raise IncompatiblePeerError(
                IncompatibleReason.NETWORK,
                f"expected network {_quote(self.network)}, peer is on {_quote(other.network)}",
            )
        if self.channels and not set(self.channels).intersection(other.channels):
            raise IncompatiblePeerError(
                IncompatibleReason.NO_COMMON_CHANNEL,
                f"expected one of our channels {self.channels.hex()}, "
                f"peer has {other.channels.hex() or 'none'}",
            )

    def has_channel(self, channel_id: int) -> bool:
        """Whether the node lists ``channel_id``."""
        return 0 <= channel_id <= 0xFF and channel_id in self.channels

    def net_address(self, *, resolve: bool = False) -> NetAddress:
        """The node's advertised address, ``node_id@listen_addr`` (Go ``NodeInfo.NetAddress``).

        Raises:
            NetAddressError: if the ID or listen address does not parse.
            NetAddressLookupError: if the host is a name that does not resolve, or
                ``resolve`` is false.
        """
        return NetAddress.parse_host_port(self.node_id, self.listen_addr, resolve=resolve)


def make_node_info(
    config: Config,
    node_id: NodeID,
    network: str,
    channels: Iterable[int],
    *,
    app_version: int = 0,
    version: str = DEFAULT_SOFTWARE_VERSION,
) -> NodeInfo:
    """Build our own NodeInfo the way a Go node does (wire.md §6.3, behaviour.md §1.5.1).

    Args:
        config: the node configuration: ``moniker``, ``p2p.external_address`` (preferred)
            or ``p2p.laddr`` as ``listen_addr``, ``p2p.block_protocol_version``.
        node_id: our node ID (``NodeKey.node_id``).
        network: the chain ID (see :func:`cometp2p.config.load_chain_id`).
        channels: the channel IDs of every registered Reactor, in order; include the PEX
            channel 0x00 only when the PEXReactor runs (``p2p.pex``).
        app_version: ``protocol_version.app``.
        version: the software version string to advertise.

    Raises:
        ConfigError: if the result would fail :meth:`NodeInfo.validate` (e.g. an empty or
            non-ASCII moniker, a malformed listen address, duplicate channels).
    """
    try:
        channel_bytes = bytes(channels)
    except ValueError as exc:
        raise ConfigError(f"channel IDs must be 0..255: {exc}") from exc
    info = NodeInfo(
        protocol_version=ProtocolVersion(
            P2P_PROTOCOL, config.p2p.block_protocol_version, app_version
        ),
        node_id=node_id,
        listen_addr=config.p2p.external_address or config.p2p.laddr,
        network=network,
        version=version,
        channels=channel_bytes,
        moniker=config.moniker,
        # Only what is true (issue #12): we serve no RPC and index no transactions, so
        # no rpc_address and tx_index "off" (both accepted by CometBFT's Validate), whatever
        # [rpc] laddr and [tx_index] indexer say (cometp2p.unsupported reports them).
        tx_index="off",
        rpc_address="",
    )
    try:
        info.validate()
    except NodeInfoInvalidError as exc:
        raise ConfigError(f"our own NodeInfo is invalid: {exc}") from exc
    return info
