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
