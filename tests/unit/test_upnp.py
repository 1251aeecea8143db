"""cometp2p.upnp without a gateway: errors, the hairpin test, probe output, the port mapper,
argument checks, the missing extra (behaviour.md §7). The real gateway is in tests/gateway."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from cometp2p.cli.probe_upnp import format_result
from cometp2p.cli.start import apply_flags
from cometp2p.config import Config, P2PConfig
from cometp2p.errors import CometP2PError, ConfigError, LocalProtocolError
from cometp2p.upnp import (
    Gateway,
    UpnpActionRefusedError,
    UpnpDescriptionError,
    UpnpError,
    UpnpFailure,
    UpnpNoAnswerError,
    UpnpNoWANIPConnectionError,
    UpnpUnavailableError,
    interface_ipv4,
    search,
)
from cometp2p.upnp import mapper as mapper_module
from cometp2p.upnp.mapper import PortMapper
from cometp2p.upnp.probe import Capabilities, ProbeResult, hairpin_test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (UpnpNoAnswerError, UpnpFailure.NO_ANSWER),
        (UpnpDescriptionError, UpnpFailure.DESCRIPTION_UNREADABLE),
        (UpnpNoWANIPConnectionError, UpnpFailure.NO_WAN_IP_CONNECTION),
        (UpnpUnavailableError, UpnpFailure.UNAVAILABLE),
    ],
)
def test_each_error_carries_its_reason(cls: type[UpnpError], reason: UpnpFailure) -> None:
    exc = cls("details")
    assert isinstance(exc, CometP2PError)
    assert exc.reason is reason
    assert str(exc) == f"upnp {reason.value}: details"


def test_action_refused_keeps_action_and_code() -> None:
    exc = UpnpActionRefusedError("AddPortMapping", "UPnP error 718 (ConflictInMappingEntry)", 718)
    assert exc.reason is UpnpFailure.ACTION_REFUSED
    assert (exc.action, exc.error_code) == ("AddPortMapping", 718)
    assert "AddPortMapping" in str(exc)


# -- hairpin (the quirk: Go compares its whole 1024-byte buffer, so never true) ---------


async def test_hairpin_is_true_when_the_data_comes_back() -> None:
    assert await hairpin_test("127.0.0.1", free_port(), "127.0.0.1", timeout_s=5)


async def test_hairpin_is_false_when_nothing_reaches_the_listener() -> None:
    # The listener is on 127.0.0.1 only; 127.0.0.2:port refuses the connection.
    assert not await hairpin_test("127.0.0.1", free_port(), "127.0.0.2", timeout_s=5)


async def test_hairpin_listener_that_cannot_bind_raises() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError):
            await hairpin_test("127.0.0.1", port, "127.0.0.1", timeout_s=1)


# -- probe-upnp output ------------------------------------------------------------------


def test_probe_output_success_and_failure() -> None:
    ok = ProbeResult(
        gateway="router",
        location="http://10.0.0.1:1900/rootDesc.xml",
        control_url="http://10.0.0.1:1900/ctl/IPConn",
        local_ip="10.0.0.2",
        external_ip="100.63.0.7",
        capabilities=Capabilities(port_mapping=True, hairpin=True),
    )
    lines = format_result(ok)
    assert "External IP:  100.63.0.7" in lines
    assert "PortMapping:  true" in lines
    assert "Hairpin:      true" in lines
    assert lines[-2:] == ["Probe success!", '{"PortMapping":true,"Hairpin":true}']
    failed = format_result(ProbeResult(error=UpnpNoAnswerError("nobody there")))
    assert failed == [
        "PortMapping:  false",
        "Hairpin:      false",
        "Probe failed: upnp no answer: nobody there",
    ]


# -- config and flags ---------------------------------------------------------------------


def test_upnp_flag_overrides_config() -> None:
    config = Config(home=Path("/h"))
    assert config.p2p.upnp is False
    assert apply_flags(config, upnp=True).p2p.upnp is True
    on = Config(home=Path("/h"), p2p=P2PConfig(upnp=True))
    assert apply_flags(on).p2p.upnp is True
    assert apply_flags(on, upnp=False).p2p.upnp is False


# -- argument checks and the missing extra -----------------------------------------------


def dummy_gateway() -> Gateway:
    return Gateway(
        location="http://10.0.0.1/d.xml",
        control_url="http://10.0.0.1/ctl",
        service_type="urn:example-org:service:WANIPConnection:1",
        friendly_name="",
        local_ip="10.0.0.2",
        timeout_s=1,
        _service=cast(Any, None),
        _session=cast(Any, None),
    )


async def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    gateway = dummy_gateway()
    assert gateway.urn_domain == "example-org"
    with pytest.raises(LocalProtocolError, match="protocol"):
        await gateway.add_port_mapping("sctp", 1, 1, "x", 0)
    with pytest.raises(LocalProtocolError, match="port"):
        await gateway.add_port_mapping("tcp", 0, 1, "x", 0)
    with pytest.raises(LocalProtocolError, match="lease"):
        await gateway.add_port_mapping("tcp", 1, 1, "x", 86_400)
    with pytest.raises(LocalProtocolError, match="port"):
        await gateway.delete_port_mapping("udp", 70_000)


async def test_missing_extra_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "async_upnp_client", None)
    with pytest.raises(UpnpUnavailableError, match=r"cometp2p\[upnp\]"):
        await search(timeout_s=0.1)


def test_interface_ipv4() -> None:
    assert interface_ipv4("lo") == "127.0.0.1"
    with pytest.raises(ConfigError, match="no-such-if0"):
        interface_ipv4("no-such-if0")


# -- the port mapper ----------------------------------------------------------------------


class FakeGateway:
    """Records actions; fails AddPortMapping while ``failing`` is set."""

    friendly_name = "fake"
    location = "http://fake/d.xml"
    local_ip = "10.0.0.2"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.failing = False
        self.closed = False
        self.added = asyncio.Event()

    async def get_external_address(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address("100.63.0.7")

    async def add_port_mapping(
        self, protocol: str, ext: int, internal: int, desc: str, lease_s: int
    ) -> int:
        self.calls.append(("add", ext, lease_s))
        self.added.set()
        if self.failing:
            raise UpnpActionRefusedError("AddPortMapping", "UPnP error 501 (ActionFailed)", 501)
        return ext

    async def delete_port_mapping(self, protocol: str, ext: int) -> None:
        self.calls.append(("delete", ext, 0))

    async def aclose(self) -> None:
        self.closed = True


async def next_add(fake: FakeGateway) -> None:
    fake.added.clear()
    async with asyncio.timeout(5):
        await fake.added.wait()


async def test_mapper_maps_renews_logs_a_failure_run_once_and_deletes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeGateway()

    async def fake_discover(**_: object) -> FakeGateway:
        return fake

    monkeypatch.setattr(mapper_module, "discover", fake_discover)
    mapper = PortMapper(26656, lease_s=600)
    mapper.renew_every_s = 0.01
    with caplog.at_level(logging.INFO, logger="cometp2p.upnp.mapper"):
        assert await mapper.start() == "100.63.0.7"
        assert fake.calls[0] == ("add", 26656, 600)
        await next_add(fake)  # a renewal
        fake.failing = True
        for _ in range(3):
            await next_add(fake)
        fake.failing = False
        await next_add(fake)
        await next_add(fake)
        await mapper.stop()
    assert fake.calls[-1] == ("delete", 26656, 0)
    assert fake.closed
    messages = [r.getMessage() for r in caplog.records]
    assert sum("renewing the mapping of port 26656 failed" in m for m in messages) == 1
    assert sum("renewed again" in m for m in messages) == 1
    assert mapper.renewals >= 2
    await mapper.stop()  # idempotent
    assert fake.calls[-1] == ("delete", 26656, 0)
    assert [c for c in fake.calls if c[0] == "delete"] == [("delete", 26656, 0)]


async def test_mapper_start_failure_is_logged_once_and_returns_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeGateway()
    fake.failing = True

    async def fake_discover(**_: object) -> FakeGateway:
        return fake

    monkeypatch.setattr(mapper_module, "discover", fake_discover)
    mapper = PortMapper(26656)
    with caplog.at_level(logging.INFO, logger="cometp2p.upnp.mapper"):
        assert await mapper.start() is None
        await mapper.stop()
    assert fake.closed
    assert [r.getMessage() for r in caplog.records] == [
        "upnp disabled, running without it: upnp action refused: AddPortMapping: "
        "UPnP error 501 (ActionFailed)"
    ]
    assert ("delete", 26656, 0) not in fake.calls


# -- the node -------------------------------------------------------------------------------


def make_node(tmp_path: Path, **p2p: Any) -> Any:
    from cometp2p.crypto.keys import NodeKey
    from cometp2p.node import Node

    config = Config(home=tmp_path, moniker="upnp", p2p=P2PConfig(upnp=True, **p2p))
    return Node(config, NodeKey.generate(), "test-chain")


class FakeMapper:
    instances: ClassVar[list[FakeMapper]] = []

    def __init__(self, port: int, **options: Any) -> None:
        self.port, self.options = port, options
        self.stopped = False
        FakeMapper.instances.append(self)

    async def start(self) -> str | None:
        return "100.63.0.7"

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def fake_mapper(monkeypatch: pytest.MonkeyPatch) -> type[FakeMapper]:
    FakeMapper.instances = []
    monkeypatch.setattr(mapper_module, "PortMapper", FakeMapper)
    return FakeMapper


async def test_node_advertises_the_external_ip_and_stops_the_mapper(
    tmp_path: Path, fake_mapper: type[FakeMapper]
) -> None:
    port = free_port()
    node = make_node(tmp_path, laddr=f"tcp://127.0.0.1:{port}")
    node.upnp_options["lease_s"] = 60
    stop, started = asyncio.Event(), asyncio.Event()

    class OnStarted(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "started on" in record.getMessage():
                started.set()

    handler = OnStarted()
    logging.getLogger("cometp2p.node").addHandler(handler)
    logging.getLogger("cometp2p.node").setLevel(logging.INFO)
    try:
        run = asyncio.create_task(node.run(stop))
        async with asyncio.timeout(10):
            await started.wait()
    finally:
        logging.getLogger("cometp2p.node").removeHandler(handler)
        logging.getLogger("cometp2p.node").setLevel(logging.NOTSET)
    assert node.switch.node_info.listen_addr == f"tcp://100.63.0.7:{port}"
    # What the handshake sends is the Transport's copy.
    assert node.switch.transport.node_info.listen_addr == f"tcp://100.63.0.7:{port}"
    (mapper,) = fake_mapper.instances
    assert (mapper.port, mapper.options) == (port, {"lease_s": 60, "source_ip": "127.0.0.1"})
    stop.set()
    async with asyncio.timeout(10):
        await run
    assert mapper.stopped


async def test_node_keeps_a_configured_external_address(
    tmp_path: Path, fake_mapper: type[FakeMapper]
) -> None:
    node = make_node(tmp_path, laddr="tcp://0.0.0.0:26656", external_address="5.6.7.8:9")
    mapper = await node._start_upnp()
    assert mapper is fake_mapper.instances[0]
    assert mapper.options == {}
    assert node.switch.node_info.listen_addr == "5.6.7.8:9"


async def test_node_with_an_ephemeral_port_runs_without_upnp(
    tmp_path: Path, fake_mapper: type[FakeMapper], caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node(tmp_path, laddr="tcp://127.0.0.1:0")
    with caplog.at_level(logging.WARNING, logger="cometp2p.node"):
        assert await node._start_upnp() is None
    assert fake_mapper.instances == []
    assert [r.getMessage() for r in caplog.records] == [
        "upnp disabled: p2p.laddr 'tcp://127.0.0.1:0' has no fixed port"
    ]
