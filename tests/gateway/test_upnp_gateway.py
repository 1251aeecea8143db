"""Our UPnP client, probe and ``start --p2p.upnp`` against a real miniupnpd (behaviour.md §7).

The client runs in its own network namespace next to the gateway's (see ``lab.py``);
mappings are read from the gateway's nftables, where miniupnpd puts them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.lab import (
    EXTERNAL_IP,
    LAN_CLIENT_IP,
    LAN_GATEWAY_IP,
    GatewayLab,
    Mapping,
)

pytestmark = pytest.mark.gateway

_POLL_S = 0.05


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(_POLL_S)


def tcp_mapping(port: int) -> Mapping:
    return Mapping("TCP", port, LAN_CLIENT_IP, port)


# -- discovery and the external address ------------------------------------------------


def test_discovery_finds_the_daemon_and_its_external_ip(lab: GatewayLab) -> None:
    found = lab.run_client("discover")
    assert "error" not in found, found
    assert found["location"] == lab.location
    assert found["control_url"] == lab.control_url
    assert found["service_type"] == "urn:schemas-upnp-org:service:WANIPConnection:1"
    assert found["urn_domain"] == "schemas-upnp-org"
    assert found["local_ip"] == LAN_CLIENT_IP
    assert found["external_ip"] == EXTERNAL_IP


def test_discovery_from_a_given_source_address(lab: GatewayLab) -> None:
    found = lab.run_client("discover", LAN_CLIENT_IP)
    assert "error" not in found, found
    assert found["control_url"] == lab.control_url
    assert found["external_ip"] == EXTERNAL_IP


# -- port mappings ----------------------------------------------------------------------


def test_mapping_appears_in_the_gateway_and_is_gone_after_delete(lab: GatewayLab) -> None:
    port = 27001
    assert tcp_mapping(port) not in lab.mappings()
    added = lab.run_client("map", lab.location, str(port), "600")
    assert added.get("mapped") == port, added
    assert added["internal_client"] == LAN_CLIENT_IP
    assert tcp_mapping(port) in lab.mappings()
    if shutil.which("upnpc"):  # miniupnpc's own client, as an independent lister
        assert f"TCP {port}->{LAN_CLIENT_IP}:{port} 'cometp2p test'" in lab.upnpc_list()
    deleted = lab.run_client("delete", lab.location, str(port))
    assert deleted.get("deleted") == port, deleted
    assert tcp_mapping(port) not in lab.mappings()


def test_refused_mapping_is_an_action_refused_error(lab: GatewayLab) -> None:
    # The daemon's permission rules allow only ports 1024-65535.
    refused = lab.run_client("map", lab.location, "80", "600")
    assert refused.get("error") == "UpnpActionRefusedError", refused
    assert refused["reason"] == "action refused"
    assert "AddPortMapping" in refused["message"]
    assert all(m.external_port != 80 for m in lab.mappings())


# -- broken or missing gateways -----------------------------------------------------------


def test_no_responder_is_no_answer_within_the_timeout(
    make_lab: Callable[..., GatewayLab],
) -> None:
    lab = make_lab(start_daemon=False)
    result = lab.run_client("discover", env={"TIMEOUT_S": "1"})
    assert result.get("error") == "UpnpNoAnswerError", result
    assert result["reason"] == "no answer"
    assert 0.9 <= result["elapsed_s"] < 2.0


def test_unreachable_description_is_unreadable_within_the_timeout(
    make_lab: Callable[..., GatewayLab],
) -> None:
    lab = make_lab(start_daemon=False)
    # Nothing has 10.214.0.3: the connect waits for an ARP answer that never comes.
    result = lab.run_client("open", "http://10.214.0.3:5000/rootDesc.xml", env={"TIMEOUT_S": "1"})
    assert result.get("error") == "UpnpDescriptionError", result
    assert result["reason"] == "description unreadable"
    assert result["elapsed_s"] < 2.0
    refused = lab.run_client("open", f"http://{LAN_GATEWAY_IP}:9/rootDesc.xml")
    assert refused.get("error") == "UpnpDescriptionError", refused


def test_a_gateway_that_stops_answering_is_no_answer_within_the_timeout(lab: GatewayLab) -> None:
    assert lab.daemon is not None
    script = Path(__file__).with_name("client_main.py")
    client = subprocess.Popen(
        lab.client_argv(sys.executable, str(script), "stalled", lab.location),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIMEOUT_S": "1"},
    )
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        assert json.loads(client.stdout.readline()) == {"opened": True}
        lab.daemon.send_signal(signal.SIGSTOP)  # the daemon hangs: no answer to the action
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            out, _ = client.communicate(timeout=20)
        finally:
            lab.daemon.send_signal(signal.SIGCONT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    action_line, result_line = out.strip().splitlines()[-2:]
    result = json.loads(result_line)
    assert result.get("error") == "UpnpNoAnswerError", result
    assert "GetExternalIPAddress" in result["message"]
    assert 0.9 <= json.loads(action_line)["action_s"] < 2.0


NON_IGD = """<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <device>
    <deviceType>urn:schemas-upnp-org:device:MediaRenderer:1</deviceType>
    <friendlyName>not a gateway</friendlyName>
    <manufacturer>cometp2p tests</manufacturer>
    <modelName>renderer</modelName>
    <UDN>uuid:5d3cec3a-8cf0-11e0-98ee-001a6bd2d07b</UDN>
  </device>
</root>
"""

IGD_WITHOUT_WANIP = NON_IGD.replace("MediaRenderer", "InternetGatewayDevice")


def _serving(lab: GatewayLab, url: str) -> bool:
    fetch = (
        f"import urllib.request as u; u.build_opener(u.ProxyHandler({{}})).open({url!r}, timeout=1)"
    )
    done = subprocess.run(lab.client_argv(sys.executable, "-c", fetch), capture_output=True)
    return done.returncode == 0


@pytest.fixture
def description_server(
    make_lab: Callable[..., GatewayLab], tmp_path: Path
) -> Iterator[tuple[GatewayLab, str]]:
    """A lab without UPnP daemon whose gateway namespace serves a few descriptions over
    HTTP; the lab and the server's base URL."""
    lab = make_lab(start_daemon=False)
    root = tmp_path / "www"
    root.mkdir()
    (root / "renderer.xml").write_text(NON_IGD)
    (root / "igd.xml").write_text(IGD_WITHOUT_WANIP)
    (root / "garbage.xml").write_text("this is not XML <<<")
    port = 8088
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.gateway_ns, sys.executable, "-m", "http.server",
         "--bind", LAN_GATEWAY_IP, "--directory", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://{LAN_GATEWAY_IP}:{port}"
        wait_until(lambda: _serving(lab, f"{base}/renderer.xml"), 20, "the description server")
        yield lab, base
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_non_igd_and_broken_descriptions_give_typed_errors(
    description_server: tuple[GatewayLab, str],
) -> None:
    lab, base = description_server
    renderer = lab.run_client("open", f"{base}/renderer.xml")
    assert renderer.get("error") == "UpnpNoWANIPConnectionError", renderer
    assert "MediaRenderer" in renderer["message"]
    no_service = lab.run_client("open", f"{base}/igd.xml")
    assert no_service.get("error") == "UpnpNoWANIPConnectionError", no_service
    assert no_service["reason"] == "no WANIPConnection"
    garbage = lab.run_client("open", f"{base}/garbage.xml")
    assert garbage.get("error") == "UpnpDescriptionError", garbage
    missing = lab.run_client("open", f"{base}/missing.xml")
    assert missing.get("error") == "UpnpDescriptionError", missing


# -- probe-upnp -----------------------------------------------------------------------------


def run_cli(lab: GatewayLab, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lab.client_argv(sys.executable, "-m", "cometp2p", *args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_probe_upnp_reports_port_mapping_and_removes_its_mapping(lab: GatewayLab) -> None:
    done = run_cli(lab, "probe-upnp", "--timeout", "3")
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert f"Gateway:      Debian router ({lab.location})" in lines
    assert f"External IP:  {EXTERNAL_IP}" in lines
    assert "PortMapping:  true" in lines
    # miniupnpd DNATs only what arrives on its external interface: no hairpin here.
    assert "Hairpin:      false" in lines
    assert lines[-1] == '{"PortMapping":true,"Hairpin":false}'
    assert all(m.external_port != 8001 for m in lab.mappings())


def test_probe_upnp_from_an_interface_with_a_known_location(lab: GatewayLab) -> None:
    done = run_cli(
        lab, "probe-upnp", "--interface", f"{lab.prefix}c", "--location", lab.location,
        "--port", "8002",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "PortMapping:  true" in done.stdout.splitlines()
    assert all(m.external_port != 8002 for m in lab.mappings())


def test_probe_upnp_without_a_gateway_fails_with_the_reason(
    make_lab: Callable[..., GatewayLab],
) -> None:
    lab = make_lab(start_daemon=False)
    done = run_cli(lab, "probe-upnp", "--timeout", "1")
    assert done.returncode == 1
    assert "Probe failed: upnp no answer: no gateway answered the SSDP search within 1 s" in (
        done.stdout
    )
    assert "PortMapping:  false" in done.stdout.splitlines()


# -- start --p2p.upnp ------------------------------------------------------------------------


class StartedNode:
    """``cometp2p start --p2p.upnp`` in the lab's client namespace."""

    def __init__(self, lab: GatewayLab, home: Path, port: int, *extra: str) -> None:
        self.log_path = home / "start.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            lab.client_argv(
                sys.executable, "-m", "cometp2p", "start", "--home", str(home),
                "--p2p.laddr", f"tcp://0.0.0.0:{port}", "--p2p.upnp", *extra,
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float = 30) -> None:
        wait_until(lambda: text in self.log(), timeout_s, f"{text!r} in the node log")

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., StartedNode]]:
    """``start_node(lab, port, *flags, external_address="")``: a started node (killed at
    teardown if still running) in a fresh home."""
    nodes: list[StartedNode] = []

    def start(lab: GatewayLab, port: int, *extra: str, external_address: str = "") -> StartedNode:
        home = tmp_path / f"home{len(nodes)}"
        subprocess.run(
            [sys.executable, "-m", "cometp2p", "init", "--home", str(home)],
            check=True,
            capture_output=True,
        )
        if external_address:
            config = home / "config" / "config.toml"
            text = config.read_text()
            assert 'external_address = ""' in text
            config.write_text(
                text.replace('external_address = ""', f'external_address = "{external_address}"')
            )
        node = StartedNode(lab, home, port, *extra)
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.kill()


def test_start_maps_advertises_renews_and_unmaps(
    lab: GatewayLab, start_node: Callable[..., StartedNode]
) -> None:
    port = 27100
    node = start_node(lab, port, "--upnp.lease", "2")
    node.wait_for_log(f"started on tcp://{EXTERNAL_IP}:{port}")
    assert tcp_mapping(port) in lab.mappings()
    # Renewed every second (half the lease): the daemon logs each AddPortMapping.
    added = f"AddPortMapping: ext port {port} to {LAN_CLIENT_IP}:{port} protocol TCP"
    wait_until(lambda: lab.log_tail(10_000).count(added) >= 4, 15, "three renewals")
    assert "renewing the mapping" not in node.log()  # no renewal failed
    assert tcp_mapping(port) in lab.mappings()  # past its first lease, still there
    assert node.stop() == 0, node.log()
    assert f"upnp: deleted the mapping of TCP port {port}" in node.log()
    assert tcp_mapping(port) not in lab.mappings()


def test_start_keeps_a_configured_external_address(
    lab: GatewayLab, start_node: Callable[..., StartedNode]
) -> None:
    port = 27101
    node = start_node(lab, port, external_address="5.6.7.8:9")
    node.wait_for_log("started on 5.6.7.8:9")
    assert "upnp: mapped TCP" in node.log()
    assert "upnp: advertising" not in node.log()
    assert tcp_mapping(port) in lab.mappings()
    assert node.stop() == 0
    assert tcp_mapping(port) not in lab.mappings()


def test_start_without_a_gateway_logs_once_and_runs(
    make_lab: Callable[..., GatewayLab], start_node: Callable[..., StartedNode]
) -> None:
    lab = make_lab(start_daemon=False)
    node = start_node(lab, 27102)
    node.wait_for_log("started on tcp://0.0.0.0:27102")
    log = node.log()
    assert log.count("upnp disabled, running without it: upnp no answer") == 1, log
    assert log.count("upnp disabled") == 1, log
    assert "upnp: " not in log, log  # nothing mapped, nothing else said
    assert node.stop() == 0, node.log()
