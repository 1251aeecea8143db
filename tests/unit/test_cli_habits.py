"""CometBFT's command-line habits (issue 10): flag spellings and values, --log_level syntax,
the global --home, a missing home, and config.toml warnings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cometp2p.cli.main import main
from cometp2p.cli.start import apply_flags, parse_log_level, start_command
from cometp2p.config import Config, load_config, write_config
from cometp2p.errors import ConfigError


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.delenv("COMETP2P_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return CliRunner()


def _params(*args: str) -> dict[str, Any]:
    return start_command.make_context("start", list(args)).params


# -- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pex"),
    [
        ((), None),
        (("--p2p.pex=false",), False),
        (("--p2p.pex=true",), True),
        (("--p2p.pex",), True),
        (("--p2p.pex", "false"), False),
    ],
)
def test_pex_takes_cometbft_boolean_forms(args: tuple[str, ...], pex: bool | None) -> None:
    assert _params(*args)["pex"] is pex


@pytest.mark.parametrize(
    ("args", "seed_mode"),
    [
        (("--p2p.seed_mode",), True),
        (("--p2p.seed_mode=true",), True),
        (("--p2p.seed_mode=false",), False),
        (("--p2p.seed-mode",), True),
        (("--p2p.seed_mode", "true"), True),
    ],
)
def test_seed_mode_may_be_bare(args: tuple[str, ...], seed_mode: bool) -> None:
    assert _params(*args)["seed_mode"] is seed_mode


def test_a_boolean_flag_refuses_a_non_boolean() -> None:
    with pytest.raises(click.BadParameter):
        _params("--p2p.pex=maybe")


@pytest.mark.parametrize(
    ("flag", "dest"),
    [
        ("--p2p.external-address", "external_address"),
        ("--p2p.external_address", "external_address"),
        ("--p2p.persistent_peers", "persistent_peers"),
        ("--p2p.persistent-peers", "persistent_peers"),
        ("--p2p.unconditional_peer_ids", "unconditional_peer_ids"),
        ("--p2p.unconditional-peer-ids", "unconditional_peer_ids"),
        ("--p2p.private_peer_ids", "private_peer_ids"),
        ("--p2p.private-peer-ids", "private_peer_ids"),
        ("--log_level", "log_level"),
        ("--log-level", "log_level"),
    ],
)
def test_both_spellings_of_each_flag(flag: str, dest: str) -> None:
    assert _params(flag, "x")[dest] == "x"


def test_the_new_flags_reach_the_config(tmp_path: Path) -> None:
    a, b = "aa" * 20, "bb" * 20
    config = apply_flags(
        Config(home=tmp_path),
        external_address="203.0.113.7:26656",
        unconditional_peer_ids=f"{a}, {b}",
        private_peer_ids=a,
        pex=False,
    )
    assert config.p2p.external_address == "203.0.113.7:26656"
    assert config.p2p.unconditional_peer_ids == (a, b)
    assert config.p2p.private_peer_ids == (a,)
    assert config.p2p.pex is False


# -- --log_level -----------------------------------------------------------------------------


def test_log_level_plain() -> None:
    assert parse_log_level("info") == {"": logging.INFO}
    assert parse_log_level("none")[""] > logging.CRITICAL


def test_log_level_modules_as_cometbft_writes_them() -> None:
    levels = parse_log_level("p2p:debug,*:error")
    assert levels[""] == logging.ERROR
    assert levels["cometp2p.switch"] == logging.DEBUG
    assert levels["cometp2p.aio"] == logging.DEBUG
    assert "cometp2p.pex" not in levels  # pex is its own module, as in cometbft
    assert parse_log_level("pex:info,*:none")["cometp2p.pex"] == logging.INFO


@pytest.mark.parametrize("text", ["trace", "p2p:loud", "p2p", "p2p:debug,oops", ":debug", ""])
def test_log_level_refuses_what_cometbft_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_log_level(text)


# -- homes -----------------------------------------------------------------------------------


def test_global_home_before_the_command(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert runner.invoke(main, ["--home", str(home), "init"]).exit_code == 0
    assert (home / "config" / "node_key.json").exists()
    shown = runner.invoke(main, ["--home", str(home), "show-node-id"])
    direct = runner.invoke(main, ["show-node-id", "--home", str(home)])
    assert shown.exit_code == 0
    assert shown.output == direct.output


@pytest.mark.parametrize("global_home", [False, True])
def test_start_on_a_missing_home_points_at_init(
    runner: CliRunner, tmp_path: Path, global_home: bool
) -> None:
    missing = tmp_path / "mistyped"
    args = ["--home", str(missing), "start"] if global_home else ["start", "--home", str(missing)]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert f"cometp2p init --home {missing}" in result.output
    assert not missing.exists()  # no fresh node key was made


def test_start_on_a_home_without_config_points_at_init(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["start", "--home", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "has no config/config.toml" in result.output
    assert "cometp2p init" in result.output


def test_crawl_on_a_missing_home_fails(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        main, ["crawl", f"{'ab' * 20}@127.0.0.1:1", "--home", str(tmp_path / "x")]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_init_says_what_a_loopback_network_needs(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["init", "--home", str(tmp_path / "n")])
    assert result.exit_code == 0
    assert "addr_book_strict = false" in result.output
    assert "allow_duplicate_ip = true" in result.output
    assert "[p2p]" in result.output


# -- config.toml -----------------------------------------------------------------------------


def _write(home: Path, text: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(text)


def test_unknown_keys_are_named_in_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(
        tmp_path,
        'monikr = "typo"\n[p2p]\nladdr = "tcp://127.0.0.1:1"\nseed = "x"\n'
        "[instrumentation]\nprometheus_port = 1\n[mempool]\nsize = 5000\n[trust]\nenabld = true\n",
    )
    with caplog.at_level(logging.WARNING, logger="cometp2p.config"):
        config = load_config(tmp_path)
    assert config.p2p.laddr == "tcp://127.0.0.1:1"
    warned = " ".join(r.getMessage() for r in caplog.records)
    for key in ("'monikr'", "'p2p.seed'", "'instrumentation.prometheus_port'", "'trust.enabld'"):
        assert key in warned
    assert "mempool" not in warned  # CometBFT's other sections are not ours to judge
    assert len(caplog.records) == 4


def test_an_empty_config_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "")
    with caplog.at_level(logging.WARNING, logger="cometp2p.config"):
        load_config(tmp_path)
    assert any("is empty" in r.getMessage() for r in caplog.records)


def test_our_own_config_file_loads_without_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_config(Config(home=tmp_path))
    with caplog.at_level(logging.WARNING, logger="cometp2p.config"):
        load_config(tmp_path)
    assert caplog.records == []


def test_a_bad_value_is_quoted_once(tmp_path: Path) -> None:
    _write(tmp_path, '[p2p]\ndial_timeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).count("'soon'") == 1
    assert "p2p.dial_timeout" in str(info.value)
