"""One upgrade pipeline (cometp2p.aio.upgrade) for the Transport and the crawler.

Both used to run their own copy and disagreed: the crawler lower-cased the NodeInfo ID
(so it accepted an upper-case ID the Transport refuses, as Go does), and the Transport
called an undecodable NodeInfo an auth failure. Each test puts both callers in front of
the same misbehaving peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
from collections.abc import AsyncIterator

import pytest

from cometp2p.aio.secret_connection import secret_handshake
from cometp2p.aio.transport import RemoteAddress, Transport, UpgradedConnection
from cometp2p.aio.upgrade import UpgradeError, UpgradeStep, check_peer_node_info
from cometp2p.crawler import CrawlConfig, Crawler, FailureReason
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import CometP2PError, RejectedError, RejectReason
from cometp2p.pex.config import PEX_CHANNEL
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo
from cometp2p.wire.varint import encode_delimited

LOOPBACK = "127.0.0.1"
CHAIN = "test-chain"
CRAWL = CrawlConfig(timeout_s=2.0, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))


def _info(key: NodeKey, **changes: object) -> NodeInfo:
    info = NodeInfo(
        node_id=key.node_id,
        listen_addr=f"{LOOPBACK}:1",
        network=CHAIN,
        channels=bytes([PEX_CHANNEL]),
        moniker="peer",
    )
    return dataclasses.replace(info, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _transport_server(
    key: NodeKey, info: NodeInfo
) -> AsyncIterator[tuple[int, asyncio.Queue[CometP2PError]]]:
    """A Transport listening on loopback; yields its port and a queue of its refusals."""
    refusals: asyncio.Queue[CometP2PError] = asyncio.Queue()
    transport = Transport(key, info, handshake_timeout_s=2.0)

    async def accepted(upgraded: UpgradedConnection) -> None:
        await upgraded.secret.close()

    def refused(error: CometP2PError, _remote: RemoteAddress) -> None:
        refusals.put_nowait(error)

    _, port = await transport.listen(LOOPBACK, 0, accepted, refused)
    try:
        yield port, refusals
    finally:
        await transport.close()


def test_check_peer_node_info_compares_ids_exactly() -> None:
    ours, key = _info(NodeKey.generate()), NodeKey.generate()
    theirs = _info(key, node_id=NodeID(key.node_id.upper()))
    with pytest.raises(UpgradeError) as info:
        check_peer_node_info(ours, theirs, key.node_id)
    assert info.value.step is UpgradeStep.NODE_INFO_ID
    assert info.value.node_info is theirs
    check_peer_node_info(ours, _info(key), key.node_id)  # the lowercase ID passes


async def test_upper_case_node_info_id_is_refused_by_transport_and_crawler_alike() -> None:
    liar_key = NodeKey.generate()
    liar_info = _info(liar_key, node_id=NodeID(liar_key.node_id.upper()), moniker="liar")
    async with asyncio.timeout(20), _transport_server(liar_key, liar_info) as (port, _):
        address = NetAddress.parse(f"{liar_key.node_id}@{LOOPBACK}:{port}", resolve=False)
        dialer = Transport(NodeKey.generate(), _info(NodeKey.generate()), handshake_timeout_s=2.0)
        with pytest.raises(RejectedError) as refused:
            await dialer.dial(address)
        assert refused.value.reason is RejectReason.AUTH_FAILURE
        assert "differs from authenticated ID" in str(refused.value)

        result = await Crawler(CHAIN, CRAWL).crawl([address])
    record = result.node(liar_key.node_id)
    assert record is not None
    assert not record.reachable
    assert record.error is FailureReason.AUTH_FAILURE
    assert "differs from authenticated ID" in (record.error_detail or "")
    assert record.node_info is not None  # what the node told us is kept
    assert record.node_info.moniker == "liar"


@contextlib.asynccontextmanager
async def _garbage_node_info_server(key: NodeKey) -> AsyncIterator[int]:
    """Completes the SecretConnection handshake, then sends a NodeInfo that does not decode."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            secret = await secret_handshake(reader, writer, key, timeout_s=2.0)
            secret.write(encode_delimited(b"\xff\xff\xff\xff"))
            await secret.drain()
            with contextlib.suppress(CometP2PError):
                async with asyncio.timeout(2.0):
                    while await secret.read_some():
                        pass
        except (CometP2PError, OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_undecodable_node_info_is_a_handshake_failure_not_an_auth_failure() -> None:
    key = NodeKey.generate()
    async with asyncio.timeout(20), _garbage_node_info_server(key) as port:
        address = NetAddress.parse(f"{key.node_id}@{LOOPBACK}:{port}", resolve=False)
        dialer = Transport(NodeKey.generate(), _info(NodeKey.generate()), handshake_timeout_s=2.0)
        with pytest.raises(RejectedError) as refused:
            await dialer.dial(address)
        assert refused.value.reason is RejectReason.HANDSHAKE_FAILURE
        assert refused.value.node_id == key.node_id

        result = await Crawler(CHAIN, CRAWL).crawl([address])
    record = result.node(key.node_id)
    assert record is not None
    assert record.error is FailureReason.PROTOCOL_ERROR
    assert "NodeInfo" in (record.error_detail or "")


async def test_listener_calls_a_missing_node_info_a_handshake_failure() -> None:
    key = NodeKey.generate()
    async with asyncio.timeout(20), _transport_server(key, _info(key)) as (port, refusals):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        secret = await secret_handshake(reader, writer, NodeKey.generate(), timeout_s=2.0)
        secret.write(encode_delimited(b"\xff\xff\xff\xff"))
        await secret.drain()
        refusal = await refusals.get()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert isinstance(refusal, RejectedError)
    assert refusal.reason is RejectReason.HANDSHAKE_FAILURE
