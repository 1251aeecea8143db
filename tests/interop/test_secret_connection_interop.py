"""Our keys and SecretConnection against a real CometBFT v0.38.25 node (wire.md §12.3 1, 3, 4).

Key files are read and written interchangeably with ``cometbft``; Python completes the
handshake both as dialer and as listener, authenticates the node's ID, and exchanges
NodeInfo (wire.md §5.2) with it so that the node accepts us as a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cometp2p.aio.secret_connection import SecretConnection, secret_handshake
from cometp2p.crypto.keys import NodeKey, load_node_key, save_node_key
from cometp2p.errors import ConnectionBrokenError
from cometp2p.wire.proto.tendermint.p2p import conn_pb2, pex_pb2, types_pb2
from cometp2p.wire.varint import DelimitedReader, encode_delimited
from interop.cometbft import COMETBFT_VERSION, LOOPBACK, CometBFTNode
from interop.conftest import NodeFactory

pytestmark = pytest.mark.interop

CHAIN_ID = "cometp2p-sc-interop"
MAX_NODE_INFO_BYTES = 10240  # wire.md §5.1
MAX_PACKET_BYTES = 1034  # wire.md §5.1, default max_packet_msg_payload_size
PEX_CHANNEL = 0x00
EXCHANGE_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def node(cometbft_node_module: NodeFactory) -> CometBFTNode:
    return cometbft_node_module(moniker="sc-interop", chain_id=CHAIN_ID, rpc_unsafe=True)


def our_node_info(key: NodeKey, listen_port: int, channels: bytes) -> bytes:
    """A NodeInfo a v0.38 node accepts (wire.md §6.3-6.5), encoded with the generated pb."""
    info = types_pb2.DefaultNodeInfo(
        protocol_version=types_pb2.ProtocolVersion(p2p=8, block=11, app=0),
        default_node_id=key.node_id,
        listen_addr=f"{LOOPBACK}:{listen_port}",
        network=CHAIN_ID,
        version="0.1.0",
        channels=channels,
        moniker="cometp2p-interop",
        other=types_pb2.DefaultNodeInfoOther(tx_index="off", rpc_address=""),
    )
    return info.SerializeToString()


class MessageReader:
    """Reads uvarint-delimited messages off a SecretConnection, each read bounded."""

    def __init__(self, conn: SecretConnection) -> None:
        self.conn = conn
        self.reader = DelimitedReader(MAX_NODE_INFO_BYTES)

    async def next(self, max_size_bytes: int) -> bytes:
        self.reader.max_size_bytes = max_size_bytes
        async with asyncio.timeout(EXCHANGE_TIMEOUT_S):
            while (body := self.reader.next_message()) is None:
                data = await self.conn.read_some()
                if not data:
                    raise EOFError("the node closed the connection")
                self.reader.feed(data)
        return body


async def exchange_node_info(
    conn: SecretConnection, key: NodeKey, listen_port: int, channels: bytes
) -> tuple[types_pb2.DefaultNodeInfo, MessageReader]:
    """Send ours and read theirs concurrently, as both sides do (wire.md §5.2)."""
    conn.write(encode_delimited(our_node_info(key, listen_port, channels)))
    await conn.drain()
    messages = MessageReader(conn)
    theirs = types_pb2.DefaultNodeInfo.FromString(await messages.next(MAX_NODE_INFO_BYTES))
    return theirs, messages


def assert_is_the_nodes_info(info: types_pb2.DefaultNodeInfo, node: CometBFTNode) -> None:
    assert info.default_node_id == node.node_id
    assert info.network == CHAIN_ID
    assert info.version == COMETBFT_VERSION
    assert info.protocol_version.p2p == 8
    assert info.protocol_version.block == 11
    assert info.listen_addr == f"tcp://{LOOPBACK}:{node.p2p_port}"
    assert info.moniker == "sc-interop"
    assert {0x00, 0x20, 0x40} <= set(info.channels)


# -- key files (wire.md §10.1, §12.3 check 1) -----------------------------------------------


def test_node_key_written_by_cometbft_init_gives_the_same_id(node: CometBFTNode) -> None:
    assert load_node_key(node.node_key_path).node_id == node.show_node_id()


def test_node_key_written_by_us_is_read_by_cometbft(cometbft_node: NodeFactory) -> None:
    fresh = cometbft_node(moniker="ourkey", chain_id=CHAIN_ID, start=False)
    key = NodeKey.from_seed(bytes(range(100, 132)))
    save_node_key(key, fresh.node_key_path)
    assert fresh.show_node_id() == key.node_id
    # And a node runs with it: its /status reports our ID.
    fresh.start()
    assert fresh.rpc("status")["node_info"]["id"] == key.node_id


# -- Python dials the node (wire.md §12.3 check 3) ------------------------------------------


async def test_python_dials_node_authenticates_it_and_is_accepted_as_peer(
    node: CometBFTNode,
) -> None:
    key = NodeKey.generate()
    reader, writer = await asyncio.open_connection(LOOPBACK, node.p2p_port)
    conn = await secret_handshake(reader, writer, key, timeout_s=3.0)
    try:
        assert conn.remote_node_id == node.node_id
        theirs, _ = await exchange_node_info(conn, key, listen_port=1, channels=b"\x00")
        assert_is_the_nodes_info(theirs, node)

        peers = await node.await_peers(1, timeout_s=10.0)
        assert peers[0]["node_info"]["id"] == key.node_id
        assert peers[0]["node_info"]["moniker"] == "cometp2p-interop"
        assert peers[0]["is_outbound"] is False
        assert "Inbound Peer rejected" not in node.log_text()
    finally:
        await conn.close()
    await node.await_peers(0, timeout_s=10.0)


async def test_handshake_authenticates_only_the_real_key(node: CometBFTNode) -> None:
    # Two handshakes with two fresh keys: the node's ID is stable, ours differ.
    ids = set()
    for _ in range(2):
        key = NodeKey.generate()
        reader, writer = await asyncio.open_connection(LOOPBACK, node.p2p_port)
        conn = await secret_handshake(reader, writer, key, timeout_s=3.0)
        ids.add(conn.remote_node_id)
        assert conn.local_node_id == key.node_id
        await conn.close()
    assert ids == {node.node_id}


# -- the node dials Python (wire.md §12.3 check 4) ------------------------------------------


@dataclass(frozen=True, slots=True)
class PythonListener:
    accepted: asyncio.Queue[SecretConnection]
    key: NodeKey
    port: int


@pytest.fixture
async def listener() -> AsyncIterator[PythonListener]:
    """A Python listener that runs the handshake on each inbound connection."""
    key = NodeKey.generate()
    accepted: asyncio.Queue[SecretConnection] = asyncio.Queue()
    failures: list[BaseException] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            accepted.put_nowait(await secret_handshake(reader, writer, key, timeout_s=3.0))
        except Exception as exc:  # reported by the test through `failures`
            failures.append(exc)
            writer.close()

    server = await asyncio.start_server(on_connect, LOOPBACK, 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield PythonListener(accepted, key, port)
    finally:
        server.close()
        await server.wait_closed()
        while not accepted.empty():
            await accepted.get_nowait().close()
    assert not failures, failures


async def test_node_dials_python_listener_which_authenticates_it(
    node: CometBFTNode,
    listener: PythonListener,
) -> None:
    key, port = listener.key, listener.port
    await node.arpc("dial_peers", peers=[f"{key.node_id}@{LOOPBACK}:{port}"], persistent=False)
    # The node dials after a random delay of up to 3 s (behaviour.md §1.7).
    async with asyncio.timeout(10.0):
        conn = await listener.accepted.get()
    try:
        assert conn.remote_node_id == node.node_id
        theirs, messages = await exchange_node_info(
            conn, key, listen_port=port, channels=bytes([PEX_CHANNEL])
        )
        assert_is_the_nodes_info(theirs, node)

        peers = await node.await_peers(1, timeout_s=10.0)
        assert peers[0]["node_info"]["id"] == key.node_id
        assert peers[0]["is_outbound"] is True

        # Having dialed us, and with an empty address book, the node asks us for
        # addresses on the PEX channel (wire.md §9.3); pings are skipped if any.
        async with asyncio.timeout(EXCHANGE_TIMEOUT_S):
            while True:
                packet = conn_pb2.Packet.FromString(await messages.next(MAX_PACKET_BYTES))
                if packet.WhichOneof("sum") == "packet_msg":
                    break
        assert packet.packet_msg.channel_id == PEX_CHANNEL
        assert packet.packet_msg.eof is True
        request = pex_pb2.Message.FromString(packet.packet_msg.data)
        assert request.WhichOneof("sum") == "pex_request"
    finally:
        await conn.close()
    await node.await_peers(0, timeout_s=10.0)


async def test_node_rejects_listener_whose_key_is_not_the_dialed_id(
    node: CometBFTNode,
    listener: PythonListener,
) -> None:
    port = listener.port
    impostor_id = NodeKey.generate().node_id
    await node.arpc("dial_peers", peers=[f"{impostor_id}@{LOOPBACK}:{port}"], persistent=False)
    async with asyncio.timeout(10.0):
        conn = await listener.accepted.get()
    try:
        # The handshake itself succeeds (it authenticates keys, not expectations) ...
        assert conn.remote_node_id == node.node_id
        # ... then the node compares our authenticated ID with the one it dialed and hangs up.
        with contextlib.suppress(ConnectionBrokenError):
            async with asyncio.timeout(EXCHANGE_TIMEOUT_S):
                while await conn.read_some():
                    pass
    finally:
        await conn.close()
    assert node.peers() == []
