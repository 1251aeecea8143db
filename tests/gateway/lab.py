"""A real UPnP gateway (miniupnpd) in network namespaces that the test creates.

Topology (names carry our pid and a counter, so parallel runs never clash)::

    client ns                gateway ns                         wan ns
    <p>c 10.214.0.2/24 <-veth-> <p>g 10.214.0.1/24
                             <p>x 100.63.0.7/24 (external) <-veth-> <p>w 100.63.0.1/24

miniupnpd listens on ``<p>g`` (SSDP multicast and HTTP) and maps ports on ``<p>x``. It
refuses private or reserved external addresses, so the external one is a public-looking
address; it exists only on an interface of the gateway namespace, and no namespace here
has a route to anything but these veth pairs: nothing leaves them (SSDP multicast
included, through a 224.0.0.0/4 route on the client veth).

Everything is torn down by :meth:`GatewayLab.close` (kill the daemon, delete the
namespaces, which deletes their interfaces), also after a failed start.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["GatewayLab", "Mapping", "lab_unavailable_reason"]

LAN_GATEWAY_IP: Final = "10.214.0.1"
LAN_CLIENT_IP: Final = "10.214.0.2"
EXTERNAL_IP: Final = "100.63.0.7"
WAN_PEER_IP: Final = "100.63.0.1"
MINIUPNPD: Final = "/usr/sbin/miniupnpd"
READY_TIMEOUT_S: Final = 10.0
_CMD_TIMEOUT_S: Final = 20.0
_COUNTER = itertools.count()

_NFT_BASE: Final = """table inet filter {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"""

# miniupnpd's DNAT rule as nft lists it: ... th dport 26656 dnat ip to 10.214.0.2:26656
_DNAT: Final = re.compile(
    r"@nh,72,8 0x(?P<proto>[0-9a-f]+) th dport (?P<ext>\d+) dnat ip to (?P<ip>[\d.]+):(?P<int>\d+)"
)


def lab_unavailable_reason() -> str | None:
    """Why a gateway lab cannot run here (not root, no ``ip``/``nft``/miniupnpd), or None."""
    if os.geteuid() != 0:
        return "UPnP gateway tests need root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"UPnP gateway tests need {tool!r} (apt-get install iproute2 nftables)"
    if not Path(MINIUPNPD).is_file():
        return "UPnP gateway tests need miniupnpd (apt-get install miniupnpd-nftables)"
    probe = f"cometp2p-probe-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"'ip netns add' does not work here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


@dataclass(frozen=True)
class Mapping:
    """One port mapping as the gateway's nftables DNAT rule shows it."""

    protocol: str
    external_port: int
    internal_ip: str
    internal_port: int


def _run(argv: Sequence[str], timeout_s: float = _CMD_TIMEOUT_S) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class GatewayLab:
    """Three namespaces and a miniupnpd; see the module docstring.

    Args:
        workdir: where the daemon's config, log and lease file go.
        start_daemon: False for a gateway namespace without any UPnP daemon.
    """

    workdir: Path
    start_daemon: bool = True
    prefix: str = field(default_factory=lambda: f"u{os.getpid() % 100000}x{next(_COUNTER)}")
    daemon: subprocess.Popen[bytes] | None = None
    http_port: int | None = None
    _namespaces: list[str] = field(default_factory=list)

    @property
    def gateway_ns(self) -> str:
        return f"{self.prefix}-gw"

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}-cl"

    @property
    def wan_ns(self) -> str:
        return f"{self.prefix}-wan"

    @property
    def log_path(self) -> Path:
        return self.workdir / "miniupnpd.log"

    @property
    def location(self) -> str:
        """The daemon's description URL (as its SSDP answers give it)."""
        return f"http://{LAN_GATEWAY_IP}:{self.http_port}/rootDesc.xml"

    @property
    def control_url(self) -> str:
        """The daemon's WANIPConnection control URL."""
        return f"http://{LAN_GATEWAY_IP}:{self.http_port}/ctl/IPConn"

    def start(self) -> GatewayLab:
        """Create the namespaces and links; start miniupnpd and wait until it serves HTTP.

        Cleans up after itself if anything fails.
        """
        try:
            self._create_network()
            if self.start_daemon:
                self._start_daemon()
        except BaseException:
            self.close()
            raise
        return self

    def _ip(self, *args: str) -> None:
        _run(["ip", *args])

    def _create_network(self) -> None:
        p = self.prefix
        for ns in (self.gateway_ns, self.client_ns, self.wan_ns):
            self._ip("netns", "add", ns)
            self._namespaces.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        # Each veth is created directly inside its namespaces: never in ours.
        self._ip(
            "-n", self.gateway_ns, "link", "add", f"{p}g", "type", "veth",
            "peer", "name", f"{p}c", "netns", self.client_ns,
        )  # fmt: skip
        self._ip(
            "-n", self.gateway_ns, "link", "add", f"{p}x", "type", "veth",
            "peer", "name", f"{p}w", "netns", self.wan_ns,
        )  # fmt: skip
        for ns, dev, addr in (
            (self.gateway_ns, f"{p}g", f"{LAN_GATEWAY_IP}/24"),
            (self.client_ns, f"{p}c", f"{LAN_CLIENT_IP}/24"),
            (self.gateway_ns, f"{p}x", f"{EXTERNAL_IP}/24"),
            (self.wan_ns, f"{p}w", f"{WAN_PEER_IP}/24"),
        ):
            self._ip("-n", ns, "addr", "add", addr, "dev", dev)
            self._ip("-n", ns, "link", "set", dev, "up")
        # SSDP multicast from the client (Go's Discover and a search from 0.0.0.0) needs
        # a route; it goes to the veth, i.e. to the gateway namespace only.
        self._ip("-n", self.client_ns, "route", "add", "224.0.0.0/4", "dev", f"{p}c")

    def _start_daemon(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        nft = self.workdir / "ruleset.nft"
        nft.write_text(_NFT_BASE)
        _run(["ip", "netns", "exec", self.gateway_ns, "nft", "-f", str(nft)])
        conf = self.workdir / "miniupnpd.conf"
        conf.write_text(
            "\n".join(
                (
                    f"ext_ifname={self.prefix}x",
                    f"listening_ip={self.prefix}g",
                    "http_port=0",
                    "enable_upnp=yes",
                    "enable_natpmp=no",
                    "secure_mode=no",
                    "force_igd_desc_v1=yes",
                    "system_uptime=no",
                    "notify_interval=60",
                    "clean_ruleset_interval=0",
                    "uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b",
                    f"lease_file={self.workdir / 'leases'}",
                    "allow 1024-65535 10.214.0.0/24 1024-65535",
                    "deny 0-65535 0.0.0.0/0 0-65535",
                    "",
                )
            )
        )
        with self.log_path.open("wb") as log:
            self.daemon = subprocess.Popen(
                ["ip", "netns", "exec", self.gateway_ns, MINIUPNPD, "-f", str(conf), "-d",
                 "-P", str(self.workdir / "miniupnpd.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            match = re.search(r"HTTP listening on port (\d+)", self.log_tail(200))
            if match:
                self.http_port = int(match.group(1))
                return
            if self.daemon.poll() is not None:
                raise RuntimeError(f"miniupnpd exited: {self.log_tail(20)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"miniupnpd not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def mappings(self) -> list[Mapping]:
        """The port mappings in force: miniupnpd's DNAT rules in the gateway's nftables."""
        ruleset = _run(["ip", "netns", "exec", self.gateway_ns, "nft", "list", "ruleset"])
        protocols = {6: "TCP", 17: "UDP"}
        return [
            Mapping(
                protocols.get(int(m["proto"], 16), m["proto"]),
                int(m["ext"]),
                m["ip"],
                int(m["int"]),
            )
            for m in _DNAT.finditer(ruleset)
        ]

    def upnpc_list(self) -> str:
        """``upnpc -l`` run in the client namespace (an independent lister), if installed."""
        return _run(["ip", "netns", "exec", self.client_ns, "upnpc", "-l"])

    def client_argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the client namespace."""
        return ["ip", "netns", "exec", self.client_ns, *argv]

    def run_client(
        self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Run ``tests/gateway/client_main.py ARGS`` in the client namespace; its JSON.

        ``env`` is added to our environment (e.g. ``{"TIMEOUT_S": "1"}``).
        """
        script = Path(__file__).with_name("client_main.py")
        done = subprocess.run(
            self.client_argv(sys.executable, str(script), *args),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"client_main {args} failed: {done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def close(self) -> None:
        """Kill the daemon and delete every namespace created. Idempotent."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(timeout=5)
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        self._namespaces.clear()
