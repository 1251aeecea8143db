"""Benchmark of ``Switch.broadcast``: cost per delivery against cost per message on one link.

This process runs the hub, a :class:`~cometp2p.switch.switch.Switch`; a child process runs
``--peers`` leaf Switches that all dial it. Rate limits are off (0) and the flush throttle
is 0 on every Switch. Each leaf counts the messages it receives on the bench channel and
answers every ``ACK_EVERY``-th one with an 8-byte big-endian count.

Measured in one run, on the hub (CPU seconds of this process, ``time.process_time``, so
the leaves' process and the machine's other load do not count):

* ``single_link_us_per_msg``: hub CPU per message sent back to back to ONE leaf with
  ``Peer.try_send`` / ``Peer.send``, until its acknowledgement of the last one;
* ``broadcast_us_per_delivery``: hub CPU per delivery (one message to one peer) of
  ``Switch.broadcast`` of the same messages to all leaves, until every leaf acknowledged;
* ``ratio``: the two divided (the goal is at most 1.5);
* ``broadcasts_per_s`` / ``deliveries_per_s``: wall-clock rates of the broadcast phase
  (bounded by the leaves' process as much as by the hub on a 2-core machine).

Run: ``.venv/bin/python bench/broadcast.py [--peers 100] [--size 1024] [--quick] [--json]
[--loop asyncio|uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import struct
import time
from multiprocessing.connection import Connection as Pipe

from cometp2p.aio.loop import event_loop_name
from cometp2p.aio.loop import run as run_event_loop
from cometp2p.config import P2PConfig
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.wire.netaddress import NetAddress

CHANNEL = 0x60
ACK_EVERY = 50
ACK = struct.Struct(">Q")
TIMEOUT_S = 300.0


def _p2p(peers: int) -> P2PConfig:
    return loopback_p2p_config(
        max_num_inbound_peers=peers + 10,
        max_num_outbound_peers=10,
        send_rate_bytes_per_s=0,
        recv_rate_bytes_per_s=0,
        flush_throttle_timeout_s=0.0,
    )


class BenchReactor(Reactor):
    """Leaf: counts and acknowledges. Hub: records each peer's latest acknowledged count."""

    def __init__(self, *, leaf: bool) -> None:
        super().__init__()
        self.leaf = leaf
        self.received = 0
        self.acked: dict[str, int] = {}
        self.changed = asyncio.Event()
        self.peers: list[Peer] = []

    def get_channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                id=CHANNEL, priority=5, send_queue_capacity=100, recv_message_capacity=1 << 20
            )
        ]

    async def add_peer(self, peer: Peer) -> None:
        self.peers.append(peer)
        self.changed.set()

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        pass

    async def receive(self, envelope: Envelope) -> None:
        message = envelope.message
        assert isinstance(message, bytes)
        if self.leaf:
            self.received += 1
            if self.received % ACK_EVERY == 0:
                await envelope.src.send(CHANNEL, ACK.pack(self.received))
        else:
            self.acked[envelope.src.id] = ACK.unpack(message)[0]
            self.changed.set()

    async def wait_acked(self, peers: list[Peer], target: int) -> None:
        while any(self.acked.get(p.id, 0) < target for p in peers):
            self.changed.clear()
            await self.changed.wait()


def _leaves_process(address: str, peers: int, loop: str, done: Pipe) -> None:
    run_event_loop(_leaves(NetAddress.parse(address, resolve=False), peers, done), loop)


async def _leaves(hub: NetAddress, peers: int, done: Pipe) -> None:
    switches = [
        make_switch([("bench", BenchReactor(leaf=True))], moniker=f"leaf{i}", p2p=_p2p(1))
        for i in range(peers)
    ]
    for switch in switches:
        await switch.start()
    for switch in switches:
        await switch.dial_peer_with_address(hub)
    await asyncio.to_thread(done.recv)  # the hub says when to stop
    for switch in switches:
        await switch.stop()


async def _send_one_link(peer: Peer, message: bytes, count: int) -> None:
    for _ in range(count):
        if not peer.try_send(CHANNEL, message) and not await peer.send(CHANNEL, message, 30.0):
            raise RuntimeError("single-link send timed out")


async def _broadcast(hub: Switch, message: bytes, count: int) -> None:
    for _ in range(count):
        results = await hub.broadcast(CHANNEL, message, 30.0)
        if not all(results.values()):
            raise RuntimeError("a broadcast delivery timed out")


async def measure(peers: int, size: int, messages: int, loop: str) -> dict[str, float]:
    reactor = BenchReactor(leaf=False)
    hub = make_switch([("bench", reactor)], moniker="hub", p2p=_p2p(peers))
    await hub.start()
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(
        target=_leaves_process, args=(str(switch_address(hub)), peers, loop, child_end)
    )
    child.start()
    message = os.urandom(size)
    results: dict[str, float] = {"peers": peers, "size": size, "messages": messages}
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while len(reactor.peers) < peers:
                reactor.changed.clear()
                await reactor.changed.wait()
            all_peers = list(reactor.peers)
            sent = 0

            # Warm-up: a few broadcasts.
            await _broadcast(hub, message, ACK_EVERY)
            sent += ACK_EVERY
            await reactor.wait_acked(all_peers, sent)

            one = all_peers[0]
            link_messages = messages * 20  # about as many messages as a few broadcasts
            link_messages -= link_messages % ACK_EVERY
            cpu = time.process_time()
            await _send_one_link(one, message, link_messages)
            await reactor.wait_acked([one], sent + link_messages)
            link_cpu = time.process_time() - cpu
            for peer in all_peers[1:]:  # keep the counts aligned for the next phase
                await _send_one_link(peer, message, link_messages)
            sent += link_messages
            await reactor.wait_acked(all_peers, sent)

            cpu = time.process_time()
            wall = time.perf_counter()
            await _broadcast(hub, message, messages)
            sent += messages
            await reactor.wait_acked(all_peers, sent)
            bcast_cpu = time.process_time() - cpu
            bcast_wall = time.perf_counter() - wall
    finally:
        parent_end.send("stop")
        child.join(60)
        if child.is_alive():
            child.kill()
        await hub.stop()
    results["single_link_us_per_msg"] = link_cpu / link_messages * 1e6
    results["broadcast_us_per_delivery"] = bcast_cpu / (messages * peers) * 1e6
    results["ratio"] = results["broadcast_us_per_delivery"] / results["single_link_us_per_msg"]
    results["broadcasts_per_s"] = messages / bcast_wall
    results["deliveries_per_s"] = messages * peers / bcast_wall
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024, help="message bytes")
    parser.add_argument("--quick", action="store_true", help="fewer broadcasts")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of the Python ends (default auto, as the node: uvloop where installed)",
    )
    args = parser.parse_args()
    args.loop = event_loop_name(args.loop)
    messages = 500 if args.quick else 2000
    messages -= messages % ACK_EVERY
    results = run_event_loop(measure(args.peers, args.size, messages, args.loop), args.loop)
    print(f"peers {args.peers}, {args.size} B messages, {messages} broadcasts, loop {args.loop}")
    print(f"single link: {results['single_link_us_per_msg']:.2f} us hub CPU per message")
    print(
        f"broadcast:   {results['broadcast_us_per_delivery']:.2f} us hub CPU per delivery "
        f"({results['ratio']:.2f}x the single link; goal <= 1.5x)"
    )
    print(
        f"broadcast:   {results['broadcasts_per_s']:,.0f} broadcasts/s = "
        f"{results['deliveries_per_s']:,.0f} deliveries/s (wall clock)"
    )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
