"""Stopping and removing a peer from the Switch (behaviour.md §1.9).

One job: take a peer out exactly once, in Go's order (close the connection, stop the
peer's receive tasks, ``Reactor.remove_peer``, and only then leave the peer set), so a
quick reconnect by the same node cannot reach ``init_peer``/``add_peer`` before the old
``remove_peer`` ran. Each removal runs in its own task (a "stopper"), a child of the
Switch-level removal TaskGroup (:mod:`.tasks`), not of the peers' group: a consumer task
that stops its own peer waits only on its stopper, never on the group it runs in, so it
cannot deadlock, and cancelling the caller never leaves a removal half done. The Switch
waits for the stoppers, then closes the group, when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final, Protocol

from cometp2p.aio.transport import RemoteAddress, Transport
from cometp2p.errors import CometP2PError, PeerClosedError
from cometp2p.metrics import P2PMetrics
from cometp2p.switch import admission
from cometp2p.switch.admission import CLOSE_TIMEOUT_S
from cometp2p.switch.consumers import PeerTasks
from cometp2p.switch.dialer import Dialer
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.tasks import TaskSupervisor

__all__ = ["CLOSE_TIMEOUT_S", "PeerRemover", "RemovalOwner", "finish"]

logger = logging.getLogger("cometp2p.switch.switch")  # the Switch's log, as before the split

RECEIVE_DRAIN_TIMEOUT_S: Final = 1.0
"""How long a stopping peer's in-progress ``Reactor.receive`` calls may take to finish."""


class RemovalOwner(Protocol):
    """What peer removal needs of the Switch that owns it."""

    peers: PeerSet
    metrics: P2PMetrics
    transport: Transport
    dialer: Dialer

    @property
    def is_running(self) -> bool: ...

    @property
    def reactors(self) -> dict[str, Reactor]: ...


class PeerRemover:
    """Stops peers for one Switch.

    Args:
        owner: the Switch.
        peer_tasks: the per-peer tasks, handed back when a peer goes.
    """

    def __init__(self, owner: RemovalOwner, peer_tasks: PeerTasks) -> None:
        self._owner = owner
        self._peer_tasks = peer_tasks
        self.stopping: set[Peer] = set()
        self.stoppers = TaskSupervisor("removal")

    def _is_current(self, peer: Peer) -> bool:
        return self._owner.peers.get(peer.id) is peer and peer not in self.stopping

    async def stop_peer_for_error(self, peer: Peer, reason: BaseException) -> None:
        """See :meth:`Switch.stop_peer_for_error`."""
        if not self._is_current(peer):
            return
        # A clean hang-up is routine (the peer restarted or let us go); the rest warns.
        level = logging.INFO if isinstance(reason, PeerClosedError) else logging.WARNING
        logger.log(level, "[%s] stopping peer for error: %s", peer.id, reason)
        await self.stop_and_remove_peer(peer, reason)
        if peer.is_persistent and self._owner.is_running:
            target = (
                peer.socket_address
                if peer.is_outbound
                else admission.self_reported_address(peer.node_info)
            )
            if target is not None:
                dialer = self._owner.dialer
                dialer.start_reconnect(target, delay_s=dialer.short_lived_delay(peer))

    async def stop_peer_gracefully(self, peer: Peer, flush_timeout_s: float = 2.0) -> None:
        """See :meth:`Switch.stop_peer_gracefully`."""
        if not self._is_current(peer):
            return
        logger.info("[%s] stopping peer gracefully", peer.id)
        await self.stop_and_remove_peer(peer, None, flush_timeout_s=flush_timeout_s)

    async def stop_and_remove_peer(
        self, peer: Peer, reason: BaseException | None, *, flush_timeout_s: float = 0.0
    ) -> None:
        """Stop ``peer`` once; the work runs in its own task, so cancelling the caller
        (a reactor's receive, a dial) never leaves the removal half done."""
        if not self._is_current(peer):
            return
        self.stopping.add(peer)
        peer.mark_stopping()
        # The caller may be one of the peer's own receive tasks: that one is not awaited.
        caller = asyncio.current_task()
        removal = self._remove_peer(peer, reason, flush_timeout_s, caller)
        stopper = self.stoppers.spawn(removal, f"stop-{peer.id[:8]}")
        if stopper is None:  # no removal group (the Switch never started): remove here
            await self._remove_peer(peer, reason, flush_timeout_s, caller)
            return
        await asyncio.shield(stopper)

    async def _remove_peer(
        self,
        peer: Peer,
        reason: BaseException | None,
        flush_timeout_s: float,
        caller: asyncio.Task[object] | None,
    ) -> None:
        """Go's ``stopAndRemovePeer`` order: close, stop, ``remove_peer``, leave the set."""
        owner = self._owner
        try:
            consumers = self._peer_tasks.take(peer, caller)
            await self._close_connection(peer, flush_timeout_s)
            # Let a receive in progress finish, so remove_peer comes after it.
            await finish(consumers, RECEIVE_DRAIN_TIMEOUT_S)
            for reactor in owner.reactors.values():
                try:
                    await reactor.remove_peer(peer, reason)
                except Exception:
                    logger.exception("[%s] reactor %s failed in remove_peer", peer.id, reactor.name)
        finally:
            owner.peers.remove(peer)
            owner.metrics.peer_removed()
            owner.metrics.forget_peer(peer.id)
            self.stopping.discard(peer)
        logger.info("[%s] removed peer (%s)", peer.id, reason or "stopped")

    async def _close_connection(self, peer: Peer, flush_timeout_s: float) -> None:
        transport = self._owner.transport
        remote: RemoteAddress | None
        try:
            remote = peer.remote_address
        except CometP2PError:
            remote = None
        closer = asyncio.create_task(
            peer.connection.close(flush_timeout_s=flush_timeout_s), name=f"close-{peer.id[:8]}"
        )
        try:
            done, _ = await asyncio.wait({closer}, timeout=flush_timeout_s + CLOSE_TIMEOUT_S)
            if not done and remote is not None:
                # The peer does not read: do not wait for its buffers any longer.
                transport.abort(remote)
            await finish([closer], CLOSE_TIMEOUT_S)
        finally:
            if remote is not None:
                transport.cleanup(remote)


async def finish(tasks: Sequence[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``tasks``, then cancel and reap the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
