"""A light install (issue 10): few runtime dependencies, network.png in an optional extra,
fast help, and a node process that imports only what it uses."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cometp2p.cli.main import main
from cometp2p.crawler import report
from integration.test_crawler import CHAIN, converged_network

ROOT = Path(__file__).resolve().parents[2]
PLOTTING = {"matplotlib", "networkx", "numpy"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_runtime_dependencies_are_at_most_six_and_the_picture_is_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    assert len(runtime) <= 6, runtime
    assert not runtime & PLOTTING
    extras = project["optional-dependencies"]
    assert _names(extras["plot"]) == PLOTTING
    assert "cometp2p[plot]" in extras["dev"]  # `make localnet` installs .[dev]


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_a_node_process_imports_neither_rich_nor_the_plotting_libraries() -> None:
    modules = _modules_after("import cometp2p.cli.start, cometp2p.pex.reactor, cometp2p.node")
    top = {m.split(".")[0] for m in modules}
    assert not top & (PLOTTING | {"rich", "tomli_w"})
    assert "cometp2p.crawler" not in modules


def test_listing_the_commands_imports_no_crawler_and_no_plotting() -> None:
    code = (
        "from click.testing import CliRunner\nfrom cometp2p.cli.main import main\n"
        "r = CliRunner().invoke(main, ['--help'])\nassert 'localnet' in r.output, r.output"
    )
    modules = _modules_after(code)
    assert not {m.split(".")[0] for m in modules} & PLOTTING
    assert "cometp2p.crawler.crawler" not in modules
    # The listing reads the command modules' source; it imports none of them.
    assert not {m for m in modules if m.startswith("cometp2p.cli.")} - {"cometp2p.cli.main"}


def test_start_help_does_not_load_the_node() -> None:
    code = (
        "from click.testing import CliRunner\nfrom cometp2p.cli.main import main\n"
        "r = CliRunner().invoke(main, ['start', '--help'])\nassert '--p2p.pex' in r.output"
    )
    modules = _modules_after(code)
    assert "cometp2p.node" not in modules
    assert "cometp2p.switch.switch" not in modules


def test_the_listing_from_source_matches_the_imported_commands() -> None:
    listed = CliRunner().invoke(main, ["--help"]).output.split("Commands:\n", 1)[1]
    rows = {line.split()[0]: line.split(None, 1)[1] for line in listed.splitlines() if line}
    ctx = click.Context(main)
    names = main.list_commands(ctx)  # imports every command module
    visible = {}
    for name in names:
        command = main.get_command(ctx, name)
        assert command is not None
        if not command.hidden:
            visible[name] = command.get_short_help_str(1000)
    assert set(rows) == set(visible)
    for name, short in rows.items():
        assert visible[name].startswith(short.removesuffix("..."))


async def test_crawl_without_the_plot_extra_writes_the_rest_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "plot_available", lambda: False)
    out = tmp_path / "out"
    async with converged_network(3) as (seed, _nodes):
        args = ["crawl", str(seed.address), "--out", str(out), "--network", CHAIN]
        args += ["--timeout", "2", "--allow-net", "127.0.0.0/8"]
        async with asyncio.timeout(60):
            result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    assert "network.png skipped" in result.output
    assert "cometp2p[plot]" in result.output
    assert (out / "network.json").exists()
    assert not (out / "network.png").exists()


@pytest.mark.slow
def test_localnet_without_the_plot_extra_converges_and_says_so(tmp_path: Path) -> None:
    # sys.modules[name] = None makes the import system report the package as absent.
    code = (
        "import sys\nsys.modules['matplotlib'] = None\n"
        "from cometp2p.cli.main import main\n"
        f"main(['localnet', '--nodes', '3', '--out', {str(tmp_path / 'net')!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    notes = [line for line in result.stdout.splitlines() if "network.png skipped" in line]
    assert len(notes) == 1
    assert "cometp2p[plot]" in notes[0]
    assert (tmp_path / "net" / "network.json").exists()
    assert not (tmp_path / "net" / "network.png").exists()
