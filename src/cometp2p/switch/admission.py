"""Admission of an upgraded connection into the Switch (behaviour.md §1.8).

One job: decide whether a peer that passed the upgrade pipeline may join the peer set,
and work out its addresses. Pure functions plus the (async) peer-filter run; the Switch
calls them from its admission pipeline and owns everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence

from cometp2p.aio.transport import UpgradedConnection
from cometp2p.errors import NetAddressError, RejectedError, RejectReason
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = [
    "PeerFilter",
    "check_admission",
    "host_port",
    "run_peer_filters",
    "self_reported_address",
    "socket_address",
]

PeerFilter = Callable[[PeerSet, Peer], Awaitable[None]]
"""``async filter(peers, new_peer)``; raise any exception to refuse the peer."""


def host_port(ip: str, port: int) -> str:
    """``ip:port``, with an IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def socket_address(upgraded: UpgradedConnection) -> NetAddress:
    """The dialed address of an outbound peer; ``id@remote_ip:port`` of an inbound one."""
    if upgraded.dialed_address is not None:
        return upgraded.dialed_address
    ip, port = upgraded.remote_address
    return NetAddress.parse(f"{upgraded.node_info.node_id}@{host_port(ip, port)}", resolve=False)


def self_reported_address(info: NodeInfo) -> NetAddress | None:
    """The peer's advertised listen address, or ``None`` if it is not an IP literal.

    No DNS here: a peer must not be able to stall the event loop with a slow name. A
    host name never matches a persistent peer (those were resolved to IPs).
    """
    try:
        return info.net_address(resolve=False)
    except NetAddressError:
        return None


def check_admission(
    peer: Peer,
    *,
    running: bool,
    peers: PeerSet,
    unconditional: Collection[NodeID],
    inbound: int,
    max_inbound: int,
) -> None:
    """The synchronous checks right before a peer joins the set.

    Args:
        peer: the candidate.
        running: whether the Switch still runs.
        peers: the current peer set.
        unconditional: IDs exempt from the inbound limit.
        inbound: inbound peers counted against the limit now.
        max_inbound: ``max_num_inbound_peers``.

    Raises:
        RejectedError: ``FILTERED`` (stopping), ``DUPLICATE`` or ``LIMIT``.
    """
    if not running:
        raise RejectedError(RejectReason.FILTERED, "the Switch is stopping", node_id=peer.id)
    if peers.has(peer.id):
        raise RejectedError(RejectReason.DUPLICATE, "already connected", node_id=peer.id)
    if not peer.is_outbound and peer.id not in unconditional and inbound >= max_inbound:
        raise RejectedError(
            RejectReason.LIMIT,
            f"inbound peer limit reached ({inbound} of max_num_inbound_peers={max_inbound})",
            node_id=peer.id,
        )


async def run_peer_filters(
    peer: Peer, peers: PeerSet, filters: Sequence[PeerFilter], timeout_s: float
) -> None:
    """Refuse a duplicate, then run every peer filter concurrently under one timeout.

    Raises:
        RejectedError: ``DUPLICATE``, or ``FILTERED`` when a filter raised or the filters
            took longer than ``timeout_s`` seconds.
    """
    if peers.has(peer.id):
        raise RejectedError(RejectReason.DUPLICATE, "already connected", node_id=peer.id)
    if not filters:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(f(peers, peer) for f in filters))
    except TimeoutError as exc:
        raise RejectedError(
            RejectReason.FILTERED, f"peer filters took more than {timeout_s:g} s", node_id=peer.id
        ) from exc
    except Exception as exc:
        raise RejectedError(RejectReason.FILTERED, str(exc), node_id=peer.id) from exc
