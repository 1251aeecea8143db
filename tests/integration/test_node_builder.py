"""cometp2p.node.Node as a library (issue 10): own reactors, their channels advertised, an
error for a reactor added too late, and a node built from a home."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from pathlib import Path

import pytest

from cometp2p.config import Config, InstrumentationConfig, P2PConfig, write_config
from cometp2p.crypto.keys import NodeKey, save_node_key
from cometp2p.errors import ConfigError, LocalProtocolError, ReactorTooLateError
from cometp2p.node import Node
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.reactor import Envelope, Reactor

CHAIN = "node-builder"


class Recorder(Reactor):
    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def get_channels(self) -> list[ChannelDescriptor]:
        return [ChannelDescriptor(id=self.channel, priority=1, send_queue_capacity=4)]

    async def receive(self, envelope: Envelope) -> None:
        assert isinstance(envelope.message, bytes)
        self.received.put_nowait(envelope.message)


def _config(moniker: str) -> Config:
    return Config(
        home=Path("."), moniker=moniker, p2p=P2PConfig(laddr="tcp://127.0.0.1:0", pex=False)
    )


async def test_reactors_added_after_construction_are_advertised_and_reachable() -> None:
    a = Node(_config("a"), NodeKey.generate(), CHAIN)
    b = Node(_config("b"), NodeKey.generate(), CHAIN, [("first", Recorder(0x50))])
    late_a, late_b = Recorder(0x51), Recorder(0x51)
    a.add_reactor("late", late_a)
    b.add_reactor("late", late_b)
    b.switch.add_reactor("direct", Recorder(0x52))  # straight on the Switch, before start
    assert list(a.switch.node_info.channels) == [0x51]
    async with a, b, asyncio.timeout(10):
        assert list(b.switch.node_info.channels) == [0x50, 0x51, 0x52]
        peer = await a.switch.dial_peer_with_address(b.address)
        assert await peer.send(0x51, b"on the late channel")
        assert await late_b.received.get() == b"on the late channel"


async def test_a_reactor_added_after_start_raises_reactor_too_late() -> None:
    node = Node(_config("n"), NodeKey.generate(), CHAIN)
    async with node:
        with pytest.raises(ReactorTooLateError):
            node.add_reactor("late", Recorder(0x60))
        with pytest.raises(ReactorTooLateError):
            node.switch.add_reactor("late", Recorder(0x60))
        assert 0x60 not in node.switch.node_info.channels
    assert issubclass(ReactorTooLateError, LocalProtocolError)


async def test_address_before_start_is_an_error() -> None:
    node = Node(_config("n"), NodeKey.generate(), CHAIN)
    with pytest.raises(LocalProtocolError):
        _ = node.address


def _home(tmp_path: Path, *, genesis: bool) -> tuple[Path, NodeKey]:
    home = tmp_path / "home"
    write_config(Config(home=home, moniker="from-home", p2p=P2PConfig(laddr="tcp://127.0.0.1:0")))
    key = NodeKey.generate()
    save_node_key(key, home / "config" / "node_key.json")
    if genesis:
        (home / "config" / "genesis.json").write_text(json.dumps({"chain_id": "genesis-chain"}))
    return home, key


async def test_from_home_takes_key_chain_and_pex_from_the_home(tmp_path: Path) -> None:
    home, key = _home(tmp_path, genesis=True)
    mine = Recorder(0x70)
    node = Node.from_home(home, reactors=[("mine", mine)])
    assert node.chain_id == "genesis-chain"
    assert node.node_key.node_id == key.node_id
    # The defaults ([p2p] pex, [trust] enabled) come first, then ours.
    assert list(node.switch.reactors) == ["PEX", "TRUST", "mine"]
    async with node:
        assert node.switch.node_info.channels == bytes([0x00, 0x70])
        assert node.switch.node_info.moniker == "from-home"


def test_from_home_without_genesis_needs_a_chain_id(tmp_path: Path) -> None:
    home, _ = _home(tmp_path, genesis=False)
    with pytest.raises(ConfigError, match="chain_id"):
        Node.from_home(home)
    assert Node.from_home(home, chain_id="given", pex=False).chain_id == "given"


async def test_a_metrics_port_in_use_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Node(_metrics_config(f"127.0.0.1:{port}"), NodeKey.generate(), CHAIN)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await node.start()


async def test_metrics_on_port_0_are_reported_and_stopped_with_the_node() -> None:
    node = Node(_metrics_config("127.0.0.1:0"), NodeKey.generate(), CHAIN)
    async with node:
        port = node.metrics_port
        assert port
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def _metrics_config(listen: str) -> Config:
    instrumentation = InstrumentationConfig(prometheus=True, prometheus_listen_addr=listen)
    return dataclasses.replace(_config("m"), instrumentation=instrumentation)
