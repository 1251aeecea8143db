"""Two Switches on loopback with echo reactors (behaviour.md §1)."""

from __future__ import annotations

import asyncio

from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import make_switch
from cometp2p.wire.netaddress import NetAddress


def _address(sw_id: str, listen: tuple[str, int]) -> NetAddress:
    return NetAddress.parse(f"{sw_id}@{listen[0]}:{listen[1]}")


async def test_dial_and_echo() -> None:
    ra, rb = EchoReactor(), EchoReactor()
    a = make_switch([("echo", ra)], moniker="a")
    b = make_switch([("echo", rb)], moniker="b")
    async with a, b, asyncio.timeout(10):
        assert b.listen_address is not None
        peer = await a.dial_peer_with_address(_address(b.node_info.node_id, b.listen_address))
        assert peer.node_info.moniker == "b"
        assert peer.is_outbound
        inbound = await rb.peers_added.get()
        assert inbound.node_info.moniker == "a"
        assert not inbound.is_outbound
        assert await peer.send(ECHO_CHANNEL, b"hello")
        assert await rb.received.get() == (a.node_info.node_id, b"hello")
        assert await peer.send(ECHO_CHANNEL, b"ping:xyz")
        assert await ra.received.get() == (b.node_info.node_id, b"pong:xyz")
