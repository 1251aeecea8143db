"""Shared pieces of the Switch integration tests: a recording reactor and rejection queues."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from cometp2p.errors import CometP2PError, RejectedError
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import EchoReactor


class RecordingReactor(EchoReactor):
    """An EchoReactor that also logs every hook call, in order, as ``(hook, peer_id)``.

    ``remove_gate``, when cleared, holds ``remove_peer`` until it is set again.
    """

    def __init__(self, channel_id: int = 0x42) -> None:
        super().__init__(channel_id)
        self.log: list[tuple[str, str]] = []
        self.remove_gate = asyncio.Event()
        self.remove_gate.set()
        self.removing = asyncio.Event()

    def init_peer(self, peer: Peer) -> None:
        self.log.append(("init", peer.id))

    async def add_peer(self, peer: Peer) -> None:
        self.log.append(("add", peer.id))
        await super().add_peer(peer)

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.log.append(("remove_start", peer.id))
        self.removing.set()
        await self.remove_gate.wait()
        self.log.append(("remove", peer.id))
        await super().remove_peer(peer, reason)

    async def receive(self, envelope: Envelope) -> None:
        self.log.append(("receive", envelope.src.id))
        await super().receive(envelope)


def rejections(switch: Switch) -> asyncio.Queue[CometP2PError]:
    """A queue of every inbound refusal of ``switch`` (through ``on_peer_rejected``)."""
    queue: asyncio.Queue[CometP2PError] = asyncio.Queue()
    switch.on_peer_rejected = queue.put_nowait
    return queue


async def next_rejection(queue: asyncio.Queue[CometP2PError]) -> RejectedError:
    """The next refusal, which must be a RejectedError."""
    error = await queue.get()
    assert isinstance(error, RejectedError), repr(error)
    return error


@contextlib.asynccontextmanager
async def running(switches: Sequence[Switch]) -> AsyncIterator[None]:
    """Start every switch; stop them all at the end, in reverse order."""
    async with contextlib.AsyncExitStack() as stack:
        for switch in switches:
            await stack.enter_async_context(switch)
        yield


async def peers_added(reactor: EchoReactor, count: int) -> list[Peer]:
    """The next ``count`` peers the reactor was told about."""
    return [await reactor.peers_added.get() for _ in range(count)]
