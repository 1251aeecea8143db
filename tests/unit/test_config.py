"""config.toml: defaults, Go durations, loading, rendering, home resolution, genesis chain ID."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometp2p.config import (  # the pure half of load_config
    CONFIG_FILE,
    PEX_STRATEGIES,
    Config,
    FuzzConnConfig,
    InstrumentationConfig,
    P2PConfig,
    _lower_keys,
    _parse_config,
    format_go_duration,
    load_chain_id,
    load_config,
    parse_go_duration,
    render_config_toml,
    resolve_home,
    write_config,
)
from cometp2p.errors import ConfigError


def write_toml(home: Path, text: str) -> None:
    path = home / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# -- defaults (wire.md §12.2, behaviour.md §10) ------------------------------------------


def test_p2p_defaults_match_cometbft_v038() -> None:
    # The whole [p2p] section as rendered, against the table in wire.md §12.2.
    p2p = tomllib.loads(render_config_toml(Config(home=Path("/h"))))["p2p"]
    assert p2p == {
        "laddr": "tcp://0.0.0.0:26656",
        "external_address": "",
        "seeds": "",
        "persistent_peers": "",
        "addr_book_file": "config/addrbook.json",
        "addr_book_strict": True,
        "max_num_inbound_peers": 40,
        "max_num_outbound_peers": 10,
        "unconditional_peer_ids": "",
        "persistent_peers_max_dial_period": "0s",
        "flush_throttle_timeout": "100ms",
        "max_packet_msg_payload_size": 1024,
        "send_rate": 5120000,
        "recv_rate": 5120000,
        "pex": True,
        "seed_mode": False,
        "private_peer_ids": "",
        "allow_duplicate_ip": False,
        "handshake_timeout": "20s",
        "dial_timeout": "3s",
    }


def test_python_side_defaults() -> None:
    p2p = P2PConfig()
    assert p2p.flush_throttle_timeout_s == 0.1
    assert p2p.handshake_timeout_s == 20.0
    assert p2p.dial_timeout_s == 3.0
    assert p2p.persistent_peers_max_dial_period_s == 0.0
    assert p2p.test_fuzz_config == FuzzConnConfig(0, 3.0, 0.2, 0.0, 0.0)
    assert InstrumentationConfig() == InstrumentationConfig(False, ":26660", 3, "cometbft")
    instrumentation = tomllib.loads(render_config_toml(Config(home=Path("/h"))))["instrumentation"]
    assert instrumentation["prometheus"] is False
    assert instrumentation["prometheus_listen_addr"] == ":26660"


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.p2p == P2PConfig()
    assert cfg.home == tmp_path
    assert cfg.moniker  # the host name, or "anonymous"


def test_paths_are_home_relative(tmp_path: Path) -> None:
    cfg = Config(home=tmp_path, node_key_file="/abs/key.json")
    assert cfg.node_key_path == Path("/abs/key.json")
    assert cfg.addr_book_path == tmp_path / "config/addrbook.json"
    assert cfg.genesis_path == tmp_path / "config/genesis.json"
    assert cfg.config_path == tmp_path / "config/config.toml"
    assert cfg.data_dir == tmp_path / "data"


@pytest.mark.parametrize(
    "field",
    [
        "max_num_inbound_peers",
        "max_num_outbound_peers",
        "flush_throttle_timeout_s",
        "persistent_peers_max_dial_period_s",
        "max_packet_msg_payload_bytes",
        "send_rate_bytes_per_s",
        "recv_rate_bytes_per_s",
    ],
)
def test_negative_values_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        P2PConfig(**cast("dict[str, Any]", {field: -1}))


# -- Go durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("100ms", 0.1),
        ("10ms", 0.01),
        ("3s", 3.0),
        ("1m0s", 60.0),
        ("1h0m0s", 3600.0),
        ("1h2m3.5s", 3723.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("-3s", -3.0),
        ("+2ms", 0.002),
        ("1ns", 1e-9),
        ("10us", 1e-5),
        ("10\u00b5s", 1e-5),
        ("10\u03bcs", 1e-5),
        ("1.0000000009s", 1.0),  # sub-nanosecond digits are truncated
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "1", "s", ".s", "1.2.3s", "--1s", "1 s", "1S", "1d", "3s ", "100000000000h"]
)
def test_parse_go_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.1, "100ms"),
        (0.01, "10ms"),
        (0.0015, "1.5ms"),
        (1e-5, "10\u00b5s"),
        (1.5e-6, "1.5\u00b5s"),
        (1e-9, "1ns"),
        (3.0, "3s"),
        (20.0, "20s"),
        (1.5, "1.5s"),
        (60.0, "1m0s"),
        (90.0, "1m30s"),
        (3600.0, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
        (28 * 3600.0, "28h0m0s"),
        (-3.0, "-3s"),
    ],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_duration_round_trip_ns(ns: int) -> None:
    text = format_go_duration(ns / 1e9)
    assert round(parse_go_duration(text) * 1e9) == ns


# -- loading -------------------------------------------------------------------------------

FOREIGN_CONFIG = """
version = "0.38.25"
proxy_app = "tcp://127.0.0.1:26658"
moniker = "alice"
db_backend = "goleveldb"

[rpc]
laddr = "tcp://127.0.0.1:36657"
cors_allowed_origins = []

[p2p]
laddr = "tcp://127.0.0.1:36656"
seeds = " aa@1.2.3.4:1 , ,bb@host:2,"
addr_book_strict = false
flush_throttle_timeout = "10ms"
persistent_peers_max_dial_period = "1m30s"
max_num_inbound_peers = 7
some_future_key = "ignored"

[mempool]
type = "flood"

[tx_index]
indexer = "null"

[instrumentation]
prometheus = true
namespace = "x"
"""


def test_load_ignores_unknown_and_reads_known(tmp_path: Path) -> None:
    write_toml(tmp_path, FOREIGN_CONFIG)
    cfg = load_config(tmp_path)
    assert cfg.moniker == "alice"
    assert cfg.rpc_laddr == "tcp://127.0.0.1:36657"
    assert cfg.tx_index_indexer == "null"
    assert cfg.p2p.laddr == "tcp://127.0.0.1:36656"
    assert cfg.p2p.seeds == ("aa@1.2.3.4:1", "bb@host:2")
    assert cfg.p2p.addr_book_strict is False
    assert cfg.p2p.flush_throttle_timeout_s == 0.01
    assert cfg.p2p.persistent_peers_max_dial_period_s == 90.0
    assert cfg.p2p.max_num_inbound_peers == 7
    assert cfg.p2p.max_num_outbound_peers == 10  # absent: default
    assert cfg.instrumentation.prometheus is True
    assert cfg.instrumentation.namespace == "x"
    assert cfg.instrumentation.prometheus_listen_addr == ":26660"


def test_load_keys_case_insensitively(tmp_path: Path) -> None:
    write_toml(tmp_path, '[P2P]\nPEX = false\n[p2p.test_fuzz_config]\nMaxDelay = "1s"\n')
    cfg = load_config(tmp_path)
    assert cfg.p2p.pex is False
    assert cfg.p2p.test_fuzz_config.max_delay_s == 1.0


def test_load_integer_duration_is_nanoseconds(tmp_path: Path) -> None:
    write_toml(tmp_path, "[p2p]\nflush_throttle_timeout = 5000000\n")
    assert load_config(tmp_path).p2p.flush_throttle_timeout_s == 0.005


@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        ('[p2p]\npex = "yes"', "p2p.pex", "'yes'"),
        ("[p2p]\nmax_num_inbound_peers = true", "p2p.max_num_inbound_peers", "True"),
        ("[p2p]\nmax_num_inbound_peers = 1.5", "p2p.max_num_inbound_peers", "1.5"),
        ('[p2p]\nflush_throttle_timeout = "abc"', "p2p.flush_throttle_timeout", "'abc'"),
        ("[p2p]\nseeds = 3", "p2p.seeds", "3"),
        ("[p2p]\nmax_num_inbound_peers = -1", "p2p.max_num_inbound_peers", "-1"),
        ('[p2p]\nsend_rate = "fast"', "p2p.send_rate", "'fast'"),
        ('[p2p.test_fuzz_config]\nprobsleep = "x"', "p2p.test_fuzz_config.probsleep", "'x'"),
        ('[instrumentation]\nprometheus = "no"', "instrumentation.prometheus", "'no'"),
        ("[rpc]\nladdr = 1", "rpc.laddr", "1"),
        ("moniker = 5", "moniker", "5"),
        ("p2p = 1", "p2p", "1"),
    ],
)
def test_bad_values_name_key_and_value(tmp_path: Path, toml: str, key: str, value: str) -> None:
    write_toml(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert key in str(info.value)
    assert value in str(info.value)
    assert str(tmp_path / CONFIG_FILE) in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    write_toml(tmp_path, "[p2p\n")
    with pytest.raises(ConfigError, match="not a valid TOML"):
        load_config(tmp_path)


def test_unreadable_config(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


# -- rendering -----------------------------------------------------------------------------


def test_hidden_keys_only_when_not_default() -> None:
    doc = tomllib.loads(render_config_toml(Config(home=Path("/h"))))
    assert "test_fuzz" not in doc["p2p"]
    assert "test_dial_fail" not in doc["p2p"]
    assert "test_fuzz_config" not in doc["p2p"]
    assert "upnp" not in doc["p2p"]  # a v0.34 key: written only when true
    upnp = tomllib.loads(render_config_toml(Config(home=Path("/h"), p2p=P2PConfig(upnp=True))))
    assert upnp["p2p"]["upnp"] is True
    fuzzy = Config(
        home=Path("/h"),
        p2p=P2PConfig(test_fuzz=True, test_fuzz_config=FuzzConnConfig(mode=1, max_delay_s=0.25)),
    )
    doc = tomllib.loads(render_config_toml(fuzzy))
    assert doc["p2p"]["test_fuzz"] is True
    assert doc["p2p"]["test_fuzz_config"]["maxdelay"] == "250ms"


def sample_config(home: Path) -> Config:
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


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    cfg = sample_config(tmp_path)
    path = write_config(cfg)
    assert path == tmp_path / CONFIG_FILE
    assert load_config(tmp_path) == cfg
    assert path.stat().st_mode & 0o777 == 0o644


durations = st.integers(min_value=0, max_value=10**13).map(lambda ns: ns / 1e9)
id_lists = st.lists(st.from_regex(r"[0-9a-f]{1,8}@[a-z]{1,5}:[0-9]{1,4}", fullmatch=True)).map(
    tuple
)
p2p_configs = st.builds(
    P2PConfig,
    laddr=st.text(),
    external_address=st.text(),
    seeds=id_lists,
    persistent_peers=id_lists,
    unconditional_peer_ids=id_lists,
    private_peer_ids=id_lists,
    addr_book_strict=st.booleans(),
    max_num_inbound_peers=st.integers(0, 2**31),
    max_num_outbound_peers=st.integers(0, 2**31),
    persistent_peers_max_dial_period_s=durations,
    flush_throttle_timeout_s=durations,
    max_packet_msg_payload_bytes=st.integers(0, 2**31),
    send_rate_bytes_per_s=st.integers(0, 2**62),
    recv_rate_bytes_per_s=st.integers(0, 2**62),
    pex=st.booleans(),
    seed_mode=st.booleans(),
    allow_duplicate_ip=st.booleans(),
    handshake_timeout_s=durations,
    dial_timeout_s=durations,
    upnp=st.booleans(),
    test_dial_fail=st.booleans(),
    test_fuzz=st.booleans(),
    pex_strategy=st.sampled_from(PEX_STRATEGIES),
    test_fuzz_config=st.builds(
        FuzzConnConfig,
        mode=st.integers(0, 1),
        max_delay_s=durations,
        prob_drop_rw=st.floats(0, 1),
        prob_drop_conn=st.floats(0, 1),
        prob_sleep=st.floats(0, 1),
    ),
)


@settings(max_examples=50)  # each example builds a large config; 50 cover the field kinds
@given(p2p_configs, st.text(min_size=1))
def test_render_parse_round_trip(p2p: P2PConfig, moniker: str) -> None:
    cfg = Config(home=Path("/h"), moniker=moniker, p2p=p2p)
    text = render_config_toml(cfg)
    doc = tomllib.loads(text)
    assert _parse_config(Path("/h"), _lower_keys(doc)) == cfg


# -- home and genesis ----------------------------------------------------------------------


def test_resolve_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMETP2P_HOME", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert resolve_home(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_home("~/x") == tmp_path / "user/x"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("COMETP2P_HOME")
    assert resolve_home(None) == tmp_path / "user/.cometp2p"
    monkeypatch.setenv("COMETP2P_HOME", "")
    assert resolve_home(None) == tmp_path / "user/.cometp2p"


def test_load_chain_id(tmp_path: Path) -> None:
    genesis = tmp_path / "config/genesis.json"
    assert load_chain_id(tmp_path) is None
    genesis.parent.mkdir(parents=True)
    genesis.write_text('{"chain_id": "test-chain-Ab12Cd", "initial_height": "1"}')
    assert load_chain_id(tmp_path) == "test-chain-Ab12Cd"
    genesis.write_text('{"genesis_time": "x"}')
    assert load_chain_id(tmp_path) is None
    genesis.write_text('{"chain_id": 5}')
    with pytest.raises(ConfigError, match="chain_id"):
        load_chain_id(tmp_path)
    genesis.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_chain_id(tmp_path)
    other = tmp_path / "g.json"
    other.write_text('{"chain_id": "other"}')
    assert load_chain_id(tmp_path, "g.json") == "other"
