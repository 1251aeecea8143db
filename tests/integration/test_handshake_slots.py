"""Handshake slots (issue #12 weakness 1): idle sockets of one IP cannot lock peers out.

The attacker uses 127.0.0.2 and honest peers 127.0.0.1: both are loopback, and the
Transport tells them apart by IP.
"""

from __future__ import annotations

import asyncio
import contextlib

from cometp2p.errors import CometP2PError, RejectedError, RejectReason
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.network import LOOPBACK, loopback_p2p_config, make_switch, switch_address
from integration.switch_support import next_rejection, rejections

ATTACKER_IP = "127.0.0.2"
IDLE_SOCKETS = 300


def echo_switch(moniker: str, **p2p: object) -> tuple[Switch, EchoReactor]:
    reactor = EchoReactor()
    return make_switch(
        [("echo", reactor)], moniker=moniker, p2p=loopback_p2p_config(**p2p)
    ), reactor


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(ATTACKER_IP, 0))
        writers.append(writer)
    return writers


async def test_an_honest_peer_gets_in_while_one_ip_holds_hundreds_of_idle_sockets() -> None:
    hub, hub_reactor = echo_switch("hub", max_num_inbound_peers=40)
    honest, _ = echo_switch("honest")
    refused = rejections(hub)
    async with hub, honest, asyncio.timeout(30):
        assert hub.listen_address is not None
        idle = await open_idle(hub.listen_address[1], IDLE_SOCKETS)
        try:
            # At most 8 of them are in the pipeline; the rest were closed at once.
            assert hub.transport.num_incoming_handshakes <= 8
            peer = await honest.dial_peer_with_address(switch_address(hub))
            assert (await hub_reactor.peers_added.get()).id == honest.node_id
            assert peer.is_running
            limits = [e for e in refused_now(refused) if e.reason is RejectReason.LIMIT]
            assert len(limits) >= IDLE_SOCKETS - 8
            assert all(ATTACKER_IP in str(e) for e in limits)
        finally:
            for writer in idle:
                writer.close()


def refused_now(queue: asyncio.Queue[CometP2PError]) -> list[RejectedError]:
    out = []
    while not queue.empty():
        error = queue.get_nowait()
        assert isinstance(error, RejectedError)
        out.append(error)
    return out


async def test_a_socket_that_says_nothing_is_closed_after_the_first_bytes_deadline() -> None:
    hub, _ = echo_switch("hub", handshake_timeout_s=30.0)
    hub.transport.first_bytes_timeout_s = 0.3
    refused = rejections(hub)
    async with hub, asyncio.timeout(10):
        assert hub.listen_address is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        reader, writer = await asyncio.open_connection(
            LOOPBACK, hub.listen_address[1], local_addr=(ATTACKER_IP, 0)
        )
        rejected = await next_rejection(refused)
        waited = loop.time() - started
        assert rejected.reason is RejectReason.AUTH_FAILURE
        assert "no bytes from the peer within 0.3 s" in str(rejected)
        assert waited < 5.0  # not the 30 s handshake timeout
        assert hub.transport.num_incoming_handshakes == 0
        with contextlib.suppress(ConnectionError):
            await reader.read()  # the hub's ephemeral key, then the close
        writer.close()
