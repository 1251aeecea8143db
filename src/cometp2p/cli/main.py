"""The ``cometp2p`` command line: the ``main`` group, ``init`` and ``show-node-id``.

Other commands live in their own modules under ``cometp2p/cli/`` and are found by
convention, so adding one never touches this file: a module ``cometp2p/cli/<name>.py``
that defines ``COMMANDS: tuple[click.Command, ...]`` has those commands added to ``main``.
Running command ``<name>`` imports only module ``<name>`` when one exists (a command
named otherwise is found by importing every module, as listing the commands does).
Modules whose names start with ``_`` are skipped. Command modules may import
:func:`home_option`, :func:`cli_errors`, :func:`load_home_config` and
:func:`make_console` from here.

Home directory: ``--home``, else ``$COMETP2P_HOME``, else ``~/.cometp2p`` (wire.md §10 for
the file layout; cometbft's ``$CMTHOME`` is deliberately not read).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import click

from cometp2p import __version__
from cometp2p.config import CONFIG_FILE, Config, load_config, resolve_home, write_config
from cometp2p.crypto.keys import load_node_key, load_or_generate_node_key
from cometp2p.errors import CometP2PError, ConfigError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "cli_errors",
    "home_option",
    "load_home_config",
    "main",
    "make_console",
    "require_home",
]

_F = TypeVar("_F", bound=Callable[..., object])

_DIR_MODE: Final = 0o700  # CometBFT creates its home, config/ and data/ with 0700


_HOME_META: Final = "cometp2p.home"


def _home_from_group(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # `cometp2p --home X start` (cometbft's global flag) as well as `cometp2p start --home X`.
    if value is not None:
        return value
    home = ctx.find_root().meta.get(_HOME_META)
    return home if isinstance(home, str) else None


def home_option(func: _F) -> _F:
    """The shared ``--home DIR`` option; the value is passed on as ``home: str | None``.

    Also takes the group's ``cometp2p --home DIR <command>`` when the command has none.
    """
    return click.option(
        "--home",
        "home",
        type=click.Path(file_okay=False, dir_okay=True, path_type=str),
        default=None,
        callback=_home_from_group,
        help="Home directory [default: $COMETP2P_HOME, else ~/.cometp2p].",
    )(func)


def require_home(home: str | None) -> Path:
    """The resolved home, which must hold ``config/config.toml`` (``cometp2p init`` or
    ``cometbft init`` made it): a mistyped ``--home`` must not run a fresh node.

    Raises:
        ConfigError: the home or its config file does not exist.
    """
    root = resolve_home(home)
    if not (root / CONFIG_FILE).is_file():
        what = "does not exist" if not root.exists() else f"has no {CONFIG_FILE}"
        raise ConfigError(
            f"home {root} {what}: create it with `cometp2p init --home {root}` "
            "(or `cometbft init`), or pass the right --home"
        )
    return root


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn cometp2p and OS errors into a one-line ``click.ClickException`` (exit status 1)."""
    try:
        yield
    except (CometP2PError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the error text held
        raise click.ClickException(message) from exc


def load_home_config(home: str | None, *, required: bool = False) -> Config:
    """Resolve the home directory and load its ``config/config.toml`` (defaults if absent).

    Args:
        home: ``--home`` (``None``: ``$COMETP2P_HOME``, else ``~/.cometp2p``).
        required: the home must exist (see :func:`require_home`).

    Raises:
        ConfigError: if the file exists but is invalid, or ``required`` and it is missing.
    """
    return load_config(require_home(home) if required else resolve_home(home))


def make_console() -> Console:
    """A rich console on stdout for human-oriented command output."""
    from rich.console import Console  # imported on use: `start` never needs rich

    return Console(highlight=False)


class _DiscoveringGroup(click.Group):
    """A click group that adds the ``COMMANDS`` of the ``cometp2p.cli`` modules on demand.

    Running one command imports only the module named after it (``crawl`` ->
    ``cometp2p.cli.crawl``), so ``cometp2p start`` never pays for the plotting libraries
    that ``crawl`` needs. ``cometp2p --help`` imports none of them: it lists the
    ``@click.command("name")`` / ``@click.group("name")`` functions each module declares
    at its top level, read from the source (name, ``hidden=``, docstring). A module whose
    commands are declared otherwise is imported for the listing.
    """

    _discovered: bool = False

    def _declared(self, module_name: str) -> list[tuple[str, str]] | None:
        """``(name, help)`` of the visible top-level commands declared in a module's
        source, or ``None`` when it cannot be read that way."""
        try:
            spec = importlib.util.find_spec(f"cometp2p.cli.{module_name}")
        except (ImportError, ValueError):  # e.g. a module object without a spec
            return None
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return None
        try:
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return None
        found: list[tuple[str, str]] = []
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                if not (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Attribute)
                    and isinstance(deco.func.value, ast.Name)
                    and deco.func.value.id == "click"
                    and deco.func.attr in ("command", "group")
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                    and isinstance(deco.args[0].value, str)
                ):
                    continue
                hidden = any(
                    k.arg == "hidden" and isinstance(k.value, ast.Constant) and k.value.value
                    for k in deco.keywords
                )
                if not hidden:
                    found.append((deco.args[0].value, ast.get_docstring(node) or ""))
        return found or None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed: dict[str, click.Command] = {}
        for name in self._module_names():
            declared = self._declared(name)
            if declared is None:
                self._load(name)
                continue
            for command_name, doc in declared:  # a stand-in: click renders its help alike
                listed[command_name] = click.Command(command_name, help=doc)
        listed.update((n, c) for n, c in self.commands.items() if not c.hidden)
        limit = formatter.width - 6 - max((len(n) for n in listed), default=0)
        rows = {name: command.get_short_help_str(limit) for name, command in listed.items()}
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows.items()))

    def _load(self, module_name: str) -> None:
        module = importlib.import_module(f"cometp2p.cli.{module_name}")
        for command in getattr(module, "COMMANDS", ()):
            if command.name not in self.commands:
                self.add_command(command)

    def _module_names(self) -> list[str]:
        package = importlib.import_module("cometp2p.cli")
        names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
        return [n for n in names if n not in ("main", "__main__") and not n.startswith("_")]

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for name in self._module_names():
            self._load(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._discover()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            module_name = cmd_name.replace("-", "_")
            if module_name in self._module_names():
                self._load(module_name)
        if cmd_name not in self.commands:
            self._discover()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_DiscoveringGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cometp2p")
@click.option(
    "--home",
    "home",
    type=click.Path(file_okay=False, dir_okay=True, path_type=str),
    default=None,
    help="Home directory for every command, as cometbft's global --home.",
)
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """cometp2p: the CometBFT peer-to-peer stack in Python."""
    ctx.meta[_HOME_META] = home


@main.command("init")
@home_option
def init_command(home: str | None) -> None:
    """Create the home directory: config/config.toml, config/node_key.json and data/.

    Existing files are kept: a node key is never overwritten, and an existing
    config.toml is only read (it must be valid).
    """
    console = make_console()
    with cli_errors():
        root = resolve_home(home)
        for directory in (root, root / "config", root / "data"):
            directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        config_path = root / CONFIG_FILE
        if config_path.exists():
            cfg = load_config(root)
            console.print(f"Found config file    {config_path}")
        else:
            cfg = Config(home=root)
            write_config(cfg)
            console.print(f"Wrote config file    {config_path}")
        key_path = cfg.node_key_path
        existed = key_path.exists()
        key = load_or_generate_node_key(key_path)
        verb = "Found node key      " if existed else "Generated node key  "
        console.print(f"{verb} {key_path}")
        console.print(f"Node ID              {key.node_id}")
        if cfg.p2p.addr_book_strict or not cfg.p2p.allow_duplicate_ip:
            console.print(
                "Several nodes on one machine (127.0.0.1)? Set, in \\[p2p] of config.toml, "
                "addr_book_strict = false and allow_duplicate_ip = true: the defaults "
                "refuse loopback addresses and a second connection from one IP.",
                soft_wrap=True,
            )


@main.command("show-node-id")
@home_option
def show_node_id_command(home: str | None) -> None:
    """Print this node's ID (40 lowercase hex characters), as `cometbft show-node-id` does."""
    with cli_errors():
        cfg = load_home_config(home)
        key = load_node_key(cfg.node_key_path)
    click.echo(key.node_id)


# cometbft also accepts ``show_node_id``; keep the alias out of --help.
main.add_command(
    click.Command(
        "show_node_id",
        callback=show_node_id_command.callback,
        params=show_node_id_command.params,
        help=show_node_id_command.help,
        hidden=True,
    )
)
