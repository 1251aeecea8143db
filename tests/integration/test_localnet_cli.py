"""``cometp2p localnet`` as a user runs it: real node processes on loopback, PEX discovery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_localnet_of_four_nodes_converges(tmp_path: Path) -> None:
    out = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, "-m", "cometp2p", "localnet", "--nodes", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged" in result.stdout
    report = json.loads((out / "localnet.json").read_text())
    assert report["converged"] is True
    nodes = report["nodes"]
    assert len(nodes) == 4
    seed = [n for n in nodes if n["seed"]]
    assert len(seed) == 1
    # Every non-seed node found the two other non-seed nodes through the seed's PEX answer.
    for node in nodes:
        if not node["seed"]:
            assert node["peers"] >= 2
    # Then it crawled its own network: every node, with the seed's edges to all the others.
    network = json.loads((out / "network.json").read_text())
    ids = {n["id"] for n in nodes}
    assert {n["id"] for n in network["nodes"]} == ids
    assert all(n["reachable"] and n["network"] == report["chain_id"] for n in network["nodes"])
    monikers = sorted(n["moniker"] for n in network["nodes"])
    assert monikers == ["node1", "node2", "node3", "seed"]
    seed_id = seed[0]["id"]
    assert {to for frm, to in network["edges"] if frm == seed_id} == ids - {seed_id}
    assert (out / "network.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert '"addrs"' in (out / "addrbook.json").read_text()
    assert report["crawl"] == {"found": 4, "reached": 4, "edges": len(network["edges"])}
    # Every process was stopped: each node logged its clean stop.
    for log in (out / "logs").glob("*.log"):
        assert "stopped" in log.read_text()


def test_localnet_refuses_a_network_of_fewer_than_three_nodes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cometp2p", "localnet", "--nodes", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--nodes" in result.stderr


def test_localnet_runs_with_the_adaptive_strategy(tmp_path: Path) -> None:
    out = tmp_path / "net"
    args = ["localnet", "--nodes", "3", "--out", str(out), "--pex-strategy", "adaptive"]
    result = subprocess.run(
        [sys.executable, "-m", "cometp2p", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "localnet.json").read_text())
    assert report["converged"] is True
    logs = [log.read_text() for log in (out / "logs").glob("*.log")]
    assert len(logs) == 3
    assert all("PEX started: strategy adaptive" in log for log in logs)
    assert sum("(seed mode)" in log for log in logs) == 1  # the seed crawls instead
    assert all("PEX requests:" in log and "stopped" in log for log in logs)
