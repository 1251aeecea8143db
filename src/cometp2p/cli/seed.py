"""``cometp2p seed``: a seed node that keeps crawling and serves only peers it verified.

The node listens on ``--p2p.laddr`` in CometBFT's seed mode (answer one ``PexRequest``,
hang up) with the verified peers only; crawl rounds run forever on the schedule of
:mod:`cometp2p.seed.schedule`; the state is ``<home>/data/seed.db``; ``addrbook.json`` of
the verified peers is written to the home's address book path periodically and on exit;
the HTTP API and the live map listen on ``--http.laddr`` (needs ``cometp2p[seed]``).
SIGINT or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from cometp2p.aio.loop import run as run_event_loop
from cometp2p.cli.crawl import _networks, parse_seeds
from cometp2p.cli.main import cli_errors, home_option, load_home_config
from cometp2p.cli.start import apply_flags, configure_logging
from cometp2p.config import load_chain_id
from cometp2p.errors import ConfigError
from cometp2p.wire.netaddress import NetAddress, split_host_port

if TYPE_CHECKING:  # the seed service loads only to run: --help stays fast
    from aiohttp import web

    from cometp2p.config import Config
    from cometp2p.crawler import CrawlConfig
    from cometp2p.seed.service import SeedService
    from cometp2p.seed.store import SeedStore

__all__ = ["COMMANDS", "seed_command"]


def _http_laddr(value: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(value.removeprefix("http://").removeprefix("tcp://"))
        return host or "127.0.0.1", int(port)
    except ValueError as exc:  # NetAddressError is one too
        raise click.BadParameter(
            f"expected host:port, got {value!r}", param_hint="--http.laddr"
        ) from exc


async def _serve(
    *,
    home: str | None,
    laddr: str | None,
    http: tuple[str, int] | None,
    seeds: Sequence[NetAddress],
    network: str | None,
    crawl_options: dict[str, object],
    policy_options: dict[str, float],
    export_interval_s: float,
) -> None:
    from cometp2p.crawler import CrawlConfig
    from cometp2p.seed.schedule import SchedulePolicy
    from cometp2p.seed.store import SEED_DB, SeedStore

    config = apply_flags(load_home_config(home), laddr=laddr, pex=True, seed_mode=True)
    crawl = CrawlConfig(**crawl_options)  # type: ignore[arg-type]
    from_genesis = load_chain_id(config.home, config.genesis_file)
    if from_genesis is not None and network is not None and network != from_genesis:
        raise ConfigError(f"--network {network!r} disagrees with {config.genesis_path}")
    store = SeedStore(config.data_dir / SEED_DB, SchedulePolicy(**policy_options))  # type: ignore[arg-type]
    try:
        chain = await _seed_network(store, from_genesis or network, crawl, seeds)
        store.add_seeds(seeds)
        service, node_id = _make_service(config, store, chain, crawl, export_interval_s)
        runner = await _start_http(service, http)
        click.echo(
            f"seed {node_id} on {config.p2p.laddr}, network {chain}"
            + (f", http://{http[0]}:{http[1]}/" if http else ""),
            err=True,
        )
        try:
            await _run_until_signal(service)
        finally:
            if runner is not None:
                await runner.cleanup()
    finally:
        store.close()


async def _seed_network(
    store: SeedStore, given: str | None, crawl: CrawlConfig, seeds: Sequence[NetAddress]
) -> str:
    """The chain ID: ``given`` (genesis.json, --network), else the store's, else the seeds'.

    Raises:
        ConfigError: the store holds another network.
    """
    from cometp2p.crawler import Crawler

    stored = store.get_meta("network")
    chain = given or stored or await Crawler(None, crawl).detect_network(seeds)
    if stored is not None and stored != chain:
        raise ConfigError(f"{store.path} holds network {stored!r}, not {chain!r}")
    store.set_meta("network", chain)
    return chain


def _make_service(
    config: Config, store: SeedStore, chain: str, crawl: CrawlConfig, export_interval_s: float
) -> tuple[SeedService, str]:
    """The seed service with its node (PEX in seed mode, verified peers only), and the
    node's ID (its key is made if missing)."""
    from cometp2p.crypto.keys import load_or_generate_node_key
    from cometp2p.node import Node
    from cometp2p.pex.config import PexConfig
    from cometp2p.seed.reactor import VerifiedSeedReactor
    from cometp2p.seed.service import SeedService

    node_key = load_or_generate_node_key(config.node_key_path)
    service = SeedService(
        store,
        chain,
        crawl,
        addrbook_path=config.addr_book_path,
        export_interval_s=export_interval_s,
    )
    select, on_inbound = service.make_reactor_callbacks()
    reactor = VerifiedSeedReactor(select, on_inbound, PexConfig.from_p2p(config.p2p))
    service.node = Node(config, node_key, chain, [("PEX", reactor)])
    return service, node_key.node_id


async def _start_http(service: SeedService, http: tuple[str, int] | None) -> web.AppRunner | None:
    """Serve the HTTP API and map on ``http`` (none when ``None``)."""
    if http is None:
        return None
    from aiohttp import web

    from cometp2p.seed.http import make_app

    runner = web.AppRunner(make_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, http[0], http[1]).start()
    return runner


async def _run_until_signal(service: SeedService) -> None:
    """Run ``service`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@click.command("seed")
@click.argument("seeds", nargs=-1, required=True)
@home_option
@click.option("--p2p.laddr", "laddr", default=None, help="P2P listen address [default: config].")
@click.option(
    "--http.laddr",
    "http_laddr",
    default="127.0.0.1:8080",
    show_default=True,
    help="HTTP API and map listen address; 'off' for none.",
)
@click.option("--network", default=None, help="Chain ID [default: genesis.json, else the seeds'].")
@click.option("--concurrency", default=200, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--timeout",
    "timeout_s",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds allowed for each step with a node: connect, handshake, PEX answer.",
)
@click.option("--allow-net", "allow_net", multiple=True, metavar="CIDR", help="Dial only here.")
@click.option(
    "--min-interval", default=10.0, show_default=True, type=click.FloatRange(0),
    help="Seconds: never revisit a node sooner (re-asking it while it yields new nodes).",
)  # fmt: skip
@click.option(
    "--new-interval", default=30.0, show_default=True, type=click.FloatRange(0),
    help="Seconds between visits of a new or flaky node.",
)  # fmt: skip
@click.option(
    "--stable-interval", default=600.0, show_default=True, type=click.FloatRange(0),
    help="Longest interval between visits of a node that keeps answering.",
)  # fmt: skip
@click.option(
    "--failed-interval", default=3600.0, show_default=True, type=click.FloatRange(0),
    help="Longest interval between visits of a node that keeps failing.",
)  # fmt: skip
@click.option(
    "--fresh", "fresh_s", default=None, type=click.FloatRange(min=0, min_open=True),
    help="Seconds a verification counts [default: 2 x --stable-interval].",
)  # fmt: skip
@click.option(
    "--export-interval", "export_interval_s", default=120.0, show_default=True,
    type=click.FloatRange(min=0, min_open=True), help="Seconds between addrbook.json exports.",
)  # fmt: skip
@click.option("--log-level", "log_level", default="info", show_default=True)
def seed_command(
    seeds: tuple[str, ...],
    home: str | None,
    laddr: str | None,
    http_laddr: str,
    network: str | None,
    concurrency: int,
    timeout_s: float,
    allow_net: tuple[str, ...],
    min_interval: float,
    new_interval: float,
    stable_interval: float,
    failed_interval: float,
    fresh_s: float | None,
    export_interval_s: float,
    log_level: str,
) -> None:
    """Run a seed node that crawls from SEEDS (id@host:port) and serves verified peers."""
    configure_logging(log_level)
    http = None if http_laddr == "off" else _http_laddr(http_laddr)
    with cli_errors():
        seed_addrs = parse_seeds(seeds)
        try:
            import aiohttp  # noqa: F401
        except ImportError as exc:
            raise ConfigError("cometp2p seed needs aiohttp: pip install 'cometp2p[seed]'") from exc
        policy: dict[str, float] = {
            "min_interval_s": min_interval,
            "new_interval_s": new_interval,
            "stable_interval_s": stable_interval,
            "failed_interval_s": failed_interval,
        }
        if fresh_s is not None:
            policy["fresh_s"] = fresh_s
        run_event_loop(
            _serve(
                home=home,
                laddr=laddr,
                http=http,
                seeds=seed_addrs,
                network=network,
                crawl_options={
                    "concurrency": concurrency,
                    "timeout_s": timeout_s,
                    "allowed_networks": _networks(allow_net),
                },
                policy_options=policy,
                export_interval_s=export_interval_s,
            )
        )


COMMANDS: tuple[click.Command, ...] = (seed_command,)
