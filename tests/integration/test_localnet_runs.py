"""``cometp2p localnet`` run after run, and stopped every way a user stops it (issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_LOCALNET = [sys.executable, "-m", "cometp2p", "localnet"]


def _run(out: Path, nodes: int = 4) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_LOCALNET, "--nodes", str(nodes), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_three_runs_into_the_same_directory_all_converge(tmp_path: Path) -> None:
    out = tmp_path / "net"
    ids: list[set[str]] = []
    for _ in range(3):
        result = _run(out)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads((out / "localnet.json").read_text())
        assert report["converged"] is True
        ids.append({n["id"] for n in report["nodes"]})
        # Fresh homes: nothing of an earlier run's address book is left to dial.
        assert sorted(p.name for p in out.glob("node*")) == ["node0", "node1", "node2", "node3"]
    assert ids[0].isdisjoint(ids[1])
    assert ids[1].isdisjoint(ids[2])


def test_a_stale_address_book_in_the_out_directory_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "net"
    assert _run(out).returncode == 0
    # What broke the second run before: every book full of addresses that no longer listen.
    stale = (out / "node1" / "config" / "addrbook.json").read_text()
    for i in range(1, 4):
        (out / f"node{i}" / "config" / "addrbook.json").write_text(stale)
    result = _run(out)
    assert result.returncode == 0, result.stdout + result.stderr


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _node_pids(out: Path, count: int, deadline_s: float) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ready = [out / f"node{i}" / "data" / "localnet-ready.json" for i in range(count)]
        if all(p.exists() for p in ready):
            return [int(json.loads(p.read_text())["pid"]) for p in ready]
        time.sleep(0.1)
    raise AssertionError(f"the {count} nodes did not all start within {deadline_s} s")


@pytest.mark.parametrize(
    "how", ["SIGINT-in-background", "SIGTERM", "SIGHUP", "SIGKILL"], ids=lambda h: h
)
def test_every_way_of_stopping_localnet_stops_every_node(tmp_path: Path, how: str) -> None:
    out = tmp_path / "net"
    # A shell's background job starts with SIGINT ignored; `trap "" INT` reproduces that.
    command = " ".join(f"'{a}'" for a in [*_LOCALNET, "--nodes", "4", "--out", str(out)])
    command += " --timeout 120"
    process = subprocess.Popen(
        ["sh", "-c", f'trap "" INT; exec {command}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Freeze the seed as soon as it listens: the others then never find each other,
        # so the signal always lands while localnet waits for convergence (a 4-node
        # network would otherwise converge, crawl and exit within about a second).
        (seed_pid,) = _node_pids(out, 1, deadline_s=60)
        os.kill(seed_pid, signal.SIGSTOP)
        pids = _node_pids(out, 4, deadline_s=60)
        signum = signal.Signals[how.split("-")[0]]
        os.kill(process.pid, signum)
        # Thawed, the seed acts on the SIGTERM that localnet (or, after SIGKILL, the
        # kernel's parent-death signal) sent it.
        os.kill(seed_pid, signal.SIGCONT)
        output, _ = process.communicate(timeout=30)
        if signum != signal.SIGKILL:
            assert process.returncode == 128 + signum, output
            assert "interrupted" in output
            assert "not converged" not in output
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in pids if _alive(p)] == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
