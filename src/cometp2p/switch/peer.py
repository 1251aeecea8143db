"""Peer: one connected, authenticated node, and the PeerSet (behaviour.md §2).

A Peer wraps the upgraded connection (its NodeInfo, its direction) and the running
:class:`~cometp2p.aio.connection.Connection`. Reactors send through it and keep per-peer
scratch data in it. Sends update the ``cometbft_p2p_*`` send counters (§2.4) and the
per-channel histogram of how long a blocking send waited for room in the send queue.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from cometp2p.aio.connection import Connection
from cometp2p.sansio.mconnection import MConnectionStatus
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

if TYPE_CHECKING:
    from cometp2p.metrics import P2PMetrics

__all__ = ["Peer", "PeerSet", "broadcast"]


class Peer:
    """A started peer.

    Args:
        node_info: the peer's validated NodeInfo.
        connection: the running MConnection driver.
        outbound: True if we dialed it.
        persistent: True if it is one of our persistent peers.
        socket_address: outbound: the dialed address; inbound: ``id@remote_ip:remote_port``.
        metrics: optional Prometheus metrics to update on send.
    """

    def __init__(
        self,
        node_info: NodeInfo,
        connection: Connection,
        *,
        outbound: bool,
        persistent: bool,
        socket_address: NetAddress,
        metrics: P2PMetrics | None = None,
    ) -> None:
        self.node_info = node_info
        self.connection = connection
        self.is_outbound = outbound
        self.is_persistent = persistent
        self.socket_address = socket_address
        self.data: dict[str, object] = {}
        self.created_at = time.monotonic()
        self._channels = frozenset(node_info.channels)
        self._metrics = metrics
        self._stopping = False

    @property
    def id(self) -> NodeID:
        """The peer's node ID (lowercase hex, 40 characters)."""
        return self.node_info.node_id

    @property
    def remote_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The IP address of the peer's socket."""
        return self.socket_address.ip

    @property
    def remote_address(self) -> tuple[str, int]:
        """The socket's remote ``(ip, port)`` (for outbound peers: the dialed port)."""
        return self.connection.secret_connection.remote_address()

    @property
    def is_running(self) -> bool:
        """True until the connection ends or the Switch starts to stop the peer."""
        return not self._stopping and not self.connection.closed

    def mark_stopping(self) -> None:
        """Called by the Switch when it starts to stop the peer: sends fail from now on."""
        self._stopping = True

    def has_channel(self, channel_id: int) -> bool:
        """True if the peer advertised ``channel_id`` in its NodeInfo."""
        return channel_id in self._channels

    def get(self, key: str) -> object | None:
        """Return per-peer data stored under ``key`` (``None`` if absent)."""
        return self.data.get(key)

    def set(self, key: str, value: object) -> None:
        """Store per-peer data for reactors."""
        self.data[key] = value

    def _encode(self, message: bytes | Message) -> bytes:
        return message if isinstance(message, bytes) else message.SerializeToString()

    async def send(
        self, channel_id: int, message: bytes | Message, timeout_s: float = 10.0
    ) -> bool:
        """Queue ``message`` on ``channel_id``, waiting up to ``timeout_s`` s for room.

        How long the call waited (seconds, also when it timed out) is observed in the
        ``send_queue_latency_seconds`` histogram of the channel.

        Returns:
            False (without raising) when the peer did not advertise the channel, the
            queue stayed full, or the peer is stopped, as CometBFT's ``Peer.Send`` does.

        Raises:
            LocalProtocolError: ``channel_id`` is not one of our own channels.
        """
        if not self.has_channel(channel_id) or not self.is_running:
            return False
        data = self._encode(message)
        started = time.monotonic()
        ok = await self.connection.send(channel_id, data, timeout_s)
        if self._metrics is not None:
            self._metrics.record_queue_wait(channel_id, time.monotonic() - started)
        if ok:
            self._count_sent(channel_id, message, len(data))
        return ok

    def try_send(self, channel_id: int, message: bytes | Message) -> bool:
        """Queue ``message`` if there is room now; never blocks. See :meth:`send`.

        Raises:
            LocalProtocolError: ``channel_id`` is not one of our own channels.
        """
        if not self.has_channel(channel_id) or not self.is_running:
            return False
        data = self._encode(message)
        ok = self.connection.try_send(channel_id, data)
        if ok:
            self._count_sent(channel_id, message, len(data))
        return ok

    def _count_sent(self, channel_id: int, message: bytes | Message, nbytes: int) -> None:
        if self._metrics is not None:
            self._metrics.record_send(self.id, channel_id, message, nbytes)

    def status(self) -> MConnectionStatus:
        """Per-channel queue lengths, byte counters and ``recently_sent``."""
        return self.connection.status()

    def queued_messages(self) -> int:
        """Messages waiting in all send queues (CometBFT's ``pending_send_bytes`` gauge)."""
        return sum(ch.send_queue_size for ch in self.status().channels)

    async def flush_stop(self, timeout_s: float = 2.0) -> None:
        """Flush what is queued (bounded), then close the connection."""
        await self.connection.close(flush_timeout_s=timeout_s)

    def __repr__(self) -> str:
        direction = "out" if self.is_outbound else "in"
        return f"Peer({self.id[:12]} {direction} {self.socket_address.dial_string})"


class PeerSet:
    """The connected peers, by node ID, in insertion order."""

    def __init__(self) -> None:
        self._peers: dict[NodeID, Peer] = {}

    def add(self, peer: Peer) -> bool:
        """Add ``peer``; False if a peer with its ID is already present."""
        if peer.id in self._peers:
            return False
        self._peers[peer.id] = peer
        return True

    def remove(self, peer: Peer) -> bool:
        """Remove exactly this peer object; False if it is not the one in the set."""
        if self._peers.get(peer.id) is not peer:
            return False
        del self._peers[peer.id]
        return True

    def get(self, node_id: str) -> Peer | None:
        """The peer with ``node_id``, or ``None``."""
        return self._peers.get(NodeID(node_id))

    def has(self, node_id: str) -> bool:
        """True if a peer with ``node_id`` is connected."""
        return NodeID(node_id) in self._peers

    def has_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True if some connected peer's socket has ``ip``."""
        return any(p.remote_ip == ip for p in self._peers.values())

    def list(self) -> list[Peer]:
        """A snapshot of the peers."""
        return list(self._peers.values())

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))


async def broadcast(
    peers: Sequence[Peer], channel_id: int, message: bytes, timeout_s: float
) -> dict[NodeID, bool]:
    """Send ``message`` to ``peers`` concurrently: see :meth:`Switch.broadcast`."""
    queued: dict[NodeID, bool] = {}
    full: list[Peer] = []
    for peer in peers:
        if peer.try_send(channel_id, message):
            queued[peer.id] = True
        elif peer.has_channel(channel_id) and peer.is_running:
            full.append(peer)
        else:
            queued[peer.id] = False
    if full:
        waited = await asyncio.gather(*(peer.send(channel_id, message, timeout_s) for peer in full))
        queued.update((peer.id, ok) for peer, ok in zip(full, waited, strict=True))
    return {peer.id: queued[peer.id] for peer in peers}
