"""Benchmark: the Crawler against a big synthetic PEX network on loopback (and a sanity check).

A child process (this script with ``--serve``) hosts N Python PEX nodes (default 300,
``--quick`` 60) as Switches on 127.0.0.1 ephemeral ports in one asyncio loop. No node is
in seed mode and none dials anyone (``max_num_outbound_peers = 0``, ensure-peers period
one hour): each AddrBook is filled up front with K (default 20) random other live nodes
and ``round(K * down_fraction)`` (default 2) of the ``round(N * down_fraction)`` down
nodes: valid node IDs whose port is bound but not listening, so a dial is refused.
A node answers a PexRequest with ``get_selection()`` (behaviour.md §5.9), which is its
whole book while the book holds at most 32 addresses; K is bounded so that it does.

The child prints the ground truth on one stdout line (every live node with its address,
every down node, and each live node's book as the book holds it), then serves until its
stdin closes, SIGTERM or ``--lifetime-s``. This process crawls it from live node 0, once
per ``--concurrency`` (default 200, then 16) on the same network, each crawl with a fresh
crawler key, and compares with the ground truth: the live nodes reachable from the seed
in the "book holds" graph are what a crawl can discover; the down nodes those books name
are what it should find refused.

Reported per crawl: nodes found, reached, failed by reason, coverage (reached share of the
discoverable live nodes), elapsed seconds, nodes/s (dialed nodes, reached + failed, per
second of crawl), peak in flight, "told us about" edges against the expected count, and
the CPU seconds spent by the crawler (this process, getrusage) and by the serving child
(/proc, when available) during the crawl. No separate ceiling is measured: the two CPU
figures against the elapsed time say whether either side (one core each) was the limit,
or the round trips of each visit and the depth of the graph were.

Exit status 1 when a crawl misses a discoverable live node (coverage < 100 %).

Run: ``.venv/bin/python bench/crawl.py [--quick] [--json] [--nodes 300] [--book-size 20]
[--concurrency 200 16]``. ``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import random
import resource
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cometp2p.crawler.crawler import CrawlConfig, Crawler
from cometp2p.crawler.model import FailureReason, NodeState
from cometp2p.crypto.keys import NodeKey
from cometp2p.pex.addrbook import MIN_GET_SELECTION, AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.errors import AddrBookError
from cometp2p.pex.reactor import PEXReactor
from cometp2p.testing.network import LOOPBACK, loopback_p2p_config, make_switch, switch_address
from cometp2p.wire.netaddress import NetAddress

CHAIN_ID: Final = "bench-crawl"
FULL_NODES: Final = 300
QUICK_NODES: Final = 60
READY_TIMEOUT_S: Final = 120.0
"""Bound on the child's start: N Switches listening and their books filled."""
CRAWL_TIMEOUT_S: Final = 300.0
"""``max_duration_s`` of each crawl; a crawl cut short reports the nodes it missed."""
STOP_TIMEOUT_S: Final = 20.0
"""How long the child may take to stop its Switches once stdin closes."""
DEFAULT_LIFETIME_S: Final = 1800.0
"""The child exits on its own after this long, whatever happens to this process."""
QUIET_PEX: Final = PexConfig(ensure_peers_period_s=3600.0)
"""A node that never dials nor asks (it also has max_num_outbound_peers = 0)."""
READ_LIMIT_BYTES: Final = 64 * 1024 * 1024
SCRIPT: Final = Path(__file__).resolve()


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True, slots=True)
class Truth:
    """The synthetic network as the child built it.

    Attributes:
        chain_id: the network of every node.
        live: node ID -> ``id@127.0.0.1:port`` of every serving node, node 0 first.
        down: node ID -> address of every down node (bound, not listening).
        books: node ID -> the node IDs its AddrBook holds (what it answers).
        start_s: seconds the child took to start the Switches and fill the books.
    """

    chain_id: str
    live: dict[str, str]
    down: dict[str, str]
    books: dict[str, list[str]]
    start_s: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "chain_id": self.chain_id,
                "live": self.live,
                "down": self.down,
                "books": self.books,
                "start_s": self.start_s,
            }
        )

    @classmethod
    def from_json(cls, line: bytes) -> Truth:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise RuntimeError(f"expected a JSON object from the child, got {line[:80]!r}")
        return cls(
            chain_id=str(doc["chain_id"]),
            live=_str_map(doc["live"]),
            down=_str_map(doc["down"]),
            books={str(k): [str(i) for i in v] for k, v in dict(doc["books"]).items()},
            start_s=float(doc["start_s"]),
        )

    @property
    def seed_id(self) -> str:
        return next(iter(self.live))

    def discoverable(self) -> tuple[set[str], set[str], int]:
        """What a crawl from the seed can find: live IDs, down IDs and edges.

        Breadth-first over "node X's book holds Y", starting at the seed; down nodes are
        leaves (they answer nothing). The edge count is the sum of the reachable live
        nodes' book sizes: each reached node tells the crawler its whole book.
        """
        live: set[str] = {self.seed_id}
        down: set[str] = set()
        edges = 0
        queue = deque([self.seed_id])
        while queue:
            book = self.books[queue.popleft()]
            edges += len(book)
            for node_id in book:
                if node_id in self.down:
                    down.add(node_id)
                elif node_id not in live:
                    live.add(node_id)
                    queue.append(node_id)
        return live, down, edges


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RuntimeError(f"expected a JSON object, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


# --------------------------------------------------------------------------- the network (child)


def _raise_fd_limit() -> None:
    """Hundreds of sockets per process: take the hard limit on open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(
    nodes: int, book_size: int, down_fraction: float, seed: int, lifetime_s: float
) -> None:
    """Host the network, print the ground truth, serve until told to stop."""
    rng = random.Random(seed)
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        reactors: list[PEXReactor] = []
        addresses: list[NetAddress] = []
        for i in range(nodes):
            reactor = PEXReactor(
                AddrBook(strict=False, rng=random.Random(rng.getrandbits(64))),
                QUIET_PEX,
                rng=random.Random(rng.getrandbits(64)),
            )
            switch = make_switch(
                [("PEX", reactor)],
                chain_id=CHAIN_ID,
                moniker=f"n{i}",
                node_key=NodeKey.from_seed(rng.randbytes(32)),
                p2p=loopback_p2p_config(max_num_outbound_peers=0, max_num_inbound_peers=1000),
            )
            await stack.enter_async_context(switch)
            reactors.append(reactor)
            addresses.append(switch_address(switch))

        # Down nodes: the port stays bound (nobody else can take it) but never listens,
        # so a connect is refused at once, like a stopped node.
        down: list[NetAddress] = []
        for _ in range(max(1, round(nodes * down_fraction)) if down_fraction > 0 else 0):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            stack.callback(sock.close)
            sock.bind((LOOPBACK, 0))
            node_id = NodeKey.from_seed(rng.randbytes(32)).node_id
            port = sock.getsockname()[1]
            down.append(NetAddress.parse(f"{node_id}@{LOOPBACK}:{port}", resolve=False))
        down_per_book = min(len(down), round(book_size * down_fraction))

        books: dict[str, list[str]] = {}
        for i, (reactor, own) in enumerate(zip(reactors, addresses, strict=True)):
            others = rng.sample(range(nodes - 1), book_size)
            picked = [addresses[j + (j >= i)] for j in others]  # every index but i
            picked += rng.sample(down, down_per_book)
            now = reactor.now()
            for addr in picked:
                with contextlib.suppress(AddrBookError):
                    reactor.book.add_address(addr, own, now)
            books[own.id] = [ka.id for ka in reactor.book]

        truth = Truth(
            chain_id=CHAIN_ID,
            live={a.id: str(a) for a in addresses},
            down={a.id: str(a) for a in down},
            books=books,
            start_s=time.perf_counter() - started,
        )
        sys.stdout.write(truth.to_json() + "\n")
        sys.stdout.flush()
        await _wait_for_stop(lifetime_s)


async def _wait_for_stop(lifetime_s: float) -> None:
    """Until stdin reaches EOF, SIGTERM/SIGINT arrives, or ``lifetime_s`` passes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    fd = sys.stdin.fileno()

    def on_stdin() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, on_stdin)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(lifetime_s):
            await stop.wait()


# --------------------------------------------------------------------------- the crawl (parent)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` from /proc (None where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15


@dataclass(frozen=True, slots=True)
class CrawlFigures:
    """One crawl, measured and compared with the ground truth (see the module docstring)."""

    concurrency: int
    found: int
    reached: int
    failed: int
    not_dialed: int
    errors: dict[str, int]
    discoverable_live: int
    discoverable_down: int
    coverage: float
    missed_live: int
    down_refused: int
    unexpected: int
    edges: int
    expected_edges: int
    pex_errors: int
    elapsed_s: float
    nodes_per_s: float
    peak_in_flight: int
    crawler_cpu_s: float
    server_cpu_s: float | None


@dataclass(frozen=True, slots=True)
class Report:
    """The whole run: the network and one :class:`CrawlFigures` per concurrency."""

    nodes: int
    down_nodes: int
    book_size: int
    mean_book: float
    timeout_s: float
    network_start_s: float
    runs: list[CrawlFigures]

    @property
    def ok(self) -> bool:
        return all(r.missed_live == 0 for r in self.runs)

    def to_document(self) -> dict[str, object]:
        doc = dataclasses.asdict(self)
        doc["ok"] = self.ok
        return doc


async def crawl_once(
    truth: Truth, concurrency: int, timeout_s: float, server_pid: int
) -> CrawlFigures:
    """One crawl from the seed with a fresh crawler key."""
    config = CrawlConfig(
        concurrency=concurrency,
        timeout_s=timeout_s,
        max_duration_s=CRAWL_TIMEOUT_S,
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    crawler = Crawler(truth.chain_id, config)
    seed = NetAddress.parse(truth.live[truth.seed_id], resolve=False)
    cpu_before, server_before = _own_cpu_s(), _process_cpu_s(server_pid)
    result = await crawler.crawl([seed])
    cpu_s = _own_cpu_s() - cpu_before
    server_after = _process_cpu_s(server_pid)
    server_cpu_s = (
        server_after - server_before
        if server_before is not None and server_after is not None
        else None
    )

    live, down, expected_edges = truth.discoverable()
    reached = {n.node_id for n in result.reached}
    failed = {n.node_id for n in result.failed}
    found = {n.node_id for n in result.nodes}
    elapsed_s = result.elapsed_s
    return CrawlFigures(
        concurrency=concurrency,
        found=len(found),
        reached=len(reached),
        failed=len(failed),
        not_dialed=sum(1 for n in result.nodes if n.state is NodeState.NOT_DIALED),
        errors=result.error_counts(),
        discoverable_live=len(live),
        discoverable_down=len(down),
        coverage=len(reached & live) / len(live),
        missed_live=len(live - reached),
        down_refused=sum(
            1 for n in result.failed if n.node_id in down and n.error is FailureReason.REFUSED
        ),
        unexpected=len(found - live - down),
        edges=len(result.edges),
        expected_edges=expected_edges,
        pex_errors=sum(1 for n in result.reached if n.pex_error),
        elapsed_s=round(elapsed_s, 3),
        nodes_per_s=round((len(reached) + len(failed)) / elapsed_s, 1),
        peak_in_flight=result.peak_in_flight,
        crawler_cpu_s=round(cpu_s, 3),
        server_cpu_s=round(server_cpu_s, 3) if server_cpu_s is not None else None,
    )


async def _stop_child(proc: asyncio.subprocess.Process) -> None:
    """Close its stdin, then SIGTERM, then SIGKILL; each step bounded."""
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    for escalate in (None, proc.terminate, proc.kill):
        if escalate is not None:
            with contextlib.suppress(ProcessLookupError):
                escalate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S if escalate is None else 5.0):
                await proc.wait()
            return


async def run(args: argparse.Namespace, nodes: int) -> Report:
    """Start the network child, crawl it once per concurrency, always stop the child."""
    command = [
        sys.executable,
        str(SCRIPT),
        "--serve",
        "--nodes", str(nodes),
        "--book-size", str(args.book_size),
        "--down-fraction", str(args.down_fraction),
        "--seed", str(args.seed),
        "--lifetime-s", str(args.lifetime_s),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=READ_LIMIT_BYTES,
    )
    try:
        if proc.stdout is None:
            raise RuntimeError("no pipe to the network child")
        async with asyncio.timeout(READY_TIMEOUT_S):
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the network child exited before it was ready ({proc.returncode})")
        truth = Truth.from_json(line)
        runs = [
            await crawl_once(truth, concurrency, args.timeout_s, proc.pid)
            for concurrency in args.concurrency
        ]
    finally:
        await _stop_child(proc)
    return Report(
        nodes=len(truth.live),
        down_nodes=len(truth.down),
        book_size=args.book_size,
        mean_book=round(sum(map(len, truth.books.values())) / len(truth.books), 2),
        timeout_s=args.timeout_s,
        network_start_s=round(truth.start_s, 2),
        runs=runs,
    )


# --------------------------------------------------------------------------- main


def _print_table(report: Report) -> None:
    print(
        f"{report.nodes} live PEX nodes + {report.down_nodes} down, books of "
        f"{report.mean_book} addresses (started in {report.network_start_s} s), "
        f"crawl timeout {report.timeout_s:g} s, one child process serving"
    )
    headers = ("concurrency", "found", "reached", "failed", "coverage %", "edges",
               "elapsed s", "nodes/s", "peak", "crawler CPU s", "server CPU s")  # fmt: skip

    def cells(r: CrawlFigures) -> list[str]:
        reasons = ", ".join(f"{k} {v}" for k, v in r.errors.items())
        return [
            str(r.concurrency),
            str(r.found),
            str(r.reached),
            f"{r.failed} ({reasons})" if reasons else str(r.failed),
            f"{r.coverage * 100:.1f}",
            f"{r.edges}/{r.expected_edges}",
            f"{r.elapsed_s:.2f}",
            f"{r.nodes_per_s:.0f}",
            str(r.peak_in_flight),
            f"{r.crawler_cpu_s:.2f}",
            "-" if r.server_cpu_s is None else f"{r.server_cpu_s:.2f}",
        ]

    rows = [list(headers)] + [cells(r) for r in report.runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(
        "(coverage: reached / live nodes reachable from the seed through the books; "
        "edges: found / expected; nodes/s: (reached + failed) / elapsed)"
    )
    for r in report.runs:
        if r.unexpected or r.pex_errors or r.down_refused != r.discoverable_down:
            print(
                f"warning, concurrency {r.concurrency}: {r.unexpected} unexpected nodes, "
                f"{r.pex_errors} PEX errors, {r.down_refused}/{r.discoverable_down} "
                "down nodes refused",
                file=sys.stderr,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_NODES} nodes")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--nodes", type=int, help=f"live nodes (default {FULL_NODES})")
    parser.add_argument("--book-size", type=int, default=20, help="live addresses per book")
    parser.add_argument(
        "--down-fraction",
        type=float,
        default=0.1,
        help="down nodes as a share of the nodes, and down addresses as a share of a book",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[200, 16])
    parser.add_argument("--timeout-s", type=float, default=5.0, help="CrawlConfig.timeout_s")
    parser.add_argument("--seed", type=int, default=1, help="randomness of keys and books")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--lifetime-s", type=float, default=DEFAULT_LIFETIME_S, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    nodes = args.nodes or (QUICK_NODES if args.quick else FULL_NODES)
    down_per_book = round(args.book_size * args.down_fraction)
    if not 1 <= args.book_size < nodes:
        parser.error(f"--book-size must be in [1, {nodes - 1}], got {args.book_size}")
    if not 0 <= args.down_fraction < 1:
        parser.error(f"--down-fraction must be in [0, 1), got {args.down_fraction}")
    if args.book_size + down_per_book > MIN_GET_SELECTION:
        # A larger book is answered with a random part of it: the ground truth would no
        # longer be what one request per node can discover.
        parser.error(
            f"a book must hold at most {MIN_GET_SELECTION} addresses so that one PexRequest "
            f"returns all of it; got {args.book_size} + {down_per_book} down"
        )
    logging.basicConfig(level=logging.ERROR)
    _raise_fd_limit()
    if args.serve:
        asyncio.run(serve(nodes, args.book_size, args.down_fraction, args.seed, args.lifetime_s))
        return

    report = asyncio.run(run(args, nodes))
    _print_table(report)
    if args.json:
        print(json.dumps(report.to_document()))
    if not report.ok:
        print("FAIL: a crawl missed discoverable live nodes", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
