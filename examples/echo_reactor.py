"""Two nodes in one process: a tiny "shout" reactor answers every message in capitals.

Run it with ``python examples/echo_reactor.py``.
"""

from __future__ import annotations

import asyncio

from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.testing.network import make_switch
from cometp2p.wire.netaddress import NetAddress

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
            await envelope.src.send(SHOUT, message.upper())
        else:
            self.heard.put_nowait(message)


async def main() -> None:
    alice, bob = ShoutReactor(), ShoutReactor()
    async with make_switch([("shout", alice)]) as a, make_switch([("shout", bob)]) as b:
        host, port = b.listen_address or ("", 0)
        peer = await a.dial_peer_with_address(
            NetAddress.parse(f"{b.node_info.node_id}@{host}:{port}")
        )
        await peer.send(SHOUT, b"hello, bob")
        print(await asyncio.wait_for(alice.heard.get(), timeout=5))  # b'HELLO, BOB'


if __name__ == "__main__":
    asyncio.run(main())
