"""Settings we parse but do not act on are reported at start (issue #12)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from cometp2p.config import Config, FuzzConnConfig, InstrumentationConfig, P2PConfig
from cometp2p.unsupported import log_unsupported_settings, unsupported_settings


def test_a_default_config_reports_nothing(tmp_path: Path) -> None:
    assert unsupported_settings(Config(home=tmp_path)) == []
    fuzzing = P2PConfig(test_fuzz=True, test_fuzz_config=FuzzConnConfig(mode=1))
    assert unsupported_settings(Config(home=tmp_path, p2p=fuzzing)) == []


def test_each_unsupported_setting_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = Config(
        home=tmp_path,
        filter_peers=True,
        rpc_laddr="tcp://0.0.0.0:26657",
        tx_index_indexer="null",
        p2p=P2PConfig(
            test_dial_fail=True,
            test_fuzz_config=FuzzConnConfig(prob_sleep=0.5),
            test_fuzz_inbound=True,
        ),
        instrumentation=InstrumentationConfig(max_open_connections=0),
    )
    with caplog.at_level(logging.WARNING, logger="cometp2p.unsupported"):
        found = log_unsupported_settings(cfg)
    assert len(found) == 6
    for key in (
        "filter_peers",
        "[rpc] laddr",
        "[tx_index] indexer",
        "test_dial_fail",
        "[p2p.test_fuzz_config], p2p.test_fuzz_inbound set but p2p.test_fuzz = false",
        "max_open_connections",
    ):
        assert any(key in line for line in found), key
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == found
    # With test_fuzz on, the fuzz keys take effect and are not reported.
    on = dataclasses.replace(cfg, p2p=dataclasses.replace(cfg.p2p, test_fuzz=True))
    assert len(unsupported_settings(on)) == 5
