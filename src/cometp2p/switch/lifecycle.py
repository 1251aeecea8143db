"""The Switch's lifecycle as events, and the handle reactors get (behaviour.md §3).

Reactors are started before the Switch listens, so a reactor routine that needs peers
waits for :attr:`SwitchHandle.started` instead of polling ``is_running``. This module
knows nothing of :mod:`cometp2p.switch.switch`, so :mod:`cometp2p.switch.reactor` can
name the Switch's type without importing it back (no import cycle).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from cometp2p.types import NodeID

if TYPE_CHECKING:
    from cometp2p.switch.peer import Peer

__all__ = ["Lifecycle", "SwitchHandle"]


class Lifecycle:
    """Two events: ``started`` is set while running, ``stopped`` while not.

    ``stopped`` is set from construction until :meth:`mark_started`. Events are not
    bound to a loop until first awaited, so a Switch may be built outside one.
    """

    __slots__ = ("started", "stopped")

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.stopped.set()

    def mark_started(self) -> None:
        """The Switch listens and admits peers."""
        self.stopped.clear()
        self.started.set()

    def mark_stopped(self) -> None:
        """The Switch stopped (peers and reactors too)."""
        self.started.clear()
        self.stopped.set()


class SwitchHandle(Protocol):
    """What every reactor may rely on of the Switch that owns it.

    The lifecycle plus what ``docs/writing-a-reactor.md`` shows reactors calling
    (broadcast, stopping a peer). Reactors that need more (dialing, the peer set) use
    the concrete :class:`~cometp2p.switch.switch.Switch`, which satisfies this protocol.
    """

    async def broadcast(
        self, channel_id: int, message: bytes, timeout_s: float = 10.0
    ) -> dict[NodeID, bool]:
        """Send ``message`` to every peer; ``{peer_id: queued}``."""
        ...

    async def stop_peer_for_error(self, peer: Peer, reason: BaseException) -> None:
        """Stop ``peer`` because of ``reason`` (a persistent one is redialed)."""
        ...

    async def stop_peer_gracefully(self, peer: Peer, flush_timeout_s: float = 2.0) -> None:
        """Stop ``peer`` after flushing what is queued to it."""
        ...

    @property
    def lifecycle(self) -> Lifecycle:
        """The started/stopped events."""
        ...

    @property
    def is_running(self) -> bool:
        """True between start and stop."""
        ...

    @property
    def node_id(self) -> NodeID:
        """Our node ID."""
        ...
