"""FuzzCore: the fuzzed connection's decisions (behaviour.md §8), with the delay quirk fixed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.config import FuzzConnConfig
from cometp2p.errors import ConfigError
from cometp2p.sansio.fuzz import FuzzAction, FuzzCore, FuzzDecision, FuzzMode

probability = st.floats(min_value=0.0, max_value=1.0)


def decisions(core: FuzzCore, n: int, now: float = 100.0) -> list[FuzzDecision]:
    return [core.decide(now) for _ in range(n)]


@given(
    seed=st.integers(0, 2**32),
    drop=probability,
    conn=probability,
    sleep=probability,
    mode=st.sampled_from([0, 1]),
)
def test_same_seed_replays_the_same_decisions(
    seed: int, drop: float, conn: float, sleep: float, mode: int
) -> None:
    cfg = FuzzConnConfig(mode, 0.5, drop, conn, sleep)
    first = decisions(FuzzCore(cfg, random.Random(seed), now=0.0), 200)
    again = decisions(FuzzCore(cfg, random.Random(seed), now=0.0), 200)
    assert first == again


@given(seed=st.integers(0, 2**32), drop=probability, conn=probability, sleep=probability)
def test_drop_mode_follows_the_thresholds_of_go(
    seed: int, drop: float, conn: float, sleep: float
) -> None:
    cfg = FuzzConnConfig(0, 2.0, drop, conn, sleep)
    core = FuzzCore(cfg, random.Random(seed), now=0.0)
    mirror = random.Random(seed)
    for _ in range(100):
        got = core.decide(1.0)
        r = mirror.random()
        if r < drop:
            assert got == FuzzDecision(FuzzAction.DROP)
        elif r < drop + conn:
            assert got == FuzzDecision(FuzzAction.CLOSE)
        elif r < drop + conn + sleep:
            assert got.action is FuzzAction.PASS
            assert got.sleep_s == mirror.random() * 2.0
        else:
            assert got == FuzzDecision(FuzzAction.PASS)


@given(seed=st.integers(0, 2**32), max_delay=st.floats(min_value=0.0, max_value=10.0))
def test_delay_mode_always_sleeps_below_max_delay(seed: int, max_delay: float) -> None:
    """The quirk fixed: U[0, max_delay) seconds, not up to ~1000x max_delay."""
    core = FuzzCore(FuzzConnConfig(mode=1, max_delay_s=max_delay), random.Random(seed), now=0.0)
    for d in decisions(core, 100):
        assert d.action is FuzzAction.PASS
        assert 0.0 <= d.sleep_s <= max_delay
        if max_delay > 0:
            assert d.sleep_s < max_delay


def test_go_default_config_drops_about_a_fifth() -> None:
    core = FuzzCore(FuzzConnConfig(), random.Random(1), now=0.0)
    assert core.mode is FuzzMode.DROP
    got = decisions(core, 10_000)
    dropped = sum(d.action is FuzzAction.DROP for d in got)
    assert 1800 < dropped < 2200
    assert all(d.action is not FuzzAction.CLOSE and d.sleep_s == 0 for d in got)
    assert core.stats.dropped == dropped
    assert core.stats.passed == 10_000 - dropped


def test_zero_probabilities_never_drop() -> None:
    core = FuzzCore(FuzzConnConfig(0, 1.0, 0.0, 0.0, 0.0), random.Random(2), now=0.0)
    assert all(d == FuzzDecision(FuzzAction.PASS) for d in decisions(core, 5000))


def test_activation_after_a_delay_passes_everything_before() -> None:
    cfg = FuzzConnConfig(0, 1.0, 1.0, 0.0, 0.0)  # once active, every operation drops
    rng = random.Random(3)
    core = FuzzCore(cfg, rng, now=50.0, activate_after_s=10.0)
    state = rng.getstate()
    assert not core.is_active(59.9)
    assert core.decide(59.99) == FuzzDecision(FuzzAction.PASS)
    assert rng.getstate() == state  # inactive decisions draw nothing
    assert core.decide(60.0) == FuzzDecision(FuzzAction.DROP)
    assert core.is_active(0.0)  # stays active
    assert (core.stats.inactive, core.stats.dropped) == (1, 1)


def test_immediate_activation() -> None:
    core = FuzzCore(FuzzConnConfig(0, 1.0, 0.0, 1.0, 0.0), random.Random(4), now=5.0)
    assert core.decide(5.0) == FuzzDecision(FuzzAction.CLOSE)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (FuzzConnConfig(mode=2), "mode"),
        (FuzzConnConfig(prob_drop_rw=1.5), "probdroprw"),
        (FuzzConnConfig(prob_drop_conn=-0.1), "probdropconn"),
        (FuzzConnConfig(prob_sleep=float("nan")), "probsleep"),
        (FuzzConnConfig(max_delay_s=-1.0), "maxdelay"),
    ],
)
def test_invalid_configs_are_refused(cfg: FuzzConnConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FuzzCore(cfg, random.Random(0), now=0.0)


def test_negative_activation_is_refused() -> None:
    with pytest.raises(ConfigError, match="activation"):
        FuzzCore(FuzzConnConfig(), random.Random(0), now=0.0, activate_after_s=-1.0)
