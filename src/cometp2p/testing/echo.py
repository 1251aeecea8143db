"""An echo reactor: sends every message back to its sender on the same channel.

Useful in tests, in ``localnet`` and as the smallest example of the Reactor API.
"""

from __future__ import annotations

import asyncio

from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor

__all__ = ["ECHO_CHANNEL", "EchoReactor"]

ECHO_CHANNEL = 0x42
"""The channel the echo reactor uses unless told otherwise (unused by CometBFT)."""


class EchoReactor(Reactor):
    """Echoes messages that start with ``b"ping:"`` as ``b"pong:" + rest``.

    Anything else is recorded in :attr:`received` (a queue of ``(peer_id, message)``)
    without an answer, so two echo reactors never loop.

    Args:
        channel_id: the channel to own.
        priority: its send priority.
    """

    def __init__(self, channel_id: int = ECHO_CHANNEL, priority: int = 5) -> None:
        super().__init__()
        self.channel_id = channel_id
        self.priority = priority
        self.received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.peers_added: asyncio.Queue[Peer] = asyncio.Queue()
        self.peers_removed: asyncio.Queue[tuple[Peer, BaseException | None]] = asyncio.Queue()

    def get_channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                id=self.channel_id,
                priority=self.priority,
                send_queue_capacity=100,
                recv_message_capacity=4 * 1024 * 1024,
            )
        ]

    async def add_peer(self, peer: Peer) -> None:
        self.peers_added.put_nowait(peer)

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.peers_removed.put_nowait((peer, reason))

    async def receive(self, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, bytes):  # this reactor never decodes
            raise TypeError(f"expected bytes, got {type(message).__name__}")
        if message.startswith(b"ping:"):
            await envelope.src.send(self.channel_id, b"pong:" + message[5:])
        else:
            self.received.put_nowait((envelope.src.id, message))
