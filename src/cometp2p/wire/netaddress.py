"""Node IDs and ``id@ip:port`` NetAddresses: parsing, printing, routability, group keys.

Implements wire.md §4.4 (the ``NetAddress`` protobuf), §6.1 (node ID validation), §6.2
(address strings) and behaviour.md §5.3 (address-book group key) and §5.11 (validity and
routability, the RFC table). No IO by default: :meth:`NetAddress.parse` accepts IP
literals only unless called with ``resolve=True`` (a blocking lookup, for scripts);
code on an event loop resolves names with :func:`cometp2p.aio.resolve.resolve_address`.

An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is stored as the plain IPv4 address, as
Go's ``net.IP`` treats it, so it prints, compares and groups as IPv4.

Error policy: text we parse for ourselves (config, command line) raises
:class:`~cometp2p.errors.NetAddressError`; a ``NetAddress`` protobuf received from a peer
(:meth:`NetAddress.from_proto`) raises :class:`~cometp2p.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Final

from cometp2p.errors import NetAddressError, NetAddressLookupError, RemoteProtocolError
from cometp2p.types import NodeID
from cometp2p.wire.proto.tendermint.p2p import types_pb2

__all__ = [
    "NODE_ID_BYTES",
    "IPAddress",
    "NetAddress",
    "parse_ip",
    "split_address",
    "split_host_port",
    "strip_scheme",
    "validate_node_id",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
"""The IP of a NetAddress; IPv4-mapped IPv6 addresses are always stored as IPv4."""

NODE_ID_BYTES: Final = 20
"""A node ID is the first 20 bytes of SHA-256(pubkey), i.e. 40 hex characters (wire.md §6.1)."""

_HEX_ID: Final = re.compile(r"[0-9a-fA-F]*")
_DIGITS: Final = re.compile(r"[0-9]+")
_MAX_PORT: Final = 0xFFFF


def validate_node_id(s: str) -> NodeID:
    """Check that ``s`` is a node ID and return its lowercase form (wire.md §6.1).

    Either hex case is accepted, as Go's ``validateID`` does; the returned lowercase form is
    what every equality check must use.

    Raises:
        NetAddressError: if ``s`` is empty, not hex, or does not decode to 20 bytes.
    """
    if not s:
        raise NetAddressError("invalid node ID: expected 40 hex characters, got an empty string")
    if _HEX_ID.fullmatch(s) is None:
        raise NetAddressError(f"invalid node ID {s!r}: expected hex characters only")
    if len(s) != 2 * NODE_ID_BYTES:
        raise NetAddressError(
            f"invalid node ID {s!r}: expected {NODE_ID_BYTES} bytes (40 hex characters), "
            f"got {len(s)} hex characters"
        )
    return NodeID(s.lower())


def strip_scheme(addr: str) -> str:
    """Drop a leading ``scheme://`` from ``addr``, as Go's ``removeProtocolIfDefined`` does.

    Go keeps the text between the first and the second ``://``; so do we, so that odd
    inputs parse (or fail) the same way on both sides.
    """
    if "://" in addr:
        return addr.split("://")[1]
    return addr


def split_host_port(host_port: str) -> tuple[str, str]:
    """Split ``host:port`` or ``[v6host]:port`` like Go's ``net.SplitHostPort``.

    Returns:
        ``(host, port)`` as text; the host may be empty and the port is not checked here.

    Raises:
        NetAddressError: on a missing port, missing or stray brackets, or too many colons.
    """
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            raise NetAddressError(f"address {host_port!r}: missing ']'")
        rest = host_port[end + 1 :]
        if not rest:
            raise NetAddressError(f"address {host_port!r}: missing port")
        if rest[0] != ":":
            raise NetAddressError(f"address {host_port!r}: expected ':' after ']'")
        host = host_port[1:end]
        port = rest[1:]
        if "[" in host_port[1:] or "]" in host_port[end + 1 :]:
            raise NetAddressError(f"address {host_port!r}: unexpected bracket")
        return host, port
    colon = host_port.rfind(":")
    if colon < 0:
        raise NetAddressError(f"address {host_port!r}: missing port")
    host = host_port[:colon]
    if ":" in host:
        raise NetAddressError(
            f"address {host_port!r}: too many colons (IPv6 hosts need [brackets])"
        )
    if "[" in host_port or "]" in host_port:
        raise NetAddressError(f"address {host_port!r}: unexpected bracket")
    return host, host_port[colon + 1 :]


def split_address(addr: str) -> tuple[NodeID, str, int]:
    """Parse ``[scheme://]id@host:port`` without resolving the host (wire.md §6.2).

    Returns:
        ``(node_id, host, port)``: the lowercase node ID, the non-empty host text (an IP
        literal or a name) and the port, 0..65535.

    Raises:
        NetAddressError: if there is not exactly one ``@``, the ID is invalid, the host is
            empty, or the port is not a base-10 integer in 0..65535.
    """
    bare = strip_scheme(addr)
    parts = bare.split("@")
    if len(parts) != 2:
        raise NetAddressError(f"address {addr!r}: expected exactly one '@' (id@host:port)")
    node_id = validate_node_id(parts[0])
    host, port_text = split_host_port(parts[1])
    if not host:
        raise NetAddressError(f"address {addr!r}: host is empty")
    return node_id, host, _parse_port(port_text, addr)


def _parse_port(text: str, context: str) -> int:
    if _DIGITS.fullmatch(text) is None or int(text) > _MAX_PORT:
        raise NetAddressError(f"address {context!r}: expected a port 0..65535, got {text!r}")
    return int(text)


def _normalise(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


def parse_ip(text: str) -> IPAddress | None:
    """Parse an IP literal as Go's ``net.ParseIP`` does, or return ``None``.

    Dotted IPv4 (no leading zeros) and IPv6 text are accepted; zones (``%eth0``) and
    brackets are not. An IPv4-mapped IPv6 literal comes back as IPv4.
    """
    if "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _normalise(ip)


def _resolve(host: str) -> IPAddress:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise NetAddressLookupError(f"cannot resolve host {host!r}: {exc}") from exc
    for info in infos:
        ip = parse_ip(str(info[4][0]).split("%", 1)[0])
        if ip is not None:
            return ip
    raise NetAddressLookupError(f"cannot resolve host {host!r}: no IP address returned")


def _v4(cidr: str) -> tuple[int, int]:
    net = ipaddress.IPv4Network(cidr)
    return int(net.network_address), 32 - net.prefixlen


def _v6(cidr: str) -> tuple[int, int]:
    net = ipaddress.IPv6Network(cidr)
    return int(net.network_address), 128 - net.prefixlen


# (network as int, number of host bits); membership is one shift and one compare.
_RFC1918: Final = (_v4("10.0.0.0/8"), _v4("172.16.0.0/12"), _v4("192.168.0.0/16"))
_RFC3927: Final = _v4("169.254.0.0/16")
_ZERO4: Final = _v4("0.0.0.0/8")
_LOOPBACK4: Final = _v4("127.0.0.0/8")
_BROADCAST4: Final = 0xFFFFFFFF
_RFC3849: Final = _v6("2001:db8::/32")
_RFC3964: Final = _v6("2002::/16")
_RFC4193: Final = _v6("fc00::/7")
_RFC4380: Final = _v6("2001::/32")
_RFC4843: Final = _v6("2001:10::/28")
_RFC4862: Final = _v6("fe80::/64")  # /64 as in the reference, not the /10 of the RFC
_RFC6052: Final = _v6("64:ff9b::/96")
_RFC6145: Final = _v6("::ffff:0:0:0/96")  # translated, distinct from v4-mapped ::ffff:0:0/96
_ONION_CAT: Final = _v6("fd87:d87e:eb43::/48")
_HE_NET: Final = _v6("2001:470::/32")
_LOOPBACK6: Final = 1


def _in(value: int, net: tuple[int, int]) -> bool:
    return value >> net[1] == net[0] >> net[1]


def _v4_group(value: int) -> str:
    return f"{value >> 24 & 0xFF}.{value >> 16 & 0xFF}.0.0"


@dataclass(frozen=True, slots=True)
class NetAddress:
    """A peer address: node ID, IP and TCP port (wire.md §4.4, behaviour.md conventions).

    Equality is field equality, which matches Go's ``Equals`` (same ``str()``).
    The ID is not validated on construction because addresses gossiped by peers carry
    unchecked IDs (behaviour.md §4.2); :meth:`valid` checks it.

    Attributes:
        id: node ID, lowercase hex when valid; may be empty or invalid if received.
        ip: IPv4 or IPv6 address; IPv4-mapped IPv6 is normalised to IPv4.
        port: TCP port, 0..65535.

    Raises:
        NetAddressError: on construction with a port outside 0..65535.
    """

    id: NodeID
    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= _MAX_PORT:
            raise NetAddressError(f"expected a port 0..65535, got {self.port}")
        normal = _normalise(self.ip)
        if normal is not self.ip:
            object.__setattr__(self, "ip", normal)

    # -- parsing and printing ---------------------------------------------------------

    @classmethod
    def parse(cls, s: str, *, resolve: bool = False) -> NetAddress:
        """Parse ``[scheme://]id@host:port`` (wire.md §6.2).

        Args:
            s: the address; IPv6 hosts in brackets.
            resolve: opt-in: when true a host name is resolved with
                ``socket.getaddrinfo`` (blocking) and the first IP is used; by default
                only IP literals are accepted (on an event loop, use
                :func:`cometp2p.aio.resolve.resolve_address` instead).

        Raises:
            NetAddressLookupError: if the host is a name and it does not resolve, or
                ``resolve`` is false.
            NetAddressError: on any other syntax error (see :func:`split_address`).
        """
        node_id, host, port = split_address(s)
        ip = parse_ip(host)
        if ip is None:
            if not resolve:
                raise NetAddressLookupError(
                    f"address {s!r}: host {host!r} is not an IP literal and resolving is off"
                )
            ip = _resolve(host)
        return cls(node_id, ip, port)

    @classmethod
    def parse_host_port(cls, node_id: str, host_port: str, *, resolve: bool = False) -> NetAddress:
        """Build an address from an ID and ``[scheme://]host:port`` (Go ``IDAddressString``).

        Raises:
            NetAddressLookupError: as :meth:`parse`.
            NetAddressError: as :meth:`parse`.
        """
        return cls.parse(f"{node_id}@{strip_scheme(host_port)}", resolve=resolve)

    def __str__(self) -> str:
        """``id@ip:port`` with IPv6 in brackets; just the dial string when the ID is empty."""
        if self.id:
            return f"{self.id}@{self.dial_string}"
        return self.dial_string

    @property
    def dial_string(self) -> str:
        """``ip:port`` (``[v6]:port``), suitable for a TCP connect."""
        if self.ip.version == 6:
            return f"[{self.ip.compressed}]:{self.port}"
        return f"{self.ip}:{self.port}"

    def same(self, other: NetAddress) -> bool:
        """Go's ``Same``: same dial string, or the same non-empty ID."""
        return self.dial_string == other.dial_string or (bool(self.id) and self.id == other.id)

    # -- protobuf ---------------------------------------------------------------------

    def to_proto(self) -> types_pb2.NetAddress:
        """The ``tendermint.p2p.NetAddress`` message (IP as Go's ``net.IP.String()``)."""
        return types_pb2.NetAddress(id=self.id, ip=self.ip.compressed, port=self.port)

    @classmethod
    def from_proto(cls, msg: types_pb2.NetAddress) -> NetAddress:
        """Convert a peer-supplied message (behaviour.md §4.2).

        The IP must parse and the port must be below 65536; the ID is kept as sent,
        unvalidated (the address book checks it).

        Raises:
            RemoteProtocolError: if the IP does not parse or the port is out of range.
        """
        ip = parse_ip(msg.ip)
        if ip is None:
            raise RemoteProtocolError(f"NetAddress: expected an IP literal, got {msg.ip!r}")
        if msg.port > _MAX_PORT:
            raise RemoteProtocolError(f"NetAddress: expected a port < 65536, got {msg.port}")
        return cls(NodeID(msg.id), ip, msg.port)

    # -- validity and routability (behaviour.md §5.11) -----------------------------------

    def valid(self) -> bool:
        """Go's ``Valid() == nil``: valid ID, and IP not unspecified, RFC3849 or broadcast."""
        try:
            validate_node_id(self.id)
        except NetAddressError:
            return False
        if self.ip.is_unspecified or self.rfc3849():
            return False
        return not (self.ip.version == 4 and int(self.ip) == _BROADCAST4)

    def local(self) -> bool:
        """Loopback (127.0.0.0/8, ``::1``) or 0.0.0.0/8."""
        value = int(self.ip)
        if self.ip.version == 4:
            return _in(value, _LOOPBACK4) or _in(value, _ZERO4)
        return value == _LOOPBACK6

    def routable(self) -> bool:
        """Valid and in none of RFC1918/3927/4862/4193/4843, and not :meth:`local`."""
        return (
            self.valid()
            and not self.rfc1918()
            and not self.rfc3927()
            and not self.rfc4862()
            and not self.rfc4193()
            and not self.rfc4843()
            and not self.local()
        )

    def _v4_in(self, net: tuple[int, int]) -> bool:
        return self.ip.version == 4 and _in(int(self.ip), net)

    def _v6_in(self, net: tuple[int, int]) -> bool:
        return self.ip.version == 6 and _in(int(self.ip), net)

    def rfc1918(self) -> bool:
        """Private IPv4: 10/8, 172.16/12, 192.168/16."""
        return any(self._v4_in(net) for net in _RFC1918)

    def rfc3849(self) -> bool:
        """IPv6 documentation 2001:db8::/32 (makes the address invalid)."""
        return self._v6_in(_RFC3849)

    def rfc3927(self) -> bool:
        """IPv4 link-local 169.254/16."""
        return self._v4_in(_RFC3927)

    def rfc3964(self) -> bool:
        """6to4 2002::/16."""
        return self._v6_in(_RFC3964)

    def rfc4193(self) -> bool:
        """IPv6 unique local fc00::/7."""
        return self._v6_in(_RFC4193)

    def rfc4380(self) -> bool:
        """Teredo 2001::/32."""
        return self._v6_in(_RFC4380)

    def rfc4843(self) -> bool:
        """ORCHID 2001:10::/28."""
        return self._v6_in(_RFC4843)

    def rfc4862(self) -> bool:
        """IPv6 link-local fe80::/64 (the reference's /64)."""
        return self._v6_in(_RFC4862)

    def rfc6052(self) -> bool:
        """NAT64 well-known prefix 64:ff9b::/96."""
        return self._v6_in(_RFC6052)

    def rfc6145(self) -> bool:
        """IPv4-translated ::ffff:0:0:0/96."""
        return self._v6_in(_RFC6145)

    def onion_cat_tor(self) -> bool:
        """OnionCat Tor fd87:d87e:eb43::/48."""
        return self._v6_in(_ONION_CAT)

    def group_key(self, strict: bool) -> str:
        """The address-book network group (behaviour.md §5.3).

        Args:
            strict: the address book's ``addr_book_strict``; when true local and
                unroutable addresses get the groups ``"local"`` and ``"unroutable"``.

        Returns:
            ``"local"``, ``"unroutable"``, ``"a.b.0.0"`` (an IPv4 /16, embedded or not),
            ``"tor:N"``, or an IPv6 /32 (/36 for he.net) prefix in canonical text.
        """
        if strict and self.local():
            return "local"
        if strict and not self.routable():
            return "unroutable"
        value = int(self.ip)
        if self.ip.version == 4:
            return _v4_group(value)
        if self.rfc6145() or self.rfc6052():
            return _v4_group(value & 0xFFFFFFFF)
        if self.rfc3964():
            return _v4_group(value >> 80 & 0xFFFFFFFF)
        if self.rfc4380():
            return _v4_group(~value & 0xFFFFFFFF)
        if self.onion_cat_tor():
            return f"tor:{value >> 72 & 0x0F}"
        host_bits = 92 if _in(value, _HE_NET) else 96
        return ipaddress.IPv6Address(value >> host_bits << host_bits).compressed
