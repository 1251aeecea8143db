"""Our Switch against real CometBFT v0.38.25: a ``cometbft start`` node and the Go harness.

behaviour.md §1.5-§1.8 and wire.md §12.3: the upgrade pipeline and peer admission in
both directions, NodeInfo as each side reports it, Ping/Pong liveness, the PEX channel a
Go node uses at once, echo traffic both ways with the Go harness's Switch, and wrong-chain
refusals with their reasons on each side.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest
from google.protobuf.message import DecodeError

from cometp2p.errors import (
    CometP2PError,
    IncompatiblePeerError,
    IncompatibleReason,
    RejectedError,
    RejectReason,
    RemoteProtocolError,
)
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import (
    free_loopback_port,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2
from interop.cometbft import COMETBFT_VERSION, LOOPBACK, CometBFTNode, JSONObject
from interop.conftest import NodeFactory, StartHarness
from interop.goharness import GoHarness, payload

pytestmark = pytest.mark.interop

CHAIN_ID = "cometp2p-switch-interop"
OUR_MONIKER = "cometp2p-switch"
PEX_CHANNEL = 0x00
PONG_BYTES = 3  # a delimited Packet{pong}: 02 12 00 (wire.md §4.3)

# Our pings go out every 0.3 s and a Pong must come within 0.25 s, so a link that stays
# up across several intervals proves the Go side answers every Ping.
FAST_PINGS = MConnectionConfig(ping_interval_s=0.3, pong_timeout_s=0.25, flush_throttle_s=0.01)


class MinimalPexReactor(Reactor):
    """Owns channel 0x00 as CometBFT's PEXReactor does, and knows no addresses.

    Every PexRequest is answered with an empty PexAddrs (a valid answer: the Go node
    asked); anything else is recorded. Not the real PEXReactor (``cometp2p.pex``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: asyncio.Queue[str] = asyncio.Queue()
        self.answered: asyncio.Queue[str] = asyncio.Queue()
        self.others: list[pex_pb2.Message] = []
        self.peers_added: asyncio.Queue[Peer] = asyncio.Queue()
        self.peers_removed: asyncio.Queue[Peer] = asyncio.Queue()

    async def add_peer(self, peer: Peer) -> None:
        self.peers_added.put_nowait(peer)

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.peers_removed.put_nowait(peer)

    def get_channels(self) -> list[ChannelDescriptor]:
        # Go's PEX channel: priority 1, 10 queued messages, 64000-byte messages.
        return [
            ChannelDescriptor(
                id=PEX_CHANNEL, priority=1, send_queue_capacity=10, recv_message_capacity=64000
            )
        ]

    def decode(self, channel_id: int, data: bytes) -> pex_pb2.Message:
        message = pex_pb2.Message()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise RemoteProtocolError(f"expected a tendermint.p2p.Message: {exc}") from exc
        return message

    async def receive(self, envelope: Envelope) -> None:
        message = envelope.message
        assert isinstance(message, pex_pb2.Message)
        if message.WhichOneof("sum") != "pex_request":
            self.others.append(message)
            return
        self.requests.put_nowait(envelope.src.id)
        reply = pex_pb2.Message(pex_addrs=pex_pb2.PexAddrs())
        if await envelope.src.send(PEX_CHANNEL, reply):
            self.answered.put_nowait(envelope.src.id)


def our_switch(
    *,
    chain_id: str = CHAIN_ID,
    port: int = 0,
    echo: EchoReactor | None = None,
) -> tuple[Switch, MinimalPexReactor]:
    pex = MinimalPexReactor()
    reactors: list[tuple[str, Reactor]] = [("pex", pex)]
    if echo is not None:
        reactors.append(("echo", echo))
    switch = make_switch(
        reactors,
        chain_id=chain_id,
        moniker=OUR_MONIKER,
        p2p=loopback_p2p_config(laddr=f"tcp://{LOOPBACK}:{port}"),
        mconnection_config=FAST_PINGS,
    )
    return switch, pex


async def eventually(probe: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``probe`` until it holds, for what has no event to wait on (a Go node's log
    or RPC, byte counters).

    Raises:
        AssertionError: naming ``what`` after ``timeout_s`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if probe():
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def assert_pongs_arrive(peer: Peer, count: int) -> None:
    """The link stays up while at least ``count`` more Pongs' worth of bytes arrive.

    With ``FAST_PINGS`` a missing Pong would end the connection within 0.25 s.
    """
    start = peer.status().bytes_received
    loop = asyncio.get_running_loop()
    began = loop.time()
    await eventually(
        lambda: peer.status().bytes_received - start >= count * PONG_BYTES,
        f"{count} pongs from {peer.id}",
        timeout_s=count * FAST_PINGS.ping_interval_s + 5.0,
    )
    # Ensure the link also lived through that many full ping intervals.
    remaining = count * FAST_PINGS.ping_interval_s - (loop.time() - began)
    if remaining > 0:
        await asyncio.sleep(remaining)
    assert peer.is_running, f"the link to {peer.id} ended: {peer.connection.closed}"


async def go_peer(node: CometBFTNode, node_id: str, timeout_s: float = 10.0) -> JSONObject:
    """The Go node's ``/net_info`` entry for ``node_id``, polled until it is listed.

    The Go node adds a peer to ``/net_info`` only after its own reactors took it, which
    can come after our side already saw the connection: never assert on the first read.

    Raises:
        AssertionError: not listed exactly once within ``timeout_s`` seconds.
    """
    found: list[JSONObject] = []

    def listed() -> bool:
        found[:] = [p for p in node.peers() if p["node_info"]["id"] == node_id]
        return len(found) == 1

    await eventually(listed, f"{node_id} in the Go node's /net_info", timeout_s=timeout_s)
    return found[0]


def assert_reports_the_go_node(peer: Peer, node: CometBFTNode) -> None:
    info = peer.node_info
    assert peer.id == node.node_id
    assert info.network == CHAIN_ID
    assert info.moniker == "go-node"
    assert info.version == COMETBFT_VERSION
    assert info.protocol_version.p2p == 8
    assert info.protocol_version.block == 11
    assert info.listen_addr == f"tcp://{LOOPBACK}:{node.p2p_port}"
    assert info.rpc_address == f"tcp://{LOOPBACK}:{node.rpc_port}"
    assert {0x00, 0x20, 0x21, 0x22, 0x23, 0x30, 0x38, 0x40} <= set(info.channels)


@pytest.fixture(scope="module")
def node(cometbft_node_module: NodeFactory) -> CometBFTNode:
    return cometbft_node_module(moniker="go-node", chain_id=CHAIN_ID, rpc_unsafe=True)


# -- a real cometbft node ------------------------------------------------------------------


async def test_our_switch_dials_cometbft_and_the_link_stays_up(node: CometBFTNode) -> None:
    switch, _ = our_switch()
    async with switch, asyncio.timeout(60):
        target = NetAddress.parse(node.p2p_address)
        peer = await switch.dial_peer_with_address(target)
        assert peer.is_outbound
        assert peer.socket_address == target
        assert_reports_the_go_node(peer, node)

        theirs = (await node.await_peers(1, timeout_s=10.0))[0]
        assert theirs["node_info"]["id"] == switch.node_id
        assert theirs["node_info"]["moniker"] == OUR_MONIKER
        assert theirs["node_info"]["network"] == CHAIN_ID
        assert theirs["is_outbound"] is False
        assert theirs["node_info"]["listen_addr"] == switch.node_info.listen_addr

        await assert_pongs_arrive(peer, 4)
        # The Go side saw our Pings: its receive counter for us kept growing.
        received = (await go_peer(node, switch.node_id))["connection_status"]
        assert int(received["RecvMonitor"]["Bytes"]) > 0
        assert "Stopping peer for error" not in node.log_text()
        assert switch.num_peers() == (1, 0, 0)
    await node.await_peers(0, timeout_s=10.0)


async def test_cometbft_dials_us_through_persistent_peers(
    cometbft_node: NodeFactory,
) -> None:
    port = free_loopback_port()
    switch, pex = our_switch(port=port)
    rejected: list[CometP2PError] = []
    switch.on_peer_rejected = rejected.append
    async with switch, asyncio.timeout(90):
        ours = switch_address(switch)
        assert ours.port == port
        go = await asyncio.to_thread(
            cometbft_node, moniker="go-node", chain_id=CHAIN_ID, persistent_peers=[str(ours)]
        )
        # The node dials its persistent peers after a random wait of up to 3 s.
        peer = await pex.peers_added.get()
        assert not peer.is_outbound
        assert_reports_the_go_node(peer, go)

        theirs = (await go.await_peers(1, timeout_s=10.0))[0]
        assert theirs["node_info"]["id"] == switch.node_id
        assert theirs["node_info"]["moniker"] == OUR_MONIKER
        assert theirs["is_outbound"] is True

        # Having dialed us with an empty address book, the node asks us for addresses;
        # our empty answer is valid and the link survives it and several pings.
        assert await pex.requests.get() == go.node_id
        assert await pex.answered.get() == go.node_id
        await assert_pongs_arrive(peer, 4)
        assert (await go_peer(go, switch.node_id))["is_outbound"] is True
        assert "Stopping peer for error" not in go.log_text()
        assert pex.others == []
        assert rejected == []
        await asyncio.to_thread(go.stop)
        # The node went away: we notice and drop it (it is not persistent for us).
        assert await pex.peers_removed.get() is peer
        assert switch.num_peers() == (0, 0, 0)


async def test_cometbft_dials_us_through_dial_peers(node: CometBFTNode) -> None:
    switch, pex = our_switch()
    async with switch, asyncio.timeout(60):
        await node.arpc("dial_peers", peers=[str(switch_address(switch))], persistent=False)
        peer = await pex.peers_added.get()  # the node dials after up to 3 s
        assert not peer.is_outbound
        assert_reports_the_go_node(peer, node)
        assert (await go_peer(node, switch.node_id))["is_outbound"] is True
        await assert_pongs_arrive(peer, 2)
    await node.await_peers(0, timeout_s=10.0)


async def test_cometbft_refuses_our_node_on_another_chain(node: CometBFTNode) -> None:
    switch, _ = our_switch(chain_id="not-the-chain")
    async with switch, asyncio.timeout(60):
        with pytest.raises(RejectedError) as info:
            await switch.dial_peer_with_address(NetAddress.parse(node.p2p_address))
        # We refuse them too, naming both networks.
        assert info.value.reason is RejectReason.INCOMPATIBLE
        assert isinstance(info.value.__cause__, IncompatiblePeerError)
        assert info.value.__cause__.reason is IncompatibleReason.NETWORK
        assert f"'not-the-chain', peer is on '{CHAIN_ID}'" in str(info.value)
        # The Go node refused us with its own reason, in its log.
        expected = f"peer is on a different network. Got not-the-chain, expected {CHAIN_ID}"
        await eventually(lambda: expected in node.log_text(), "the node's refusal in its log")
        assert switch.node_id not in node.peer_ids()


async def test_we_refuse_cometbft_on_another_chain(node: CometBFTNode) -> None:
    switch, _ = our_switch(chain_id="not-the-chain")
    refused: asyncio.Queue[CometP2PError] = asyncio.Queue()
    switch.on_peer_rejected = refused.put_nowait
    async with switch, asyncio.timeout(60):
        ours = str(switch_address(switch))
        await node.arpc("dial_peers", peers=[ours], persistent=False)
        error = await refused.get()  # the node dials after up to 3 s
        assert isinstance(error, RejectedError)
        assert error.reason is RejectReason.INCOMPATIBLE
        assert error.node_id == node.node_id
        assert isinstance(error.__cause__, IncompatiblePeerError)
        assert error.__cause__.reason is IncompatibleReason.NETWORK
        assert f"expected network 'not-the-chain', peer is on '{CHAIN_ID}'" in str(error)
        expected = f"peer is on a different network. Got not-the-chain, expected {CHAIN_ID}"
        await eventually(lambda: expected in node.log_text(), "the node's dial failure")
        assert len(switch.peers) == 0
        assert switch.node_id not in node.peer_ids()
        # Cooled down: we would not dial it back for a while.
        assert switch.cooldown_remaining(node.node_id) > 0


# -- the Go harness's Switch with an echo reactor ------------------------------------------


async def harness_and_ours(
    goharness: StartHarness, *extra: str
) -> tuple[GoHarness, str, str, Switch, EchoReactor]:
    harness = await goharness(
        "switch-echo", "--chain-id", CHAIN_ID, "--moniker", "go-echo",
        "--echo-mode", "ping", "--flush-throttle-ms", "5", *extra,
    )  # fmt: skip
    listening = await harness.wait_for("listening")
    echo = EchoReactor()
    switch, _ = our_switch(echo=echo)
    return harness, str(listening["listen"]), str(listening["node_id"]), switch, echo


async def exchange_echoes(
    harness: GoHarness, switch: Switch, echo: EchoReactor, peer: Peer
) -> None:
    go_id = peer.id
    # Ours pings Go: Go's echo reactor answers with a pong, which our reactor records.
    assert await peer.send(ECHO_CHANNEL, b"ping:from-python")
    assert await echo.received.get() == (go_id, b"pong:from-python")
    got = await harness.wait_for("receive", peer=switch.node_id, hex=b"ping:from-python".hex())
    assert got["channel"] == ECHO_CHANNEL
    # Go pings ours: our echo reactor answers.
    await harness.send({"cmd": "send", "channel": ECHO_CHANNEL, "hex": b"ping:from-go".hex()})
    reply = await harness.wait_for("receive", hex=b"pong:from-go".hex())
    assert reply["peer"] == switch.node_id
    # Multi-packet messages both ways, byte for byte.
    big = payload(5000)
    assert await peer.send(ECHO_CHANNEL, big)
    got = await harness.wait_for("receive", size=5000)
    assert got["sha256"] == hashlib.sha256(big).hexdigest()
    await harness.send({"cmd": "send", "channel": ECHO_CHANNEL, "size": 3000})
    assert await echo.received.get() == (go_id, payload(3000))


async def test_go_switch_echo_when_we_dial(goharness: StartHarness) -> None:
    harness, listen, go_id, switch, echo = await harness_and_ours(goharness)
    async with switch, asyncio.timeout(30):
        peer = await switch.dial_peer_with_address(NetAddress.parse(f"{go_id}@{listen}"))
        assert peer.node_info.moniker == "go-echo"
        assert peer.node_info.channels == bytes([ECHO_CHANNEL])
        added = await harness.wait_for("peer_added", peer=switch.node_id)
        assert added["outbound"] is False
        assert added["moniker"] == OUR_MONIKER
        assert added["network"] == CHAIN_ID
        assert added["channels"] == bytes(switch.node_info.channels).hex()
        await exchange_echoes(harness, switch, echo, peer)
        await assert_pongs_arrive(peer, 3)
        await switch.stop_peer_gracefully(peer)
        removed = await harness.wait_for("peer_removed", peer=switch.node_id)
        assert removed["reason"]


async def test_go_switch_echo_when_go_dials(goharness: StartHarness) -> None:
    echo = EchoReactor()
    switch, _ = our_switch(echo=echo)
    async with switch, asyncio.timeout(30):
        ours = str(switch_address(switch))
        harness = await goharness(
            "switch-echo", "--chain-id", CHAIN_ID, "--moniker", "go-echo",
            "--echo-mode", "ping", "--flush-throttle-ms", "5", "--dial", ours,
        )  # fmt: skip
        added = await harness.wait_for("peer_added", peer=switch.node_id)
        assert added["outbound"] is True
        assert added["moniker"] == OUR_MONIKER
        peer = await echo.peers_added.get()
        assert not peer.is_outbound
        assert peer.node_info.moniker == "go-echo"
        await exchange_echoes(harness, switch, echo, peer)
        # Go stops the peer for an error: we see the link end and remove it.
        await harness.send({"cmd": "stop_peer", "peer": switch.node_id})
        removed, reason = await echo.peers_removed.get()
        assert removed is peer
        assert reason is not None


async def test_go_switch_on_another_chain_is_refused_both_ways(goharness: StartHarness) -> None:
    switch, _ = our_switch(echo=EchoReactor())
    refused: asyncio.Queue[CometP2PError] = asyncio.Queue()
    switch.on_peer_rejected = refused.put_nowait
    async with switch, asyncio.timeout(30):
        harness = await goharness(
            "switch-echo", "--chain-id", "go-chain", "--dial", str(switch_address(switch))
        )
        listening = await harness.wait_for("listening")
        failed = await harness.wait_for("dial_failed")
        # Go checks our NodeInfo itself: "incompatible: peer is on a different network..."
        assert f"different network. Got {CHAIN_ID}, expected go-chain" in str(failed["error"])
        error = await refused.get()
        assert isinstance(error, RejectedError)
        assert error.reason is RejectReason.INCOMPATIBLE
        assert f"expected network '{CHAIN_ID}', peer is on 'go-chain'" in str(error)
        # And our dial to it is refused by both, with the typed reason on our side.
        go = NetAddress.parse(f"{listening['node_id']}@{listening['listen']}")
        # Its refusal cooled it down: no dial would leave us. An explicit end allows one.
        assert switch.cooldown_remaining(go.id) > 0
        switch.end_cooldown(go.id)
        with pytest.raises(RejectedError) as info:
            await switch.dial_peer_with_address(go)
        assert info.value.reason is RejectReason.INCOMPATIBLE
        log = await harness.wait_for("log", msg="Inbound Peer rejected")
        assert "different network" in str(log["fields"])
