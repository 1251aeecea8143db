"""``cometp2p localnet``: run a whole p2p network on this machine and watch it converge.

Starts ``--nodes`` node processes on 127.0.0.1: node 0 is a seed (seed mode), every other
node knows only the seed and must discover the rest through PEX. Each node serves its
Prometheus metrics on its own loopback port; localnet scrapes them to show, live, the
peers and address-book size of every node. Once every node reached its target peer count,
localnet crawls its own network from the seed (:mod:`cometp2p.crawler`, the same crawl as
``cometp2p crawl``) and writes ``network.json``, ``addrbook.json`` and ``network.png`` next
to ``localnet.json``. It exits 0 only if every node reached its target within ``--timeout``
seconds and the crawl reached every node; it always stops every process it started, on
Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import click
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cometp2p.cli.crawl import print_files, run_crawl, summary_table
from cometp2p.cli.main import cli_errors
from cometp2p.config import Config, InstrumentationConfig, P2PConfig, write_config
from cometp2p.crawler import CrawlConfig, Crawler, CrawlResult
from cometp2p.crawler.report import write_crawl_files
from cometp2p.crypto.keys import NodeKey, save_node_key
from cometp2p.wire.netaddress import NetAddress

__all__ = ["COMMANDS", "LocalNode", "localnet_command", "scrape"]

CHAIN_ID: Final = "cometp2p-localnet"
_POLL_S: Final = 0.5
_CRAWL_TIMEOUT_S: Final = 5.0
_LOOPBACK: Final = (ipaddress.ip_network("127.0.0.0/8"),)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalNode:
    """One node process of the local network."""

    index: int
    home: Path
    node_id: str
    p2p_port: int
    metrics_port: int
    seed: bool
    process: subprocess.Popen[bytes] | None = None
    peers: int = 0
    book_size: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``id@127.0.0.1:port``."""
        return f"{self.node_id}@127.0.0.1:{self.p2p_port}"

    @property
    def moniker(self) -> str:
        """``seed`` or ``nodeN``."""
        return "seed" if self.seed else f"node{self.index}"


def scrape(port: int, timeout_s: float = 1.0) -> dict[str, float]:
    """Read ``host:port/metrics`` and return ``{sample_name: value}`` (labels dropped).

    Returns an empty dict if the endpoint is not up yet.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def _prepare(out: Path, count: int, max_outbound: int) -> list[LocalNode]:
    nodes: list[LocalNode] = []
    for i in range(count):
        home = out / f"node{i}"
        key = NodeKey.generate()
        nodes.append(LocalNode(i, home, key.node_id, _free_port(), _free_port(), seed=(i == 0)))
        save_node_key(key, home / "config" / "node_key.json")
    seed = nodes[0]
    for node in nodes:
        (node.home / "data").mkdir(parents=True, exist_ok=True)
        p2p = P2PConfig(
            laddr=f"tcp://127.0.0.1:{node.p2p_port}",
            seeds=() if node.seed else (seed.address,),
            seed_mode=node.seed,
            addr_book_strict=False,
            allow_duplicate_ip=True,
            max_num_outbound_peers=max_outbound,
            flush_throttle_timeout_s=0.01,
        )
        instrumentation = InstrumentationConfig(
            prometheus=True, prometheus_listen_addr=f"127.0.0.1:{node.metrics_port}"
        )
        write_config(
            Config(home=node.home, moniker=node.moniker, p2p=p2p, instrumentation=instrumentation)
        )
    return nodes


def _spawn(node: LocalNode, log_dir: Path) -> None:
    log = (log_dir / f"{node.moniker}.log").open("wb")
    node.process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cometp2p",
            "start",
            "--home",
            str(node.home),
            "--chain-id",
            CHAIN_ID,
            "--log-level",
            "info",
            "--pex.ensure_peers_period",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children ourselves
    )


def _stop_all(nodes: list[LocalNode], timeout_s: float = 5.0) -> None:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(2.0)


def _table(nodes: list[LocalNode], targets: dict[int, int], elapsed_s: float) -> Table:
    table = Table(title=f"cometp2p localnet — {len(nodes)} nodes — {elapsed_s:5.1f} s")
    for column in ("node", "node ID", "port", "peers", "target", "address book", "state"):
        table.add_column(column)
    for node in nodes:
        alive = node.process is not None and node.process.poll() is None
        reached = node.peers >= targets[node.index]
        state = "[red]exited" if not alive else ("[green]ok" if reached else "[yellow]joining")
        table.add_row(
            node.moniker,
            node.node_id[:12],
            str(node.p2p_port),
            str(node.peers),
            str(targets[node.index]),
            str(node.book_size),
            state,
        )
    return table


def _targets(nodes: list[LocalNode], max_outbound: int) -> dict[int, int]:
    # The seed answers and hangs up, so it holds no lasting peers. Every other node
    # should reach its outbound target, or all the other non-seed nodes if fewer.
    others = len(nodes) - 2
    return {n.index: 0 if n.seed else min(max_outbound, others) for n in nodes}


def _crawl(seed: LocalNode, console: Console) -> CrawlResult:
    """Crawl the local network from its seed, as ``cometp2p crawl`` would."""
    crawler = Crawler(CHAIN_ID, CrawlConfig(timeout_s=_CRAWL_TIMEOUT_S, allowed_networks=_LOOPBACK))
    address = NetAddress.parse(seed.address, resolve=False)
    return asyncio.run(run_crawl(crawler, [address], console))


def _write_report(
    out: Path,
    nodes: list[LocalNode],
    converged: bool,
    elapsed_s: float,
    crawl: CrawlResult | None,
) -> Path:
    report = {
        "chain_id": CHAIN_ID,
        "converged": converged,
        "crawl": None
        if crawl is None
        else {"found": len(crawl.nodes), "reached": len(crawl.reached), "edges": len(crawl.edges)},
        "elapsed_s": round(elapsed_s, 3),
        "nodes": [
            {
                "id": n.node_id,
                "moniker": n.moniker,
                "listen_addr": f"tcp://127.0.0.1:{n.p2p_port}",
                "seed": n.seed,
                "peers": n.peers,
                "address_book_size": n.book_size,
                "peers_over_time": n.history,
            }
            for n in nodes
        ],
    }
    path = out / "localnet.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


@click.command("localnet")
@click.option("--nodes", "count", default=8, show_default=True, type=click.IntRange(3, 64))
@click.option(
    "--out",
    "out_dir",
    default="out/localnet",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="Seconds.")
@click.option("--max-outbound", default=10, show_default=True, type=click.IntRange(1, 100))
def localnet_command(count: int, out_dir: Path, timeout_s: float, max_outbound: int) -> None:
    """Run N nodes on 127.0.0.1 (one seed, the rest bootstrapping from it), then crawl them."""
    console = Console(highlight=False)
    with cli_errors():
        out_dir.mkdir(parents=True, exist_ok=True)
        log_dir = out_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        nodes = _prepare(out_dir, count, max_outbound)
    targets = _targets(nodes, max_outbound)
    start = time.monotonic()
    converged = False
    crawl: CrawlResult | None = None
    converged_s = 0.0
    try:
        for node in nodes:
            _spawn(node, log_dir)
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                elapsed = time.monotonic() - start
                for node in nodes:
                    values = scrape(node.metrics_port)
                    node.peers = int(values.get("cometbft_p2p_peers", 0))
                    node.book_size = int(values.get("cometbft_p2p_addrbook_size", 0))
                    node.history.append((round(elapsed, 2), node.peers))
                live.update(_table(nodes, targets, elapsed))
                if any(n.process is not None and n.process.poll() is not None for n in nodes):
                    break
                if all(n.peers >= targets[n.index] for n in nodes):
                    converged = True
                    break
                if elapsed > timeout_s:
                    break
                time.sleep(_POLL_S)
        converged_s = time.monotonic() - start
        if converged:
            console.print()
            crawl = _crawl(nodes[0], console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
    finally:
        _stop_all(nodes)
    console.print()
    report = _write_report(out_dir, nodes, converged, converged_s, crawl)
    if crawl is not None:
        console.print(summary_table(crawl))
        with cli_errors():
            files = write_crawl_files(crawl, out_dir, now=datetime.now(UTC), rng=random.Random())
        print_files(console, files)
    console.print(f"wrote {report}; node logs in {log_dir}")
    if not converged:
        console.print(f"[red]not converged[/] after {converged_s:.1f} s")
        raise SystemExit(1)
    if crawl is None or len(crawl.reached) != count:
        reached = 0 if crawl is None else len(crawl.reached)
        console.print(f"[red]crawl incomplete[/]: reached {reached} of {count} nodes")
        raise SystemExit(1)
    console.print(
        f"[green]converged[/]: all {count} nodes reached their peer targets in "
        f"{converged_s:.1f} s; the crawl reached all {count} and found "
        f"{len(crawl.edges)} edges in {crawl.elapsed_s:.2f} s"
    )


COMMANDS: tuple[click.Command, ...] = (localnet_command,)
