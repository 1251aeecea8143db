"""config.toml and the CLI against the real cometbft v0.38.25 binary (wire.md §10, §12.2).

A home written by us must load in cometbft (``show-node-id`` decodes and validates the
whole config.toml), and a home made by ``cometbft init`` must load here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cometp2p.cli.main import main
from cometp2p.config import (
    CONFIG_FILE,
    Config,
    FuzzConnConfig,
    InstrumentationConfig,
    P2PConfig,
    load_chain_id,
    load_config,
    render_config_toml,
    write_config,
)
from cometp2p.crypto.keys import NodeKey, save_node_key
from cometp2p.errors import ConfigError

pytestmark = pytest.mark.interop


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # $CMTHOME / $TMHOME would take precedence over --home in cometbft.
    env = {k: v for k, v in os.environ.items() if k not in ("CMTHOME", "TMHOME")}
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )


def rich_config(home: Path) -> Config:
    """Non-default values in every kind of field, hidden test_* keys included."""
    return Config(
        home=home,
        moniker="node-0",
        rpc_laddr="tcp://127.0.0.1:36657",
        tx_index_indexer="null",
        p2p=P2PConfig(
            laddr="tcp://127.0.0.1:36656",
            external_address="127.0.0.1:36656",
            seeds=("56475aa75463474c0285df5dbf2bcab73da65135@127.0.0.2:26656",),
            persistent_peers=(
                "56475aa75463474c0285df5dbf2bcab73da65135@127.0.0.3:26656",
                "117c95c4fd7e636c38d303493302d2c271a39669@127.0.0.4:26656",
            ),
            addr_book_strict=False,
            allow_duplicate_ip=True,
            flush_throttle_timeout_s=0.01,
            persistent_peers_max_dial_period_s=90.0,
            test_dial_fail=True,
            test_fuzz_config=FuzzConnConfig(mode=1, max_delay_s=0.5, prob_sleep=0.1),
        ),
        instrumentation=InstrumentationConfig(prometheus=True, namespace="cometp2p"),
    )


def test_cometbft_loads_config_we_wrote(cometbft_binary: Path, tmp_path: Path) -> None:
    cfg = rich_config(tmp_path)
    write_config(cfg)
    key = NodeKey.generate()
    save_node_key(key, cfg.node_key_path)
    result = run(cometbft_binary, "show-node-id", "--home", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{key.node_id}\n"


def test_cometbft_rejects_what_we_reject(cometbft_binary: Path, tmp_path: Path) -> None:
    # Guards the test above: show-node-id really does decode and validate config.toml.
    cfg = Config(home=tmp_path)
    text = render_config_toml(cfg).replace(
        'flush_throttle_timeout = "100ms"', 'flush_throttle_timeout = "abc"'
    )
    (tmp_path / CONFIG_FILE).parent.mkdir(parents=True)
    (tmp_path / CONFIG_FILE).write_text(text)
    save_node_key(NodeKey.generate(), cfg.node_key_path)
    result = run(cometbft_binary, "show-node-id", "--home", str(tmp_path))
    assert result.returncode != 0
    assert "flush_throttle_timeout" in result.stderr
    with pytest.raises(ConfigError, match="flush_throttle_timeout"):
        load_config(tmp_path)


def test_we_load_home_made_by_cometbft_init(cometbft_binary: Path, tmp_path: Path) -> None:
    assert run(cometbft_binary, "init", "--home", str(tmp_path)).returncode == 0
    cfg = load_config(tmp_path)
    assert cfg.p2p == P2PConfig()
    assert cfg.instrumentation == InstrumentationConfig()
    assert cfg.rpc_laddr == "tcp://127.0.0.1:26657"
    assert cfg.tx_index_indexer == "kv"
    chain_id = load_chain_id(tmp_path)
    assert chain_id is not None
    assert chain_id.startswith("test-chain-")


def test_show_node_id_parity_on_home_made_by_init(cometbft_binary: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    home = tmp_path / "ours"
    assert runner.invoke(main, ["init", "--home", str(home)]).exit_code == 0
    ours = runner.invoke(main, ["show-node-id", "--home", str(home)]).output
    theirs = run(cometbft_binary, "show-node-id", "--home", str(home))
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stderr == ""
    assert theirs.stdout == ours


def test_show_node_id_parity_on_home_made_by_cometbft(
    cometbft_binary: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert run(cometbft_binary, "init", "--home", str(tmp_path)).returncode == 0
    theirs = run(cometbft_binary, "show-node-id", "--home", str(tmp_path)).stdout
    assert len(theirs) == 41
    assert runner.invoke(main, ["show-node-id", "--home", str(tmp_path)]).output == theirs
    # our init on that home keeps cometbft's key and config untouched
    before = (tmp_path / CONFIG_FILE).read_bytes()
    assert runner.invoke(main, ["init", "--home", str(tmp_path)]).exit_code == 0
    assert (tmp_path / CONFIG_FILE).read_bytes() == before
    assert runner.invoke(main, ["show-node-id", "--home", str(tmp_path)]).output == theirs
