"""Our node as a real ``cometp2p start`` process next to Go nodes, and ``cometp2p crawl``.

Shared by the tendermint interop modules: a home made by ``cometp2p init`` and set up for
loopback (``addr_book_strict = false``, ``allow_duplicate_ip = true``), the process (from
:mod:`interop.test_start_interop`), and what its log says about peers and PEX requests
(the reactor logs one ``PEX requests:`` summary line when it stops).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cometp2p.config import load_config, write_config
from cometp2p.crypto.keys import load_node_key
from interop.cometbft import LOOPBACK, free_port
from interop.test_start_interop import StartProcess, _env

__all__ = ["OurHome", "PexSummary", "crawl_cli", "make_our_home"]

CRAWL_TIMEOUT_S: Final = 120.0

_SUMMARY: Final = re.compile(
    r"(?P<dialect>v0\.3[58]): sent=(?P<sent>\d+) median_gap=(?P<gap>\S+) "
    r"received=(?P<received>\d+) refused=(?P<refused>\d+)"
)


@dataclass(frozen=True)
class OurHome:
    """A ``cometp2p init`` home and the P2P address it will listen on."""

    home: Path
    node_id: str
    port: int

    @property
    def p2p_address(self) -> str:
        return f"{self.node_id}@{LOOPBACK}:{self.port}"

    def start(self, log_path: Path, chain_id: str, *persistent: str) -> StartProcess:
        """``cometp2p start`` on this home (logs to ``log_path``)."""
        args = [
            "--home", str(self.home),
            "--chain-id", chain_id,
            "--p2p.laddr", f"tcp://{LOOPBACK}:{self.port}",
            "--moniker", "cometp2p",
        ]  # fmt: skip
        if persistent:
            args += ["--p2p.persistent_peers", ",".join(persistent)]
        return StartProcess(tuple(args), log_path)


def make_our_home(home: Path, **p2p_changes: object) -> OurHome:
    """``cometp2p init`` a home, then relax the book and duplicate-IP checks for loopback.

    ``p2p_changes`` replace further ``[p2p]`` settings (P2PConfig field names).
    """
    done = subprocess.run(
        [sys.executable, "-m", "cometp2p", "init", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config = load_config(home)
    config = dataclasses.replace(
        config,
        p2p=dataclasses.replace(
            config.p2p,
            addr_book_strict=False,
            allow_duplicate_ip=True,
            **p2p_changes,  # type: ignore[arg-type]
        ),
    )
    write_config(config)
    node_id = load_node_key(config.node_key_path).node_id
    return OurHome(home, node_id, free_port())


def added_peer_ids(log: str) -> set[str]:
    """IDs of the peers our node logged as added."""
    return set(re.findall(r"\[([0-9a-f]{40})\] added peer", log))


def removed_peer_ids(log: str) -> set[str]:
    """IDs of the peers our node logged as removed."""
    return set(re.findall(r"\[([0-9a-f]{40})\] removed peer", log))


@dataclass(frozen=True)
class PexSummary:
    """One dialect's part of the reactor's ``PEX requests:`` line."""

    sent: int
    median_gap: str
    received: int
    refused: int


def pex_added(log: str) -> int:
    """``added=`` of the last ``PEX requests:`` line: addresses PEX put in our book."""
    found = re.findall(r"PEX requests: .* added=(\d+)", log)
    assert found, "no PEX summary in the log"
    return int(found[-1])


def pex_summary_line(log: str) -> str:
    """The last ``PEX requests:`` line of the log, as logged."""
    lines = [line for line in log.splitlines() if "PEX requests:" in line]
    assert lines, "no PEX summary in the log"
    return lines[-1]


def pex_summary(log: str) -> dict[str, PexSummary]:
    """The last ``PEX requests:`` line of the log, by dialect (empty if none yet)."""
    lines = [line for line in log.splitlines() if "PEX requests:" in line]
    if not lines:
        return {}
    return {
        m["dialect"]: PexSummary(int(m["sent"]), m["gap"], int(m["received"]), int(m["refused"]))
        for m in _SUMMARY.finditer(lines[-1])
    }


def crawl_cli(out: Path, seed: str) -> dict[str, object]:
    """``cometp2p crawl --no-png --out <out> <seed>`` (no ``--network``); its network.json.

    Raises:
        AssertionError: the crawl exits non-zero.
    """
    (out / "home").mkdir(parents=True, exist_ok=True)  # an empty home: no genesis.json
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cometp2p",
            "crawl",
            "--home",
            str(out / "home"),
            "--out",
            str(out),
            "--no-png",
            "--timeout",
            "5",
            seed,
        ],
        capture_output=True,
        text=True,
        timeout=CRAWL_TIMEOUT_S,
        env=_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    result: dict[str, object] = json.loads((out / "network.json").read_text())
    return result


def reached_ids(network: dict[str, object]) -> set[str]:
    """IDs of the nodes a crawl reached."""
    nodes = network["nodes"]
    assert isinstance(nodes, list)
    return {str(n["id"]) for n in nodes if n.get("reachable")}
