"""Two nodes in one process: a tiny "shout" reactor answers every message in capitals.

Run it with ``python examples/echo_reactor.py``. The README's library section shows this
program; ``tests/unit/test_docs_snippets.py`` runs both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cometp2p.config import Config, P2PConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.node import Node
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.reactor import Envelope, Reactor

SHOUT = 0x42  # our channel byte; any ID CometBFT does not use


class ShoutReactor(Reactor):
    def __init__(self) -> None:
        super().__init__()
        self.heard: asyncio.Queue[bytes] = asyncio.Queue()

    def get_channels(self) -> list[ChannelDescriptor]:
        return [ChannelDescriptor(id=SHOUT, priority=5, send_queue_capacity=10)]

    async def receive(self, envelope: Envelope) -> None:
        message = envelope.message  # raw bytes: this reactor does not override decode()
        if not isinstance(message, bytes):
            return
        if message.islower():
            await envelope.src.send(SHOUT, message.upper())  # echo, louder
        else:
            self.heard.put_nowait(message)


def loopback_config(moniker: str) -> Config:
    """A node on an ephemeral 127.0.0.1 port, without PEX."""
    p2p = P2PConfig(laddr="tcp://127.0.0.1:0", pex=False)
    return Config(home=Path("."), moniker=moniker, p2p=p2p)


async def main() -> None:
    alice, bob = ShoutReactor(), ShoutReactor()
    a = Node(loopback_config("alice"), NodeKey.generate(), "my-chain", [("shout", alice)])
    b = Node(loopback_config("bob"), NodeKey.generate(), "my-chain", [("shout", bob)])
    async with a, b:
        peer = await a.switch.dial_peer_with_address(b.address)
        await peer.send(SHOUT, b"hello, bob")
        print(await asyncio.wait_for(alice.heard.get(), timeout=5))  # b'HELLO, BOB'


if __name__ == "__main__":
    asyncio.run(main())
