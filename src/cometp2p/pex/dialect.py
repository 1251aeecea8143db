"""Which PEX protocol a peer speaks, and tendermint v0.35's URL addresses (behaviour.md §9.1).

Two dialects share channel 0x00:

* **v0.38** (CometBFT v0.38, tendermint v0.34): ``PexRequest`` / ``PexAddrs``; a peer may
  ask twice freely, then once per ``ensure_peers_period / 3`` (10 s); answers carry up to
  250 addresses.
* **v0.35** (tendermint v0.35's ``ReactorV2``): the same two messages plus
  ``PexRequestV2`` / ``PexResponseV2`` (fields 3 and 4) whose addresses are URLs
  ``mconn://<id>@host:port``; a peer asks as often as once per 200 ms
  (``minReceiveRequestInterval``), and no response may carry more than 100 addresses
  (``maxAddresses``), in either direction.

A peer is taken for v0.35 when its NodeInfo version is ``0.35.x`` or when it sends a V2
message. Pure functions and one small rate limiter: no IO, no clock.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cometp2p.errors import RemoteProtocolError
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, parse_ip, split_host_port

__all__ = [
    "MCONN_SCHEME",
    "V035_MAX_ADDRESSES",
    "V035_MIN_RECEIVE_REQUEST_INTERVAL_S",
    "V035_REQUEST_JITTER_ALLOWANCE_S",
    "PexDialect",
    "PexUrl",
    "V035RequestLimiter",
    "dialect_of_version",
    "format_pex_url",
    "parse_pex_url",
]

MCONN_SCHEME: Final = "mconn"
"""The only transport protocol we dial (v0.35's ``MConnProtocol``)."""

V035_MAX_ADDRESSES: Final = 100
"""``maxAddresses`` of v0.35.9: the most addresses in one response, sent or accepted."""

V035_MIN_RECEIVE_REQUEST_INTERVAL_S: Final = 0.2
"""``minReceiveRequestInterval`` of v0.35.9 (v0.35.6+; 100 ms before), in seconds."""

V035_REQUEST_JITTER_ALLOWANCE_S: Final = 0.1
"""How much earlier than 200 ms after the previous one a v0.35 peer's request may arrive
and still be taken. A v0.35 node spaces its requests by at least 200 ms when it *sends*
them; scheduling and network delays can bring two arrivals closer, and an honest peer
must never be punished for that. The allowance also covers v0.35.0-v0.35.5 (100 ms)."""

# scheme "://" id "@" host ":" port, nothing else (no user info, path, query or fragment).
_URL: Final = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<id>[^@/?#]*)@(?P<hostport>[^@/?#]+)")
_OPAQUE: Final = re.compile(r"[a-z][a-z0-9+.-]*:[^/].*")
_DIGITS: Final = re.compile(r"[0-9]{1,5}")


class PexDialect(enum.Enum):
    """The PEX protocol a peer speaks (see the module docstring)."""

    V038 = "v0.38"
    V035 = "v0.35"


def dialect_of_version(version: str) -> PexDialect:
    """The dialect implied by a NodeInfo ``version``: ``0.35.x`` (with or without a ``v``
    and a suffix such as ``-rc1``) is v0.35, anything else v0.38."""
    text = version.strip().removeprefix("v")
    return PexDialect.V035 if text.startswith("0.35.") else PexDialect.V038


@dataclass(frozen=True, slots=True)
class PexUrl:
    """One parsed ``PexAddressV2.url``.

    Attributes:
        address: the address to store, or ``None`` if the URL is well formed but not
            usable by us (another transport, or a host name, which we never resolve for a
            peer-supplied address).
        reason: why ``address`` is ``None`` (empty when it is set).
    """

    address: NetAddress | None
    reason: str = ""


def parse_pex_url(text: str) -> PexUrl:
    """Parse a v0.35 address URL strictly.

    Accepted: ``<scheme>://<id>@<host>:<port>`` with a lowercase scheme, an IP literal or
    a host name (IPv6 in brackets) and a decimal port 0..65535; nothing after the port.
    ``mconn`` with an IP literal gives an address (its ID unvalidated, as for a
    ``PexAddrs`` entry: the address book checks it); other schemes, opaque forms such as
    ``memory:<id>`` and host names give no address but are not an offence.

    Raises:
        RemoteProtocolError: if the text is not such a URL (the same verdict as a
            ``PexAddrs`` entry with a bad IP or port).
    """
    match = _URL.fullmatch(text)
    if match is None:
        if _OPAQUE.fullmatch(text) and "://" not in text and "@" not in text:
            return PexUrl(None, f"opaque URL {text[:40]!r} is not an mconn address")
        raise RemoteProtocolError(
            f"PexAddressV2: expected scheme://id@host:port, got {text[:80]!r}"
        )
    try:
        host, port_text = split_host_port(match["hostport"])
    except ValueError as exc:
        raise RemoteProtocolError(f"PexAddressV2 {text[:80]!r}: {exc}") from exc
    if not host or _DIGITS.fullmatch(port_text) is None or int(port_text) > 0xFFFF:
        raise RemoteProtocolError(f"PexAddressV2 {text[:80]!r}: expected host:port (0..65535)")
    if match["scheme"] != MCONN_SCHEME:
        return PexUrl(None, f"protocol {match['scheme']!r} is not mconn")
    ip = parse_ip(host)
    if ip is None:
        return PexUrl(None, f"host {host[:40]!r} is not an IP literal")
    return PexUrl(NetAddress(NodeID(match["id"]), ip, int(port_text)))


def format_pex_url(addr: NetAddress) -> str:
    """``mconn://<id>@<ip>:<port>`` (IPv6 in brackets), v0.35's ``NodeAddress.String()``."""
    return f"{MCONN_SCHEME}://{addr.id}@{addr.dial_string}"


class V035RequestLimiter:
    """v0.35's ``markPeerRequest``: one request per peer per ``min_interval_s``.

    No free requests (unlike v0.38); a request arriving less than
    ``min_interval_s - allowance_s`` after the last accepted one is refused and not
    recorded.

    Args:
        min_interval_s: v0.35's ``minReceiveRequestInterval`` (0.2 s).
        allowance_s: arrival jitter tolerated (see
            :data:`V035_REQUEST_JITTER_ALLOWANCE_S`).
    """

    __slots__ = ("_gap", "_last")

    def __init__(
        self,
        min_interval_s: float = V035_MIN_RECEIVE_REQUEST_INTERVAL_S,
        allowance_s: float = V035_REQUEST_JITTER_ALLOWANCE_S,
    ) -> None:
        self._gap = timedelta(seconds=max(0.0, min_interval_s - allowance_s))
        self._last: dict[NodeID, datetime] = {}

    def allow(self, peer_id: NodeID, now: datetime) -> bool:
        """Record a request from ``peer_id`` at ``now``; False if it came too soon."""
        last = self._last.get(peer_id)
        if last is not None and now - last < self._gap:
            return False
        self._last[peer_id] = now
        return True

    def forget(self, peer_id: NodeID) -> None:
        """Drop the history of ``peer_id`` (it disconnected)."""
        self._last.pop(peer_id, None)
