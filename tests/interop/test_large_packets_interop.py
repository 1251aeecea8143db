"""A cometbft node with ``max_packet_msg_payload_size = 4096`` stays connected (issue #12).

CometBFT refuses any Packet larger than its own send size, so before issue #12 a peer
configured with 4096 (we send 1024) broke the link with its first large packet, and we
redialed it hundreds of times a minute. The node here knows 300 addresses, so its answer
to our PexRequest is a PexAddrs of about 4 KB: one Packet of that size. In both
directions (we dial it; it dials us) the answer arrives whole and the link stays up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from datetime import UTC, datetime

import pytest
from google.protobuf.message import DecodeError

from cometp2p.errors import RemoteProtocolError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import save_addrbook
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import (
    free_loopback_port,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2
from interop.cometbft import LOOPBACK, CometBFTNode
from interop.conftest import NodeFactory

pytestmark = pytest.mark.interop

CHAIN_ID = "cometp2p-large-packets"
PEX_CHANNEL = 0x00
GO_PAYLOAD = 4096
KNOWN_ADDRESSES = 300
FAST_PINGS = MConnectionConfig(ping_interval_s=0.3, pong_timeout_s=0.25, flush_throttle_s=0.01)


class RequestingPexReactor(Reactor):
    """Sends one PexRequest to every new peer and records the PexAddrs answers."""

    def __init__(self) -> None:
        super().__init__()
        self.peers_added: asyncio.Queue[Peer] = asyncio.Queue()
        self.peers_removed: asyncio.Queue[tuple[Peer, BaseException | None]] = asyncio.Queue()
        self.answers: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()  # id, bytes, addrs

    def get_channels(self) -> list[ChannelDescriptor]:
        return [ChannelDescriptor(PEX_CHANNEL, 1, 10, recv_message_capacity=64_000)]

    def decode(self, channel_id: int, data: bytes) -> pex_pb2.Message:
        message = pex_pb2.Message()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise RemoteProtocolError(f"expected a tendermint.p2p.Message: {exc}") from exc
        return message

    async def add_peer(self, peer: Peer) -> None:
        self.peers_added.put_nowait(peer)
        request = pex_pb2.Message(pex_request=pex_pb2.PexRequest())
        await peer.send(PEX_CHANNEL, request.SerializeToString())

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.peers_removed.put_nowait((peer, reason))

    async def receive(self, envelope: Envelope) -> None:
        message = envelope.message
        assert isinstance(message, pex_pb2.Message)
        if message.WhichOneof("sum") == "pex_addrs":
            size = message.ByteSize()
            self.answers.put_nowait((envelope.src.id, size, len(message.pex_addrs.addrs)))
        elif message.WhichOneof("sum") == "pex_request":
            empty = pex_pb2.Message(pex_addrs=pex_pb2.PexAddrs())
            await envelope.src.send(PEX_CHANNEL, empty.SerializeToString())


def write_big_addrbook(node: CometBFTNode) -> None:
    """300 loopback addresses on port 1 (closed: the node's dials fail at once)."""
    book = AddrBook(strict=False, rng=random.Random(12))
    now = datetime.now(UTC)
    for i in range(KNOWN_ADDRESSES):
        ip = ipaddress.ip_address(f"127.1.{i // 200}.{i % 200 + 1}")
        addr = NetAddress(NodeID(f"{i + 1:040x}"), ip, 1)
        # Sources in distinct /16s, so the addresses spread over many new buckets.
        src_ip = ipaddress.ip_address(f"{11 + i % 100}.{i // 100}.1.1")
        book.add_address(addr, NetAddress(NodeID(f"{i + 100_000:040x}"), src_ip, 26656), now)
    save_addrbook(book, node.home / "config" / "addrbook.json")


def wide_node(
    cometbft_node: NodeFactory, persistent_peers: list[str] | None = None
) -> CometBFTNode:
    node = cometbft_node(
        moniker="go-4096",
        chain_id=CHAIN_ID,
        start=False,
        overrides={"p2p": {"max_packet_msg_payload_size": GO_PAYLOAD}},
        persistent_peers=persistent_peers,
    )
    write_big_addrbook(node)
    node.start()
    return node


def our_switch(port: int = 0) -> tuple[Switch, RequestingPexReactor]:
    pex = RequestingPexReactor()
    switch = make_switch(
        [("pex", pex)],
        chain_id=CHAIN_ID,
        moniker="cometp2p-1024",
        p2p=loopback_p2p_config(laddr=f"tcp://{LOOPBACK}:{port}"),
        mconnection_config=FAST_PINGS,
    )
    return switch, pex


async def assert_large_answer_and_link_survives(
    switch: Switch, pex: RequestingPexReactor, node: CometBFTNode, peer: Peer
) -> None:
    node_id, size, count = await pex.answers.get()
    assert node_id == node.node_id
    assert count >= 32
    assert size > 1034  # more than one Packet of Go's default: it came in 4096-byte Packets
    # Several ping intervals later (FAST_PINGS: a missing Pong ends the link in 0.25 s),
    # the link is still up and nothing was removed.
    loop = asyncio.get_running_loop()
    until = loop.time() + 4 * FAST_PINGS.ping_interval_s
    while loop.time() < until:
        await asyncio.sleep(FAST_PINGS.ping_interval_s)
        assert peer.is_running, peer.connection.closed
    assert pex.peers_removed.empty()
    assert switch.peers.has(node.node_id)
    assert "Stopping peer for error" not in node.log_text()


async def test_we_dial_a_cometbft_node_with_4096_byte_packets(cometbft_node: NodeFactory) -> None:
    node = await asyncio.to_thread(wide_node, cometbft_node)
    switch, pex = our_switch()
    async with switch, asyncio.timeout(90):
        peer = await switch.dial_peer_with_address(NetAddress.parse(node.p2p_address))
        assert peer.is_outbound
        await assert_large_answer_and_link_survives(switch, pex, node, peer)


async def test_a_cometbft_node_with_4096_byte_packets_dials_us(
    cometbft_node: NodeFactory,
) -> None:
    port = free_loopback_port()
    switch, pex = our_switch(port)
    async with switch, asyncio.timeout(90):
        ours = str(switch_address(switch))
        node = await asyncio.to_thread(wide_node, cometbft_node, [ours])
        peer = await pex.peers_added.get()  # the node dials after up to 3 s
        assert not peer.is_outbound
        assert peer.id == node.node_id
        await assert_large_answer_and_link_survives(switch, pex, node, peer)
