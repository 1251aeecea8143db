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

import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from cometp2p.aio.loop import EVENT_LOOP_ENV
from cometp2p.aio.loop import run as run_event_loop
from cometp2p.cli.crawl import print_files, run_crawl, summary_table
from cometp2p.cli.main import cli_errors
from cometp2p.config import (
    PEX_STRATEGIES,
    Config,
    InstrumentationConfig,
    P2PConfig,
    write_config,
)
from cometp2p.crypto.keys import NodeKey, save_node_key
from cometp2p.errors import CometP2PError

# Listing the commands imports this module; the heavier pieces load where they are used.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from cometp2p.crawler import CrawlResult

__all__ = ["COMMANDS", "LocalNode", "localnet_command", "scrape"]

CHAIN_ID: Final = "cometp2p-localnet"
_POLL_S: Final = 0.5
_CRAWL_TIMEOUT_S: Final = 5.0
_LOOPBACK: Final = (ipaddress.ip_network("127.0.0.0/8"),)
_MAX_NODES: Final = 1000


@dataclass
class LocalNode:
    """One node process of the local network.

    ``p2p_port`` and ``metrics_port`` are 0 until the node reported the ports it bound
    (each node binds port 0 itself, so no port is ever probed and bound again later).
    """

    index: int
    home: Path
    node_id: str
    seed: bool
    p2p_port: int = 0
    metrics_port: int = 0
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

    @property
    def ready_file(self) -> Path:
        """Where the node writes the ports it bound (``start --ready-file``)."""
        return self.home / "data" / "localnet-ready.json"

    @property
    def alive(self) -> bool:
        """The process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def read_ready(self) -> bool:
        """Pick up the bound ports once the node wrote them; True when known."""
        if self.p2p_port:
            return True
        try:
            ready = json.loads(self.ready_file.read_text())
        except (OSError, ValueError):
            return False
        self.p2p_port = int(ready["p2p"][1])
        self.metrics_port = int(ready["metrics"])
        return True


def scrape(port: int, timeout_s: float = 1.0) -> dict[str, float]:
    """Read ``host:port/metrics`` and return ``{sample_name: value}`` (labels dropped).

    Returns an empty dict if the endpoint is not up yet.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


_HOME_DIR = re.compile(r"node\d+")
_OUTPUTS: Final = ("localnet.json", "network.json", "addrbook.json", "network.png")


def _reset(out: Path) -> None:
    """Fresh homes every run: remove the previous run's node homes, logs and reports.

    A home left from an earlier run holds an address book of ports that no longer
    listen; starting from it would make every node dial only dead addresses.
    Only what localnet itself writes is removed (``nodeN/``, ``logs/``, its reports).
    """
    for child in out.iterdir():
        if child.is_dir() and (_HOME_DIR.fullmatch(child.name) or child.name == "logs"):
            shutil.rmtree(child)
        elif child.name in _OUTPUTS:
            child.unlink()


def _make_nodes(out: Path, count: int) -> list[LocalNode]:
    nodes: list[LocalNode] = []
    for i in range(count):
        home = out / f"node{i}"
        key = NodeKey.generate()
        save_node_key(key, home / "config" / "node_key.json")
        (home / "data").mkdir(parents=True, exist_ok=True)
        nodes.append(LocalNode(i, home, key.node_id, seed=(i == 0)))
    return nodes


def _write_home_config(node: LocalNode, seed: LocalNode, max_outbound: int) -> None:
    p2p = P2PConfig(
        laddr="tcp://127.0.0.1:0",  # the node binds an ephemeral port and reports it
        seeds=() if node.seed else (seed.address,),
        seed_mode=node.seed,
        addr_book_strict=False,
        allow_duplicate_ip=True,
        max_num_outbound_peers=max_outbound,
        flush_throttle_timeout_s=0.01,
    )
    instrumentation = InstrumentationConfig(prometheus=True, prometheus_listen_addr="127.0.0.1:0")
    write_config(
        Config(home=node.home, moniker=node.moniker, p2p=p2p, instrumentation=instrumentation)
    )


def _node_env() -> dict[str, str]:
    """The nodes' environment: ours, with the stdlib event loop unless one is chosen.

    Many nodes share one machine here, so memory counts more than latency: uvloop costs
    about 2 MiB a node process (README, Performance). ``COMETP2P_EVENT_LOOP`` set by the
    user wins.
    """
    env = dict(os.environ)
    env.setdefault(EVENT_LOOP_ENV, "asyncio")
    return env


def _spawn(node: LocalNode, log_dir: Path, pex_strategy: str = "v0.38") -> None:
    with (log_dir / f"{node.moniker}.log").open("wb") as log:
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
                "--pex.strategy",
                pex_strategy,
                "--ready-file",
                str(node.ready_file),
                "--stop-with-parent",
                str(os.getpid()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_node_env(),
            # Own session: a terminal's Ctrl-C or hang-up reaches localnet only, which then
            # stops every node itself; if localnet dies without that, each node gets
            # SIGTERM from the kernel (--stop-with-parent, PR_SET_PDEATHSIG).
            start_new_session=True,
        )


def _stop_all(nodes: list[LocalNode], timeout_s: float = 5.0) -> None:
    for node in nodes:
        if node.alive and node.process is not None:
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


class _InterruptedError(BaseException):
    """A stop signal reached localnet (Ctrl-C, SIGTERM, SIGHUP).

    A BaseException, like KeyboardInterrupt: raised from the signal handler wherever the
    main thread is, it must not be taken for a failure by an ``except Exception`` on the
    way (the crawl's, for instance) but reach :func:`localnet_command`.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise _InterruptedError(signum)


_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`_InterruptedError` while the network runs.

    SIGINT is handled even when the shell started localnet in the background (where
    Python would otherwise inherit SIG_IGN and ignore Ctrl-C's signal).
    """
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    """Shield the stopping of the nodes from a second signal (it is bounded anyway)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_note(node: LocalNode) -> str:
    """``nodeN exited with status S: <its last log line>``."""
    log = node.home.parent / "logs" / f"{node.moniker}.log"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    status = None if node.process is None else node.process.poll()
    last = lines[-1].strip() if lines else "(no output)"
    return f"{node.moniker} exited with status {status}: {last}"


def _wait_ready(node: LocalNode, deadline: float) -> None:
    """Wait (polling, bounded) until ``node`` reported its ports.

    Raises:
        CometP2PError: the node exited or did not report before ``deadline``.
    """
    while not node.read_ready():
        if not node.alive:
            raise CometP2PError(_exit_note(node))
        if time.monotonic() > deadline:
            raise CometP2PError(f"{node.moniker} did not start listening in time")
        time.sleep(0.05)


_TABLE_ROWS: Final = 40


def _state(node: LocalNode, target: int) -> str:
    if not node.alive:
        return "[red]exited"
    if not node.p2p_port:
        return "[cyan]starting"
    return "[green]ok" if node.peers >= target else "[yellow]joining"


def _table(nodes: list[LocalNode], targets: dict[int, int], elapsed_s: float) -> Table:
    from rich.table import Table

    table = Table(title=f"cometp2p localnet — {len(nodes)} nodes — {elapsed_s:5.1f} s")
    if len(nodes) > _TABLE_ROWS:  # one row per state: a 200-row table helps nobody
        for column in ("state", "nodes", "peers (min / max)"):
            table.add_column(column)
        groups: dict[str, list[LocalNode]] = {}
        for node in nodes:
            groups.setdefault(_state(node, targets[node.index]), []).append(node)
        for state, members in sorted(groups.items()):
            peers = [n.peers for n in members]
            table.add_row(state, str(len(members)), f"{min(peers)} / {max(peers)}")
        return table
    for column in ("node", "node ID", "port", "peers", "target", "address book", "state"):
        table.add_column(column)
    for node in nodes:
        table.add_row(
            node.moniker,
            node.node_id[:12],
            str(node.p2p_port or "-"),
            str(node.peers),
            str(targets[node.index]),
            str(node.book_size),
            _state(node, targets[node.index]),
        )
    return table


def _targets(nodes: list[LocalNode], max_outbound: int) -> dict[int, int]:
    # The seed answers and hangs up, so it holds no lasting peers. Every other node
    # should reach its outbound target, or all the other non-seed nodes if fewer.
    others = len(nodes) - 2
    return {n.index: 0 if n.seed else min(max_outbound, others) for n in nodes}


def _crawl(seed: LocalNode, console: Console) -> CrawlResult:
    """Crawl the local network from its seed, as ``cometp2p crawl`` would."""
    from cometp2p.crawler import CrawlConfig, Crawler
    from cometp2p.wire.netaddress import NetAddress

    crawler = Crawler(CHAIN_ID, CrawlConfig(timeout_s=_CRAWL_TIMEOUT_S, allowed_networks=_LOOPBACK))
    address = NetAddress.parse(seed.address, resolve=False)
    return run_event_loop(run_crawl(crawler, [address], console))


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


def _poll(nodes: list[LocalNode], pool: ThreadPoolExecutor, elapsed_s: float) -> None:
    """Refresh every node's ports, peer count and book size from its metrics."""
    ready = [n for n in nodes if n.read_ready()]
    for node, values in zip(ready, pool.map(lambda n: scrape(n.metrics_port), ready), strict=True):
        node.peers = int(values.get("cometbft_p2p_peers", 0))
        node.book_size = int(values.get("cometbft_p2p_addrbook_size", 0))
        node.history.append((round(elapsed_s, 2), node.peers))


@click.command("localnet")
@click.option("--nodes", "count", default=8, show_default=True, type=click.IntRange(3, _MAX_NODES))
@click.option(
    "--out",
    "out_dir",
    default="out/localnet",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory. Each run starts from fresh homes: the previous run's nodeN/, "
    "logs/ and reports in it are removed first.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=60.0,
    show_default=True,
    help="Seconds, from the first node's start, for every node to reach its target.",
)
@click.option("--max-outbound", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--pex-strategy",
    "pex_strategy",
    type=click.Choice(PEX_STRATEGIES),
    default="v0.38",
    show_default=True,
    help="PEX request strategy of every node (start --pex.strategy).",
)
def localnet_command(
    count: int, out_dir: Path, timeout_s: float, max_outbound: int, pex_strategy: str
) -> None:
    """Run N nodes on 127.0.0.1 (one seed, the rest bootstrapping from it), then crawl them.

    Every run starts from fresh homes (new node keys, new address books) in --out: the
    previous run's node homes and logs there are removed. Each node binds an ephemeral
    port itself and reports it, so no port is ever raced for. Ctrl-C, SIGTERM and SIGHUP
    stop every node; so does localnet dying (each node stops with its parent).
    """
    from rich.console import Console

    console = Console(highlight=False)
    with cli_errors():
        out_dir.mkdir(parents=True, exist_ok=True)
        _reset(out_dir)
        log_dir = out_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        nodes = _make_nodes(out_dir, count)
    run = _Run(nodes, _targets(nodes, max_outbound), log_dir, max_outbound, pex_strategy)
    outcome = run.execute(console, timeout_s)
    if outcome.interrupted is not None:
        console.print(f"[yellow]interrupted[/] ({outcome.interrupted}); every node was stopped")
        raise SystemExit(128 + outcome.interrupted.signum)
    console.print()
    report = _write_report(out_dir, nodes, outcome.converged, outcome.converged_s, outcome.crawl)
    if outcome.crawl is not None:
        _write_crawl(console, outcome.crawl, out_dir)
    console.print(f"wrote {report}; node logs in {log_dir}")
    _conclude(console, outcome, count)


@dataclass
class _Outcome:
    """How a localnet run ended."""

    converged: bool = False
    converged_s: float = 0.0
    crawl: CrawlResult | None = None
    failure: str | None = None
    interrupted: _InterruptedError | None = None


@dataclass
class _Run:
    """One localnet run: start the nodes, watch them converge, crawl, stop them all."""

    nodes: list[LocalNode]
    targets: dict[int, int]
    log_dir: Path
    max_outbound: int
    pex_strategy: str

    def execute(self, console: Console, timeout_s: float) -> _Outcome:
        """Run the network within ``timeout_s`` seconds; every node is stopped after."""
        outcome = _Outcome()
        start = time.monotonic()
        try:
            with _stop_signals_raise(), ThreadPoolExecutor(max_workers=16) as pool:
                self._start_nodes(start + timeout_s)
                self._watch(console, pool, start, timeout_s, outcome)
                outcome.converged_s = time.monotonic() - start
                if outcome.converged:
                    console.print()
                    outcome.crawl = _crawl(self.nodes[0], console)
        except _InterruptedError as exc:
            outcome.interrupted = exc
        except CometP2PError as exc:
            outcome.failure = str(exc)
        finally:
            with _stop_signals_ignored():
                _stop_all(self.nodes)
        return outcome

    def _start_nodes(self, deadline: float) -> None:
        """The seed first (until it reports its ports), then every other node."""
        seed = self.nodes[0]
        _write_home_config(seed, seed, self.max_outbound)
        _spawn(seed, self.log_dir, self.pex_strategy)
        _wait_ready(seed, deadline)
        for node in self.nodes[1:]:
            _write_home_config(node, seed, self.max_outbound)
            _spawn(node, self.log_dir, self.pex_strategy)

    def _watch(
        self,
        console: Console,
        pool: ThreadPoolExecutor,
        start: float,
        timeout_s: float,
        outcome: _Outcome,
    ) -> None:
        """Show the live table until every node converged, one exited, or time is up."""
        from rich.live import Live

        nodes, targets = self.nodes, self.targets
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                elapsed = time.monotonic() - start
                _poll(nodes, pool, elapsed)
                live.update(_table(nodes, targets, elapsed))
                if exited := [n for n in nodes if not n.alive]:
                    outcome.failure = "; ".join(_exit_note(n) for n in exited[:3])
                    return
                if all(n.p2p_port and n.peers >= targets[n.index] for n in nodes):
                    outcome.converged = True
                    return
                if elapsed > timeout_s:
                    return
                time.sleep(_POLL_S)


def _write_crawl(console: Console, crawl: CrawlResult, out_dir: Path) -> None:
    """Print the crawl's summary and write its files (network.json, ...) to ``out_dir``."""
    from rich.markup import escape

    from cometp2p.crawler.report import PLOT_EXTRA_NOTE, plot_available, write_crawl_files

    console.print(summary_table(crawl))
    png = plot_available()
    if not png:
        console.print(f"[yellow]note[/]: {escape(PLOT_EXTRA_NOTE)}", soft_wrap=True)
    with cli_errors():
        files = write_crawl_files(
            crawl, out_dir, now=datetime.now(UTC), rng=random.Random(), png=png
        )
    print_files(console, files)


def _conclude(console: Console, outcome: _Outcome, count: int) -> None:
    """Print the verdict; exit 1 unless every node converged and the crawl reached all."""
    crawl = outcome.crawl
    if outcome.failure is not None:
        console.print(f"[red]failed[/]: {outcome.failure}")
        raise SystemExit(1)
    if not outcome.converged:
        console.print(f"[red]not converged[/] after {outcome.converged_s:.1f} s")
        raise SystemExit(1)
    if crawl is None or len(crawl.reached) != count:
        reached = 0 if crawl is None else len(crawl.reached)
        console.print(f"[red]crawl incomplete[/]: reached {reached} of {count} nodes")
        raise SystemExit(1)
    console.print(
        f"[green]converged[/]: all {count} nodes reached their peer targets in "
        f"{outcome.converged_s:.1f} s; the crawl reached all {count} and found "
        f"{len(crawl.edges)} edges in {crawl.elapsed_s:.2f} s"
    )


COMMANDS: tuple[click.Command, ...] = (localnet_command,)
