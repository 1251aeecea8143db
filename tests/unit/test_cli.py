"""The CLI: init, show-node-id, error reporting, command discovery, and parity with cometbft."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cometp2p.cli import main as cli_main
from cometp2p.cli.main import main
from cometp2p.config import Config, load_config, render_config_toml
from cometp2p.crypto.keys import NodeKey, load_node_key, save_node_key

# wire.md §10.1: seed 00 01 .. 1f
KNOWN_KEY_JSON = (
    '{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXG'
    'BkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA=="}}'
)
KNOWN_ID = "56475aa75463474c0285df5dbf2bcab73da65135"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.delenv("COMETP2P_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return CliRunner()


# -- init ------------------------------------------------------------------------------------


def test_init_creates_home(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node"
    result = runner.invoke(main, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    key = load_node_key(home / "config/node_key.json")
    assert key.node_id in result.output
    assert (home / "config/node_key.json").stat().st_mode & 0o777 == 0o600
    assert (home / "data").is_dir()
    assert load_config(home).p2p == Config(home=home).p2p
    doc = tomllib.loads((home / "config/config.toml").read_text())
    assert doc["instrumentation"]["prometheus"] is False
    assert doc["instrumentation"]["prometheus_listen_addr"] == ":26660"


def test_init_is_idempotent_and_keeps_key_and_config(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert runner.invoke(main, ["init", "--home", str(home)]).exit_code == 0
    key_bytes = (home / "config/node_key.json").read_bytes()
    config_path = home / "config/config.toml"
    config_path.write_text(render_config_toml(Config(home=home, moniker="edited")))
    result = runner.invoke(main, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert (home / "config/node_key.json").read_bytes() == key_bytes
    assert load_config(home).moniker == "edited"


def test_init_keeps_existing_key(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node"
    (home / "config").mkdir(parents=True)
    (home / "config/node_key.json").write_text(KNOWN_KEY_JSON)
    result = runner.invoke(main, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert KNOWN_ID in result.output
    assert (home / "config/node_key.json").read_text() == KNOWN_KEY_JSON


def test_init_refuses_to_overwrite_malformed_key(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node"
    (home / "config").mkdir(parents=True)
    (home / "config/node_key.json").write_text("{not json")
    result = runner.invoke(main, ["init", "--home", str(home)])
    assert result.exit_code == 1
    assert "node_key.json" in result.output
    assert (home / "config/node_key.json").read_text() == "{not json"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_init_honours_node_key_file(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node"
    (home / "config").mkdir(parents=True)
    (home / "config/config.toml").write_text('node_key_file = "keys/nk.json"\n')
    assert runner.invoke(main, ["init", "--home", str(home)]).exit_code == 0
    assert (home / "keys/nk.json").exists()
    assert not (home / "config/node_key.json").exists()


def test_home_from_environment(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMETP2P_HOME", str(tmp_path / "env-home"))
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert (tmp_path / "env-home/config/node_key.json").exists()


def test_home_default(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert (tmp_path / "user/.cometp2p/config/node_key.json").exists()


# -- show-node-id ----------------------------------------------------------------------------


def test_show_node_id_exact_output(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/node_key.json").write_text(KNOWN_KEY_JSON)
    for name in ("show-node-id", "show_node_id"):
        result = runner.invoke(main, [name, "--home", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert result.output == KNOWN_ID + "\n"


def test_show_node_id_missing_key(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["show-node-id", "--home", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert "node_key.json" in lines[0]
    assert "Traceback" not in result.output


def test_show_node_id_bad_config(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.toml").write_text('[p2p]\npex = "maybe"\n')
    result = runner.invoke(main, ["show-node-id", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "p2p.pex" in result.output
    assert "'maybe'" in result.output


def test_show_node_id_subprocess(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/node_key.json").write_text(KNOWN_KEY_JSON)
    result = subprocess.run(
        [sys.executable, "-m", "cometp2p", "show-node-id", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == KNOWN_ID + "\n"


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cometp2p", "show-node-id", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


# -- command discovery -----------------------------------------------------------------------


def test_commands_are_discovered_from_cli_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("hello")
    def hello() -> None:
        click.echo("hi")

    fake = types.ModuleType("cometp2p.cli.fake_hello")
    fake.COMMANDS = (hello,)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cometp2p.cli.fake_hello", fake)
    real_iter = pkgutil.iter_modules

    def iter_modules(path: object = None, prefix: str = "") -> list[pkgutil.ModuleInfo]:
        found = list(real_iter(path, prefix))  # type: ignore[arg-type]
        return [*found, pkgutil.ModuleInfo(found[0].module_finder, "fake_hello", False)]

    monkeypatch.setattr(pkgutil, "iter_modules", iter_modules)

    @click.group(cls=cli_main._DiscoveringGroup)
    def group() -> None:
        pass

    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "hi\n"
    assert "hello" in CliRunner().invoke(group, ["--help"]).output


def test_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "init" in result.output
    assert "show-node-id" in result.output
    assert "show_node_id" not in result.output


def test_known_key_via_save(tmp_path: Path, runner: CliRunner) -> None:
    key = NodeKey.from_seed(bytes(range(32)))
    save_node_key(key, tmp_path / "config/node_key.json")
    result = runner.invoke(main, ["show-node-id", "--home", str(tmp_path)])
    assert result.output == KNOWN_ID + "\n"
