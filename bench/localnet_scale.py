"""Benchmark: ``cometp2p localnet`` at 8, 50, 100 and 200 nodes — convergence time and memory.

Each size runs ``python -m cometp2p localnet --nodes N --out DIR --timeout T`` as a child
process into a fresh temporary directory. While it runs, this script samples the resident
memory (``VmRSS`` from ``/proc/PID/status``) of every node process (their PIDs come from
the ready files localnet's nodes write) every 0.5 s, and keeps the peak sum and the peak
of any single node; the RSS of one idle node right after it reported ready is the
"per node" figure (median over the nodes). Convergence time is localnet's own figure
(``elapsed_s`` in ``localnet.json``: from the first node's start until every node had
reached its peer target). Linux only (``/proc``).

Run: ``.venv/bin/python bench/localnet_scale.py [--sizes 8 50 100 200] [--timeout 600]``.
Exit status 1 if any size did not converge.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sample:
    """What one localnet run measured."""

    nodes: int
    converged: bool
    convergence_s: float
    wall_s: float
    node_rss_kib: int
    peak_node_rss_kib: int
    peak_total_rss_kib: int


_LOCALNET = (sys.executable, "-m", "cometp2p", "localnet")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(count: int, timeout_s: float) -> Sample:
    """Run one localnet of ``count`` nodes and measure it."""
    with tempfile.TemporaryDirectory(prefix="localnet-bench-") as tmp:
        out = Path(tmp) / "net"
        start = time.monotonic()
        process = subprocess.Popen(
            [*_LOCALNET, "--nodes", str(count), "--out", str(out), "--timeout", str(timeout_s)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pids: dict[int, int] = {}
        first_rss: dict[int, int] = {}
        peak_node = peak_total = 0
        deadline = start + timeout_s + 120
        while process.poll() is None and time.monotonic() < deadline:
            for i in range(count):
                if i not in pids:
                    ready = out / f"node{i}" / "data" / "localnet-ready.json"
                    try:
                        pids[i] = int(json.loads(ready.read_text())["pid"])
                    except (OSError, ValueError, KeyError):
                        continue
            sizes = {i: _rss_kib(pid) for i, pid in pids.items()}
            for i, rss in sizes.items():
                if rss and i not in first_rss:
                    first_rss[i] = rss
            if sizes:
                peak_node = max(peak_node, *sizes.values())
                peak_total = max(peak_total, sum(sizes.values()))
            time.sleep(0.5)
        if process.poll() is None:
            process.kill()
        process.wait()
        wall_s = time.monotonic() - start
        try:
            report = json.loads((out / "localnet.json").read_text())
        except (OSError, ValueError):
            report = {"converged": False, "elapsed_s": wall_s}
    return Sample(
        nodes=count,
        converged=bool(report["converged"]) and process.returncode == 0,
        convergence_s=float(report["elapsed_s"]),
        wall_s=wall_s,
        node_rss_kib=int(statistics.median(first_rss.values())) if first_rss else 0,
        peak_node_rss_kib=peak_node,
        peak_total_rss_kib=peak_total,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 50, 100, 200])
    parser.add_argument("--timeout", type=float, default=600.0, help="localnet --timeout, s")
    args = parser.parse_args()
    header = (
        f"{'nodes':>5} {'converged':>9} {'convergence s':>13} {'wall s':>7} "
        f"{'node RSS MiB':>12} {'peak node MiB':>13} {'peak total MiB':>14}"
    )
    print(header, flush=True)
    ok = True
    for count in args.sizes:
        s = run(count, args.timeout)
        ok = ok and s.converged
        print(
            f"{s.nodes:>5} {s.converged!s:>9} {s.convergence_s:>13.1f} {s.wall_s:>7.1f} "
            f"{s.node_rss_kib / 1024:>12.1f} {s.peak_node_rss_kib / 1024:>13.1f} "
            f"{s.peak_total_rss_kib / 1024:>14.0f}",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
