"""``cometp2p start``: run a p2p node from a home (config.toml + node_key.json).

Flags mirror ``cometbft start``'s p2p flags. The network (chain ID) comes from
``config/genesis.json`` when the home has one (as in a ``cometbft init`` home), else from
``--chain-id``. SIGINT, SIGTERM or SIGHUP stops the node cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import click

from cometp2p.aio.loop import run as run_event_loop
from cometp2p.cli.main import cli_errors, home_option, load_home_config
from cometp2p.config import PEX_STRATEGIES, Config, load_chain_id
from cometp2p.crypto.keys import load_or_generate_node_key
from cometp2p.errors import ConfigError
from cometp2p.fileio import atomic_write_bytes

if TYPE_CHECKING:  # the node (Switch, asyncio, protobuf) loads only to run: --help stays fast
    from cometp2p.node import Node

__all__ = ["COMMANDS", "apply_flags", "configure_logging", "parse_log_level", "start_command"]

_F = TypeVar("_F", bound=Callable[..., object])

DEFAULT_CHAIN_ID = "cometp2p-localnet"


class _PeerFirstFormatter(logging.Formatter):
    """One line per event: time, level, logger, then the message (which leads with
    ``[peer_id]`` when it concerns a peer)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")


_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 1,
}
# CometBFT's logger modules and the cometp2p loggers that play their part.
_MODULE_LOGGERS: Final = {
    "p2p": ("cometp2p.switch", "cometp2p.aio", "cometp2p.sansio", "cometp2p.wire"),
    "pex": ("cometp2p.pex",),
    "main": ("cometp2p.node", "cometp2p.cli"),
    "node": ("cometp2p.node",),
}


def parse_log_level(text: str) -> dict[str, int]:
    """Parse a log level the way ``cometbft --log_level`` does.

    Either one level (``info``) or ``module:level`` pairs, comma-separated, where module
    ``*`` is the default for every other module (``p2p:debug,*:error``). Levels:
    ``debug``, ``info``, ``error``, ``none`` (CometBFT's), also ``warn``/``warning``.
    Modules: ``p2p`` (switch, transport, connections), ``pex``, ``main``/``node``; any
    other name ``x`` means the logger ``cometp2p.x``.

    Returns:
        ``{logger name: level}``; ``""`` is the root (default) logger.

    Raises:
        click.BadParameter: an unknown level or a malformed item.
    """

    def level(name: str) -> int:
        try:
            return _LEVELS[name.strip().lower()]
        except KeyError:
            raise click.BadParameter(
                f"unknown level {name.strip()!r} (expected one of debug, info, error, none)",
                param_hint="--log_level",
            ) from None

    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise click.BadParameter("empty log level", param_hint="--log_level")
    if len(items) == 1 and ":" not in items[0]:
        return {"": level(items[0])}
    levels: dict[str, int] = {"": logging.INFO}
    for item in items:
        module, sep, name = item.partition(":")
        if not sep or not module.strip():
            raise click.BadParameter(
                f"expected module:level items such as 'p2p:debug,*:error', got {item!r}",
                param_hint="--log_level",
            )
        module = module.strip()
        if module == "*":
            levels[""] = level(name)
            continue
        for logger_name in _MODULE_LOGGERS.get(module, (f"cometp2p.{module}",)):
            levels[logger_name] = level(name)
    return levels


def configure_logging(level: str) -> None:
    """Log one line per event to stderr at ``level`` (see :func:`parse_log_level`).

    Raises:
        click.BadParameter: unknown level or malformed syntax.
    """
    levels = parse_log_level(level)
    handler = logging.StreamHandler()
    handler.setFormatter(_PeerFirstFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name, value in levels.items():
        logging.getLogger(name or None).setLevel(value)


def _split_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(item.strip() for item in value.split(",") if item.strip())


def apply_flags(
    config: Config,
    *,
    laddr: str | None = None,
    persistent_peers: str | None = None,
    seeds: str | None = None,
    pex: bool | None = None,
    seed_mode: bool | None = None,
    moniker: str | None = None,
    external_address: str | None = None,
    unconditional_peer_ids: str | None = None,
    private_peer_ids: str | None = None,
    upnp: bool | None = None,
    pex_strategy: str | None = None,
) -> Config:
    """Return ``config`` with the command-line overrides applied (``None`` = keep)."""
    p2p_changes: dict[str, object] = {}
    if laddr is not None:
        p2p_changes["laddr"] = laddr
    if external_address is not None:
        p2p_changes["external_address"] = external_address
    for name, value in (
        ("persistent_peers", persistent_peers),
        ("seeds", seeds),
        ("unconditional_peer_ids", unconditional_peer_ids),
        ("private_peer_ids", private_peer_ids),
    ):
        if (items := _split_list(value)) is not None:
            p2p_changes[name] = items
    if pex is not None:
        p2p_changes["pex"] = pex
    if seed_mode is not None:
        p2p_changes["seed_mode"] = seed_mode
    if upnp is not None:
        p2p_changes["upnp"] = upnp
    if pex_strategy is not None:
        p2p_changes["pex_strategy"] = pex_strategy
    p2p = dataclasses.replace(config.p2p, **p2p_changes)  # type: ignore[arg-type]
    changes: dict[str, object] = {"p2p": p2p}
    if moniker is not None:
        changes["moniker"] = moniker
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def resolve_chain_id(config: Config, flag: str | None) -> str:
    """genesis.json's ``chain_id`` if the home has one, else ``flag``, else the default.

    Raises:
        ConfigError: ``--chain-id`` disagrees with the home's genesis.json.
    """
    from_genesis = load_chain_id(config.home, config.genesis_file)
    if from_genesis is not None:
        if flag is not None and flag != from_genesis:
            raise ConfigError(
                f"--chain-id {flag!r} disagrees with {config.genesis_path} ({from_genesis!r})"
            )
        return from_genesis
    return flag or DEFAULT_CHAIN_ID


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when our parent dies (Linux ``PR_SET_PDEATHSIG``).

    ``localnet`` passes its PID: if it is killed outright (SIGKILL, a crash) its nodes
    still stop. Exits at once if the parent is already gone. Elsewhere than Linux this
    only does the "already gone" check.
    """
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        raise SystemExit(f"parent process {parent_pid} is gone; not starting")


def _write_ready_file(path: Path, node: Node) -> None:
    """Tell a supervisor (``localnet``) the ports this node actually bound."""
    host, port = node.listen_address or ("", 0)
    ready = {
        "node_id": node.node_key.node_id,
        "pid": os.getpid(),
        "p2p": [host, port],
        "metrics": node.metrics_port,
    }
    atomic_write_bytes(path, json.dumps(ready).encode())


async def _run(node: Node, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        on_ready = None if ready_file is None else lambda n: _write_ready_file(ready_file, n)
        await node.run(stop, on_ready)
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def _spellings(flag: str) -> list[str]:
    """``--p2p.seed_mode`` and ``--p2p.seed-mode``: cometbft takes either spelling."""
    body = flag.removeprefix("--")
    names = [flag, "--" + body.replace("_", "-"), "--" + body.replace("-", "_")]
    return list(dict.fromkeys(names))


def _text_flag(flag: str, dest: str, help_text: str) -> Callable[[_F], _F]:
    return click.option(*_spellings(flag), dest, default=None, help=help_text)


def _bool_flag(flag: str, dest: str, help_text: str) -> Callable[[_F], _F]:
    """A cometbft-style boolean flag: bare (true), ``=true`` or ``=false``."""
    return click.option(
        *_spellings(flag),
        dest,
        type=click.BOOL,
        is_flag=False,
        flag_value="true",
        default=None,
        metavar="[=BOOL]",
        help=help_text,
    )


@click.command("start")
@home_option
@_text_flag("--p2p.laddr", "laddr", "Listen address, e.g. tcp://0.0.0.0:26656.")
@_text_flag(
    "--p2p.external-address", "external_address", "host:port advertised to peers for dialing."
)
@_text_flag("--p2p.persistent_peers", "persistent_peers", "Comma-separated id@host:port to keep.")
@_text_flag("--p2p.seeds", "seeds", "Comma-separated id@host:port seed nodes.")
@_bool_flag("--p2p.pex", "pex", "Run the PEX reactor (bare: true).")
@click.option(
    "--p2p.no-pex", "no_pex", is_flag=True, default=False, help="Same as --p2p.pex=false."
)
@_bool_flag("--p2p.seed_mode", "seed_mode", "Run as a seed node (bare: true).")
@_text_flag(
    "--p2p.unconditional_peer_ids",
    "unconditional_peer_ids",
    "Comma-separated node IDs exempt from the peer limits.",
)
@_text_flag(
    "--p2p.private_peer_ids", "private_peer_ids", "Comma-separated node IDs never gossiped."
)
@_bool_flag("--p2p.upnp", "upnp", "Map the listen port on the UPnP gateway (bare: true).")
@click.option("--upnp.lease", "upnp_lease_s", type=int, default=None, hidden=True)
@click.option(
    "--pex.strategy",
    "pex_strategy",
    type=click.Choice(PEX_STRATEGIES),
    default=None,
    help="How PEX asks peers for addresses [default: config.toml's p2p.pex_strategy, "
    "else v0.38]: v0.38 (a random peer per round) or adaptive (v0.35's round robin).",
)
@click.option("--moniker", default=None, help="Human-readable node name.")
@click.option(
    *_spellings("--chain-id"), "chain_id", default=None, help="Network, if no genesis.json."
)
@click.option(
    *_spellings("--log_level"),
    "log_level",
    default="info",
    show_default=True,
    help="A level (debug, info, error, none) or module:level pairs, e.g. 'p2p:debug,*:error'.",
)
@click.option(
    "--pex.ensure_peers_period",
    "ensure_peers_period_s",
    type=float,
    default=None,
    hidden=True,
    help="Seconds between PEX ensure-peers rounds (CometBFT: 30); localnet uses 1.",
)
@click.option("--stop-with-parent", "parent_pid", type=int, default=None, hidden=True)
@click.option(
    "--ready-file",
    "ready_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    hidden=True,
    help="Once listening, write the bound ports here as JSON (localnet binds port 0).",
)
def start_command(
    home: str | None,
    laddr: str | None,
    external_address: str | None,
    persistent_peers: str | None,
    seeds: str | None,
    pex: bool | None,
    no_pex: bool,
    seed_mode: bool | None,
    unconditional_peer_ids: str | None,
    private_peer_ids: str | None,
    upnp: bool | None,
    upnp_lease_s: int | None,
    moniker: str | None,
    chain_id: str | None,
    log_level: str,
    ensure_peers_period_s: float | None,
    pex_strategy: str | None,
    parent_pid: int | None,
    ready_file: Path | None,
) -> None:
    """Run a p2p node until SIGINT, SIGTERM or SIGHUP.

    The home must exist (`cometp2p init` or `cometbft init`). Flags follow `cometbft
    start`: both --p2p.seed_mode and --p2p.seed-mode spellings, bare boolean flags or
    --p2p.pex=false.
    """
    if parent_pid is not None:
        stop_with_parent(parent_pid)
    configure_logging(log_level)
    pex = _pex_flag(pex, no_pex)
    with cli_errors():
        config = apply_flags(
            load_home_config(home, required=True),
            laddr=laddr,
            persistent_peers=persistent_peers,
            seeds=seeds,
            pex=pex,
            seed_mode=seed_mode,
            moniker=moniker,
            external_address=external_address,
            unconditional_peer_ids=unconditional_peer_ids,
            private_peer_ids=private_peer_ids,
            upnp=upnp,
            pex_strategy=pex_strategy,
        )
        node = _build_node(config, chain_id, ensure_peers_period_s, upnp_lease_s)
        run_event_loop(_run(node, ready_file))


def _pex_flag(pex: bool | None, no_pex: bool) -> bool | None:
    """``--p2p.pex`` after ``--p2p.no-pex`` (which means ``--p2p.pex=false``).

    Raises:
        click.UsageError: both ``--p2p.no-pex`` and ``--p2p.pex=true``.
    """
    if not no_pex:
        return pex
    if pex:
        raise click.UsageError("--p2p.no-pex contradicts --p2p.pex=true")
    return False


def _build_node(
    config: Config,
    chain_id: str | None,
    ensure_peers_period_s: float | None,
    upnp_lease_s: int | None,
) -> Node:
    """The Node of ``config`` with the default reactors (its key is made if missing).

    Raises:
        ConfigError: ``chain_id`` disagrees with the home's genesis.json.
        KeyFileError: the node key file is invalid or cannot be written.
    """
    from cometp2p.node import Node, default_reactors

    network = resolve_chain_id(config, chain_id)
    node_key = load_or_generate_node_key(config.node_key_path)
    node = Node(
        config,
        node_key,
        network,
        default_reactors(config, ensure_peers_period_s=ensure_peers_period_s),
    )
    if upnp_lease_s is not None:
        node.upnp_options["lease_s"] = upnp_lease_s
    return node


COMMANDS: tuple[click.Command, ...] = (start_command,)
