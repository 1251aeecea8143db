"""The tasks each connected peer runs inside the Switch (behaviour.md §3, §1.12).

One job: for every peer, one consumer task per channel (a slow reactor delays only its
own channel of that peer), a callback that reports why the connection ended, and one
ticker for every peer's pending-bytes gauge. :class:`PeerTasks` starts them, as children
of one TaskGroup for all peers (:mod:`.tasks`), and hands them back when the peer is
removed; the Switch decides what removal means (a removal runs outside this group).

Memory per idle peer is a feature (``bench/idle_peers.py``, at most 40 KiB), so a peer
costs its consumers only: the end of its connection is a callback (a task is started
only then), the gauge ticker is shared, and the consumers catch every exception
themselves instead of running inside a guard coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from cometp2p.errors import CometP2PError
from cometp2p.metrics import P2PMetrics
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.tasks import TaskSupervisor

__all__ = ["PeerTaskOwner", "PeerTasks"]

logger = logging.getLogger("cometp2p.switch.switch")  # the Switch's log, as before the split


class PeerTaskOwner(Protocol):
    """What the per-peer tasks need of the Switch that owns them."""

    metrics: P2PMetrics
    peer_metrics_interval_s: float
    delivery_observers: list[Callable[[Envelope], None]]

    def reactor_for_channel(self, channel_id: int) -> Reactor:
        """The reactor that declared ``channel_id``."""
        ...

    async def stop_peer_for_error(self, peer: Peer, reason: BaseException) -> None:
        """Stop ``peer`` for ``reason``."""
        ...

    async def _stop_and_remove_peer(
        self, peer: Peer, reason: BaseException | None, *, flush_timeout_s: float = 0.0
    ) -> None: ...


class PeerTasks:
    """The running tasks of every peer, by peer.

    Args:
        owner: the Switch (reactors by channel, metrics, how to stop a peer).

    Attributes:
        group: the TaskGroup every peer task runs in; the Switch opens it at start and
            closes it once every peer is removed.
    """

    def __init__(self, owner: PeerTaskOwner) -> None:
        self._owner = owner
        self._tasks: dict[Peer, list[asyncio.Task[None]]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.group = TaskSupervisor("peer")

    def start(self, peer: Peer, channel_ids: Iterable[int]) -> None:
        """Start the consumers (tasks named ``recv-...``) and watch the connection's end."""
        short = peer.id[:8]
        spawn = self.group.spawn
        tasks = [
            spawn(self._consume(peer, cid), f"recv-{short}-{cid}", guarded=False)
            for cid in channel_ids
        ]
        self._tasks[peer] = [task for task in tasks if task is not None]
        peer.connection.add_done_callback(lambda error: self._ended(peer, error))
        with contextlib.suppress(CometP2PError):
            self._owner.metrics.set_pending(peer.id, peer.queued_messages())
        if self._ticker is None or self._ticker.done():
            self._ticker = spawn(self._tick_metrics(), "peer-metrics")

    def take(self, peer: Peer, caller: asyncio.Task[object] | None) -> list[asyncio.Task[None]]:
        """Forget ``peer``'s tasks and return its consumers (for the caller to await).

        ``caller`` (one of the peer's own consumers, stopping it) is left out.
        """
        return [task for task in self._tasks.pop(peer, []) if task is not caller]

    def _ended(self, peer: Peer, error: CometP2PError | None) -> None:
        # The connection ended and its socket is closed. Unless the peer was removed
        # already (which is what closed it), remove it now, from a task of the group.
        if peer in self._tasks:
            self.group.spawn(self._report_end(peer, error), f"watch-{peer.id[:8]}")

    async def _report_end(self, peer: Peer, error: CometP2PError | None) -> None:
        if error is None:
            await self._owner._stop_and_remove_peer(peer, None)
        else:
            await self._owner.stop_peer_for_error(peer, error)

    async def _tick_metrics(self) -> None:
        """Refresh every peer's pending-bytes gauge each ``peer_metrics_interval_s``."""
        owner = self._owner
        while True:
            await asyncio.sleep(owner.peer_metrics_interval_s)
            for peer in list(self._tasks):
                if peer.is_running:
                    with contextlib.suppress(CometP2PError):
                        owner.metrics.set_pending(peer.id, peer.queued_messages())

    async def _consume(self, peer: Peer, channel_id: int) -> None:
        # Runs unguarded (see the module docstring): nothing may escape but cancellation.
        owner = self._owner
        try:
            reactor = owner.reactor_for_channel(channel_id)
            connection = peer.connection
            while True:
                try:
                    data = await connection.receive(channel_id)
                except CometP2PError:
                    return  # the connection's end callback reports why it ended
                if not peer.is_running:
                    return  # the peer is being stopped: its backlog is dropped
                try:
                    message = reactor.decode(channel_id, data)
                    owner.metrics.record_receive(peer.id, channel_id, message, len(data))
                    envelope = Envelope(channel_id, peer, message)
                    await reactor.receive(envelope)
                    for observe in owner.delivery_observers:
                        observe(envelope)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning(
                        "[%s] reactor %s failed on channel %#04x: %r",
                        peer.id,
                        reactor.name,
                        channel_id,
                        exc,
                    )
                    await owner.stop_peer_for_error(peer, exc)
                    return
        except Exception:
            logger.exception("[%s] consumer of channel %#04x failed", peer.id, channel_id)
