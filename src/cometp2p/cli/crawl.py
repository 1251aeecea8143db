"""``cometp2p crawl``: map a CometBFT network through real handshakes and PEX.

The network (chain ID) comes from the home's ``config/genesis.json`` when it has one (as a
``cometbft init`` home does), else from ``--network``, else from the seeds' own NodeInfo.
Progress is shown live (found, reached, failed, in flight); at the end a summary table is
printed and ``network.json``, ``addrbook.json`` and ``network.png`` are written to
``--out``. The exit status is 0 when at least one node was reached.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from cometp2p.aio.loop import run as run_event_loop
from cometp2p.cli.main import cli_errors, home_option, load_home_config, make_console
from cometp2p.errors import ConfigError, NetAddressError

# Listing the commands (``cometp2p --help``) imports this module: the crawler and rich's
# widgets are imported where they are used, so that listing stays fast.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from cometp2p.crawler import CrawlConfig, Crawler, CrawlProgress, CrawlResult
    from cometp2p.crawler.crawler import IPNetwork
    from cometp2p.crawler.report import CrawlFiles
    from cometp2p.wire.netaddress import NetAddress

__all__ = [
    "COMMANDS",
    "crawl_command",
    "parse_seeds",
    "print_files",
    "run_crawl",
    "summary_table",
]

_REFRESH_S: Final = 0.25
_TABLE_ROWS: Final = 40


def parse_seeds(values: Sequence[str]) -> list[NetAddress]:
    """Parse ``id@host:port`` seeds (each value may hold several, comma-separated).

    Host names are resolved (blocking DNS).

    Raises:
        ConfigError: a seed does not parse or does not resolve; or none was given.
    """
    from cometp2p.wire.netaddress import NetAddress

    seeds: list[NetAddress] = []
    for value in values:
        for text in (part.strip() for part in value.split(",")):
            if not text:
                continue
            try:
                seeds.append(NetAddress.parse(text, resolve=True))
            except NetAddressError as exc:
                raise ConfigError(f"seed {text!r}: {exc}") from exc
    if not seeds:
        raise ConfigError("no seeds given: pass at least one id@host:port")
    return seeds


def _progress_line(p: CrawlProgress) -> str:
    return (
        f"[bold]crawling[/] {p.elapsed_s:6.1f} s   found [cyan]{p.found}[/]   "
        f"reached [green]{p.reached}[/]   failed [red]{p.failed}[/]   "
        f"in flight [yellow]{p.in_flight}[/]   queued {p.queued}"
    )


async def run_crawl(
    crawler: Crawler, seeds: Sequence[NetAddress], console: Console | None = None
) -> CrawlResult:
    """Run ``crawler`` from ``seeds``, showing live progress on ``console`` if given.

    Raises:
        CrawlError: the network was not given and no seed told us its network.
    """
    if console is None:
        return await crawler.crawl(seeds)
    from rich.live import Live

    task = asyncio.create_task(crawler.crawl(seeds))
    with Live(
        _progress_line(crawler.progress()), console=console, refresh_per_second=8, transient=True
    ) as live:
        while not task.done():
            await asyncio.wait({task}, timeout=_REFRESH_S)
            live.update(_progress_line(crawler.progress()))
    result = task.result()
    console.print(_progress_line(crawler.progress()).replace("crawling", "crawled"))
    return result


def summary_table(result: CrawlResult, max_rows: int = _TABLE_ROWS) -> Table:
    """A rich table of the crawled nodes: reachable first, then failures by reason."""
    from rich.table import Table

    table = Table(
        title=f"{result.network}: {len(result.nodes)} nodes found, {len(result.reached)} "
        f"reachable, {len(result.edges)} edges, {result.elapsed_s:.1f} s"
    )
    for column in ("node ID", "moniker", "version", "address", "channels", "status"):
        table.add_column(column)
    ordered = sorted(
        result.nodes,
        key=lambda n: (
            not n.reachable,
            n.error.value if n.error else "~",
            n.node_info.moniker if n.node_info else "~",
            n.node_id,
        ),
    )
    for record in ordered[:max_rows]:
        info = record.node_info
        addr = record.dialed or (record.addresses[0] if record.addresses else None)
        if record.reachable:
            status = "[green]reachable[/]"
        elif record.error is not None:
            status = f"[red]{record.error.value}[/]"
        else:
            status = "[dim]not dialed[/]"
        table.add_row(
            record.node_id[:12],
            info.moniker if info else "",
            info.version if info else "",
            f"{addr.ip}:{addr.port}" if addr else "",
            info.channels.hex().upper() if info else "",
            status,
        )
    if len(ordered) > max_rows:
        table.caption = f"… and {len(ordered) - max_rows} more in network.json"
    return table


def print_files(console: Console, files: CrawlFiles) -> None:
    """One line per file written."""
    console.print(f"wrote {files.network_json}")
    console.print(f"wrote {files.addrbook_json}")
    if files.network_png is not None:
        console.print(f"wrote {files.network_png}")
    if files.network_html is not None:
        console.print(f"wrote {files.network_html}")


def _networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-net") from exc


@click.command("crawl")
@click.argument("seeds", nargs=-1, required=True)
@click.option("--network", default=None, help="Chain ID [default: genesis.json, else the seeds'].")
@home_option
@click.option(
    "--out",
    "out_dir",
    default="out/crawl",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--concurrency", default=200, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--timeout",
    "timeout_s",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds allowed for each step with a node: connect, handshake, PEX answer.",
)
@click.option("--max-nodes", default=10_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-duration",
    "max_duration_s",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Stop the whole crawl after this many seconds.",
)
@click.option(
    "--allow-net",
    "allow_net",
    multiple=True,
    metavar="CIDR",
    help="Dial only addresses in this range (repeatable) [default: any].",
)
@click.option(
    "--png/--no-png",
    default=True,
    show_default=True,
    help="Draw network.png (needs the plot extra: pip install 'cometp2p[plot]').",
)
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Re-ask nodes on fresh connections while their answers bring new nodes.",
)
def crawl_command(
    seeds: tuple[str, ...],
    network: str | None,
    home: str | None,
    out_dir: Path,
    concurrency: int,
    timeout_s: float,
    max_nodes: int,
    max_duration_s: float | None,
    allow_net: tuple[str, ...],
    png: bool,
    rounds: int,
) -> None:
    """Crawl a CometBFT network from SEEDS (id@host:port) through handshakes and PEX."""
    from cometp2p.crawler import CrawlConfig

    console = make_console()
    allowed = _networks(allow_net)
    with cli_errors():
        _check_home(home)
        seed_addrs = parse_seeds(seeds)
        chain_id = _chain_id(home, network)
        crawl_config = CrawlConfig(
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_nodes=max_nodes,
            max_duration_s=max_duration_s,
            allowed_networks=allowed,
        )
        result = _crawl(chain_id, seed_addrs, crawl_config, rounds, console)
        console.print(summary_table(result))
        files = _write_files(console, result, out_dir, png)
    if not result.reached:
        raise click.ClickException(
            f"no node of {result.network} was reachable (see {files.network_json})"
        )


def _check_home(home: str | None) -> None:
    """Refuse a ``--home`` that does not exist (its genesis.json would be missed).

    Raises:
        ConfigError: ``home`` is given and is not a directory.
    """
    from cometp2p.config import resolve_home

    if home is not None and not resolve_home(home).is_dir():
        raise ConfigError(
            f"home {resolve_home(home)} does not exist: pass an existing --home "
            "(its config/genesis.json gives the network), or none"
        )


def _chain_id(home: str | None, network: str | None) -> str | None:
    """The chain ID to crawl: the home's genesis.json's, else ``--network`` (else ``None``:
    the seeds').

    Raises:
        ConfigError: ``--network`` disagrees with genesis.json, or the config is invalid.
    """
    from cometp2p.config import load_chain_id

    config = load_home_config(home)
    from_genesis = load_chain_id(config.home, config.genesis_file)
    if from_genesis is not None and network is not None and network != from_genesis:
        raise ConfigError(
            f"--network {network!r} disagrees with {config.genesis_path} ({from_genesis!r})"
        )
    return from_genesis or network


def _crawl(
    chain_id: str | None,
    seeds: list[NetAddress],
    crawl_config: CrawlConfig,
    rounds: int,
    console: Console,
) -> CrawlResult:
    """One crawl with the live table, or ``rounds`` rounds with a line per round."""
    from cometp2p.crawler import Crawler

    if rounds > 1:
        from cometp2p.seed.rounds import crawl_rounds

        return run_event_loop(
            crawl_rounds(
                chain_id,
                seeds,
                crawl_config,
                rounds,
                on_round=lambda r: console.print(
                    f"round {r.number}: {r.stats.visited} visited, {r.stats.reached} "
                    f"reached, {r.stats.new_nodes} new nodes, {r.stats.elapsed_s:.1f} s"
                ),
            )
        )
    crawler = Crawler(chain_id, crawl_config)
    return run_event_loop(run_crawl(crawler, seeds, console))


def _write_files(console: Console, result: CrawlResult, out_dir: Path, png: bool) -> CrawlFiles:
    """Write network.json, addrbook.json and (with the plot extra) network.png."""
    from rich.markup import escape

    from cometp2p.crawler.report import PLOT_EXTRA_NOTE, plot_available, write_crawl_files

    if png and not plot_available():
        console.print(f"[yellow]note[/]: {escape(PLOT_EXTRA_NOTE)}", soft_wrap=True)
        png = False
    files = write_crawl_files(result, out_dir, now=datetime.now(UTC), png=png, rng=random.Random())
    print_files(console, files)
    return files


COMMANDS: tuple[click.Command, ...] = (crawl_command,)
