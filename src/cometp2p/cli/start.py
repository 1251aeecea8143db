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
from pathlib import Path

import click

from cometp2p.cli.main import cli_errors, home_option, load_home_config
from cometp2p.config import Config, load_chain_id
from cometp2p.crypto.keys import load_or_generate_node_key
from cometp2p.errors import ConfigError
from cometp2p.fileio import atomic_write_bytes
from cometp2p.node import Node, default_reactors

__all__ = ["COMMANDS", "configure_logging", "start_command"]

DEFAULT_CHAIN_ID = "cometp2p-localnet"


class _PeerFirstFormatter(logging.Formatter):
    """One line per event: time, level, logger, then the message (which leads with
    ``[peer_id]`` when it concerns a peer)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")


def configure_logging(level: str) -> None:
    """Log one line per event to stderr at ``level`` (debug, info, warning, error).

    Raises:
        click.BadParameter: unknown level.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise click.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    handler = logging.StreamHandler()
    handler.setFormatter(_PeerFirstFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


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
) -> Config:
    """Return ``config`` with the command-line overrides applied (``None`` = keep)."""
    p2p_changes: dict[str, object] = {}
    if laddr is not None:
        p2p_changes["laddr"] = laddr
    if (peers := _split_list(persistent_peers)) is not None:
        p2p_changes["persistent_peers"] = peers
    if (seed_list := _split_list(seeds)) is not None:
        p2p_changes["seeds"] = seed_list
    if pex is not None:
        p2p_changes["pex"] = pex
    if seed_mode is not None:
        p2p_changes["seed_mode"] = seed_mode
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


@click.command("start")
@home_option
@click.option(
    "--p2p.laddr", "laddr", default=None, help="Listen address, e.g. tcp://0.0.0.0:26656."
)
@click.option(
    "--p2p.persistent_peers",
    "persistent_peers",
    default=None,
    help="Comma-separated id@host:port peers to keep connected.",
)
@click.option("--p2p.seeds", "seeds", default=None, help="Comma-separated id@host:port seeds.")
@click.option("--p2p.pex/--p2p.no-pex", "pex", default=None, help="Run the PEX reactor.")
@click.option("--p2p.seed_mode", "seed_mode", type=bool, default=None, help="Run as a seed node.")
@click.option("--moniker", default=None, help="Human-readable node name.")
@click.option("--chain-id", "chain_id", default=None, help="Network, if the home has no genesis.")
@click.option("--log-level", "log_level", default="info", show_default=True)
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
    persistent_peers: str | None,
    seeds: str | None,
    pex: bool | None,
    seed_mode: bool | None,
    moniker: str | None,
    chain_id: str | None,
    log_level: str,
    ensure_peers_period_s: float | None,
    ready_file: Path | None,
    parent_pid: int | None,
) -> None:
    """Run a p2p node until SIGINT, SIGTERM or SIGHUP."""
    if parent_pid is not None:
        stop_with_parent(parent_pid)
    configure_logging(log_level)
    with cli_errors():
        config = apply_flags(
            load_home_config(home),
            laddr=laddr,
            persistent_peers=persistent_peers,
            seeds=seeds,
            pex=pex,
            seed_mode=seed_mode,
            moniker=moniker,
        )
        network = resolve_chain_id(config, chain_id)
        node_key = load_or_generate_node_key(config.node_key_path)
        node = Node(
            config,
            node_key,
            network,
            default_reactors(config, ensure_peers_period_s=ensure_peers_period_s),
        )
        asyncio.run(_run(node, ready_file))


COMMANDS: tuple[click.Command, ...] = (start_command,)
