"""``cometp2p trust``: look at, export and import the trust metric store (behaviour.md §6).

``show`` prints the stored peers by score; ``export`` writes Go's ``trustMetricStore`` JSON
(``{id: {intervals, history}}``) and ``import`` reads it, so a store can move between a
tendermint v0.34 node and ours. Run them while the node is stopped (a running node saves
over an import at its next save).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich import box
from rich.table import Table

from cometp2p.cli.main import cli_errors, home_option, load_home_config, make_console
from cometp2p.config import Config
from cometp2p.errors import ConfigError
from cometp2p.trust.reactor import metric_config
from cometp2p.trust.store import TrustMetricStore

__all__ = ["COMMANDS", "trust_group"]

_LOCK_TIMEOUT_S = 0.5


def _open(config: Config, *, must_exist: bool) -> TrustMetricStore:
    path = config.trust_db_path
    if must_exist and not path.exists():
        raise ConfigError(f"no trust store at {path} (it is created when the node starts)")
    return TrustMetricStore(path, metric_config(config.trust), lock_timeout_s=_LOCK_TIMEOUT_S)


@click.group("trust")
def trust_group() -> None:
    """The per-peer trust metrics kept in <home>/data (see [trust] in config.toml)."""


@trust_group.command("show")
@home_option
def show_command(home: str | None) -> None:
    """Print the stored peers, highest trust score first.

    score: 0..100, what the node's decisions use: 100 x the lower of Go's trust value and
    the history value (a peer earns nothing for silence); H: the faded-memory history
    value, 0..1; intervals: intervals tracked.
    """
    console = make_console()
    with cli_errors():
        config = load_home_config(home)
        store = _open(config, must_exist=True)
        try:
            updated = store.updated_at()
            bans = store.bans()
            rows = sorted(store.items(), key=lambda kv: (-kv[1].judged_score(), kv[0]))
        finally:
            store.close(save=False)
    table = Table(
        title=f"trust metrics — {config.trust_db_path} — {len(rows)} peers",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("peer ID", no_wrap=True, min_width=40)
    table.add_column("score", justify="right", no_wrap=True, min_width=5)
    table.add_column("H", justify="right", no_wrap=True, min_width=6)
    table.add_column("intervals", justify="right", no_wrap=True, min_width=9)
    table.add_column("saved UTC", no_wrap=True, min_width=11)
    low = config.trust.min_score
    for node_id, metric in rows:
        score = metric.judged_score()
        stamp = updated.get(node_id)
        table.add_row(
            node_id,
            f"[red]{score}[/red]" if score < low else str(score),
            f"{metric.history_value:.4f}",
            str(metric.num_intervals),
            datetime.fromtimestamp(stamp, UTC).strftime("%m-%d %H:%M") if stamp else "-",
        )
    console.print(table)
    now = datetime.now(UTC).timestamp()
    for node_id, until in sorted(bans.items(), key=lambda kv: kv[1]):
        if until > now:
            when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M")
            console.print(f"distrusted until {when} UTC: {node_id}", soft_wrap=True)


@trust_group.command("export")
@home_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file [default: stdout].",
)
def export_command(home: str | None, output: Path | None) -> None:
    """Write the store as Go's trustMetricStore JSON."""
    with cli_errors():
        store = _open(load_home_config(home), must_exist=True)
        try:
            data = store.export_go_json()
        finally:
            store.close(save=False)
        if output is None:
            click.echo(data.decode())
        else:
            output.write_bytes(data + b"\n")


@trust_group.command("import")
@home_option
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(home: str | None, source: Path) -> None:
    """Load Go's trustMetricStore JSON from SOURCE into the store (replacing those peers)."""
    console = make_console()
    with cli_errors():
        config = load_home_config(home)
        store = _open(config, must_exist=False)
        try:
            count = store.import_go_json(source.read_bytes())
        finally:
            store.close(save=False)
    console.print(f"Imported {count} peers into {config.trust_db_path}")


COMMANDS = (trust_group,)
