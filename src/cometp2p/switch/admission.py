"""Admission of an upgraded connection into the Switch (behaviour.md §1.8).

One job: decide whether a peer that passed the upgrade pipeline may join the peer set,
and work out its addresses. Pure functions plus the (async) peer-filter run, and the
:class:`Admitter`, the pipeline that uses them: the Switch owns one and hands it every
upgraded connection, inbound and outbound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Final, Protocol

from cometp2p.aio.connection import Connection
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.aio.transport import RemoteAddress, Transport, UpgradedConnection
from cometp2p.config import P2PConfig
from cometp2p.errors import CometP2PError, NetAddressError, RejectedError, RejectReason
from cometp2p.metrics import P2PMetrics
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch.consumers import PeerTasks
from cometp2p.switch.dialer import Dialer
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.registry import PeerRegistry
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = [
    "CLOSE_TIMEOUT_S",
    "AdmissionOwner",
    "Admitter",
    "PeerFilter",
    "check_admission",
    "host_port",
    "run_peer_filters",
    "self_reported_address",
    "socket_address",
]

logger = logging.getLogger("cometp2p.switch.switch")  # the Switch's log, as before the split

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


CLOSE_TIMEOUT_S: Final = 1.0
"""How long closing a socket may wait for the peer before the socket is aborted."""


class AdmissionOwner(Protocol):
    """What the admission pipeline needs of the Switch that owns it."""

    config: P2PConfig
    metrics: P2PMetrics
    transport: Transport
    peers: PeerSet
    peer_filters: list[PeerFilter]
    filter_timeout_s: float
    registry: PeerRegistry
    dialer: Dialer
    on_peer_rejected: Callable[[CometP2PError], None] | None
    _running: bool
    _reactors: dict[str, Reactor]
    _channels: list[ChannelDescriptor]

    @property
    def mconnection_config(self) -> MConnectionConfig: ...

    def is_peer_persistent(self, address: NetAddress) -> bool: ...

    def num_peers(self) -> tuple[int, int, int]: ...

    async def stop_peer_for_error(self, peer: Peer, reason: BaseException) -> None: ...


class Admitter:
    """The admission pipeline of one Switch: an upgraded connection becomes a started
    peer known to every reactor, or is closed with the reason logged.

    Args:
        owner: the Switch.
        peer_tasks: where the new peer's consumer tasks are started.
    """

    def __init__(self, owner: AdmissionOwner, peer_tasks: PeerTasks) -> None:
        self._owner = owner
        self._peer_tasks = peer_tasks

    def on_rejected(self, error: CometP2PError, peer_address: RemoteAddress) -> None:
        """Log a refused connection, cool its ID down if incompatible, tell the owner."""
        logger.info("inbound peer %s:%d rejected: %s", peer_address[0], peer_address[1], error)
        if isinstance(error, RejectedError):
            self._owner.dialer.cool_down(error.node_id, error)
        if self._owner.on_peer_rejected is not None:
            self._owner.on_peer_rejected(error)

    async def on_inbound(self, upgraded: UpgradedConnection) -> None:
        """Admit an inbound connection; a refusal goes to :meth:`on_rejected`."""
        try:
            await self.add_upgraded(upgraded)
        except CometP2PError as exc:
            self.on_rejected(exc, upgraded.remote_address)

    async def _close_upgraded(self, secret: SecretConnection, remote: RemoteAddress) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await secret.close()
        except TimeoutError:
            self._owner.transport.abort(remote)
        except Exception:
            logger.debug("error closing %s:%d", *remote, exc_info=True)
            self._owner.transport.abort(remote)
        finally:
            self._owner.transport.cleanup(remote)

    async def add_upgraded(self, upgraded: UpgradedConnection) -> Peer:
        """The admission pipeline of behaviour.md §1.8, for both directions.

        Raises:
            RejectedError: ``DUPLICATE``, ``LIMIT`` (inbound), ``FILTERED`` (a peer
                filter, or the Switch is stopping); the socket is closed.
        """
        try:
            peer = self._make_peer(upgraded)
            await run_peer_filters(
                peer, self._owner.peers, self._owner.peer_filters, self._owner.filter_timeout_s
            )
            # From here to peers.add there is no suspension point: the checks hold.
            check_admission(
                peer,
                running=self._owner._running,
                peers=self._owner.peers,
                unconditional=self._owner.registry.unconditional,
                inbound=self._owner.num_peers()[1],
                max_inbound=self._owner.config.max_num_inbound_peers,
            )
            for reactor in self._owner._reactors.values():
                reactor.init_peer(peer)
        except BaseException:
            await self._close_upgraded(upgraded.secret, upgraded.remote_address)
            raise
        peer.connection.start()
        self._owner.peers.add(peer)
        # Compatible now: the next incompatible refusal starts a short cooldown again.
        self._owner.dialer.refusals.pop(peer.id, None)
        self._owner.metrics.peer_added()
        self._peer_tasks.start(peer, [desc.id for desc in self._owner._channels])
        logger.info(
            "[%s] added peer %r (%s, %s)",
            peer.id,
            peer.node_info.moniker,
            "outbound" if peer.is_outbound else "inbound",
            peer.socket_address,
        )
        await self._announce_peer(peer)
        return peer

    def _make_peer(self, upgraded: UpgradedConnection) -> Peer:
        """The (not yet started) Peer of an upgraded connection."""
        info = upgraded.node_info
        address = socket_address(upgraded)
        if upgraded.outbound:
            persistent = self._owner.is_peer_persistent(address)
        else:
            reported = self_reported_address(info)
            persistent = reported is not None and self._owner.is_peer_persistent(reported)
        connection = Connection(
            upgraded.secret,
            self._owner._channels,
            self._owner.mconnection_config,
            initial_plaintext=upgraded.leftover,
        )
        return Peer(
            info,
            connection,
            outbound=upgraded.outbound,
            persistent=persistent,
            socket_address=address,
            metrics=self._owner.metrics,
        )

    async def _announce_peer(self, peer: Peer) -> None:
        """``Reactor.add_peer`` in registration order; a failure stops the peer."""
        for reactor in self._owner._reactors.values():
            if not peer.is_running:
                break
            try:
                await reactor.add_peer(peer)
            except Exception as exc:
                logger.exception("[%s] reactor %s failed in add_peer", peer.id, reactor.name)
                await self._owner.stop_peer_for_error(peer, exc)
                break
