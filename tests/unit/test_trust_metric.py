"""The trust metric without IO (behaviour.md §6): config rules, the algorithm, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometp2p.errors import ConfigError, LocalProtocolError
from cometp2p.trust.config import TrustMetricConfig
from cometp2p.trust.metric import (
    TrustHistory,
    TrustMetric,
    _history_value,
    _history_value_loop,
    go_pow_int,
)

SMALL = TrustMetricConfig(tracking_window_s=60.0 * 50, interval_length_s=60.0)

# One interval's events: (good, bad, pause before the tick).
step = st.tuples(st.integers(0, 20), st.integers(0, 20), st.booleans())


def test_defaults_give_gos_sizes() -> None:
    cfg = TrustMetricConfig()
    assert cfg.max_intervals == 20160
    assert cfg.history_max_size == 15
    seven_days = TrustMetricConfig(tracking_window_s=7 * 24 * 3600.0, interval_length_s=120.0)
    assert seven_days.max_intervals == 5040


@pytest.mark.parametrize(
    "kwargs",
    [
        {"proportional_weight": 0.0},
        {"integral_weight": -0.1},
        {"interval_length_s": 0.0},
        {"tracking_window_s": 0.0},
        {"tracking_window_s": 30.0, "interval_length_s": 60.0},
        {"proportional_weight": math.nan},
        {"integral_weight": math.inf},
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="trust metric"):
        TrustMetricConfig(**kwargs)


def test_gos_score_test() -> None:
    """TestTrustMetricScores of p2p/trust: perfect after one good event, lower after bad."""
    m = TrustMetric()
    m.good_events(1)
    assert m.trust_score() == 100
    m.bad_events(10)
    assert m.trust_score() != 100


def test_known_values_by_hand() -> None:
    m = TrustMetric(SMALL)
    m.good_events(3)
    m.bad_events(1)
    # R = 0.75, H = 1, D = -0.25: 0.4*0.75 + 0.6 - 0.25 = 0.65
    assert m.trust_value() == pytest.approx(0.65, abs=1e-15)
    assert m.trust_score() == 65
    m.next_time_interval()
    # history [0.65], one weight 0.8: H = 0.65; no events: R = 1, D > 0 weighs 0.
    assert m.history_value == pytest.approx(0.65, abs=1e-15)
    assert m.trust_value() == pytest.approx(0.4 + 0.6 * 0.65, abs=1e-15)


def test_negative_counts_are_rejected() -> None:
    m = TrustMetric()
    with pytest.raises(LocalProtocolError):
        m.good_events(-1)
    with pytest.raises(LocalProtocolError):
        m.bad_events(-1)


def test_init_with_zero_intervals_keeps_perfect_history() -> None:
    """§6.4: Go's Init gives H = 0/0 = NaN here; we keep 1.0."""
    m = TrustMetric(history=TrustHistory(0, ()))
    assert m.history_value == 1.0
    assert m.trust_score() == 100
    m.next_time_interval()
    assert not math.isnan(m.trust_value())


def test_init_clamps_like_go() -> None:
    cfg = SMALL
    long = tuple(0.5 + i / 100 for i in range(40))
    m = TrustMetric(cfg, history=TrustHistory(10_000, long))
    snap = m.history_json()
    assert snap.intervals == cfg.max_intervals
    assert snap.history == long[-cfg.history_max_size :]
    # A history shorter than the intervals claim is read from its oldest slot, never wraps.
    short = TrustMetric(cfg, history=TrustHistory(40, (0.2,)))
    assert short.history_value == pytest.approx(0.2)
    # Intervals without any history value: Go would panic; we start fresh.
    assert TrustMetric(cfg, history=TrustHistory(5, ())).history_value == 1.0


def test_go_pow_matches_exact_powers_closely() -> None:
    for n in (0, 1, 2, 3, 10, 100, 1000):
        assert go_pow_int(0.8, n) == pytest.approx(0.8**n, rel=1e-12)
    assert go_pow_int(0.8, 1_000_000) == 0.0


def test_timer_drops_missed_ticks_like_a_go_ticker() -> None:
    m = TrustMetric(SMALL, now=100.0)
    assert m.get_timer() == 160.0
    m.handle_timer(159.9)
    assert m.num_intervals == 0
    m.handle_timer(160.0)
    assert m.num_intervals == 1
    assert m.get_timer() == 220.0
    m.handle_timer(100_000.0)  # a long stall ends one interval, not a thousand
    assert m.num_intervals == 2
    assert 100_000.0 < m.get_timer() <= 100_060.0


@settings(max_examples=60, deadline=None)
@given(st.lists(step, max_size=120))
def test_score_stays_in_range(script: list[tuple[int, int, bool]]) -> None:
    m = TrustMetric(SMALL)
    for good, bad, pause in script:
        m.good_events(good)
        m.bad_events(bad)
        assert 0 <= m.trust_score() <= 100
        assert 0.0 <= m.trust_value() <= 1.0 + 1e-12
        if pause:
            m.pause()
        m.next_time_interval()
        assert 0 <= m.trust_score() <= 100


@settings(max_examples=60, deadline=None)
@given(st.lists(step, max_size=60), st.lists(st.integers(0, 50), min_size=1, max_size=60))
def test_only_good_events_never_lower_it(
    prefix: list[tuple[int, int, bool]], goods: list[int]
) -> None:
    m = TrustMetric(SMALL)
    for good, bad, _ in prefix:
        m.good_events(good)
        m.bad_events(bad)
        m.next_time_interval()
    before = m.trust_value()
    for good in goods:
        m.good_events(good)
        assert m.trust_value() >= before - 1e-12
        m.next_time_interval()
        assert m.trust_value() >= before - 1e-12
        before = m.trust_value()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 200), st.integers(0, 30))
def test_bad_burst_drops_at_once_and_fades(good_runs: int, burst: int, honest: int) -> None:
    m = TrustMetric(SMALL)
    for _ in range(good_runs):
        m.good_events(5)
        m.next_time_interval()
    assert m.trust_score() == 100
    m.bad_events(burst)
    # Derivative: the drop shows in the same interval, below what P and I alone would give.
    assert m.trust_value() < 0.6 + 1e-12
    m.next_time_interval()
    low = m.trust_value()
    assert low < 1.0
    previous = low
    for _ in range(honest):
        m.good_events(5)
        m.next_time_interval()
        assert m.trust_value() >= previous - 1e-12
        previous = m.trust_value()
    if honest >= 25:
        assert m.trust_value() > low  # the memory of the burst fades


@settings(max_examples=40, deadline=None)
@given(st.lists(step, min_size=1, max_size=40), st.integers(1, 100))
def test_pause_freezes_history(script: list[tuple[int, int, bool]], ticks: int) -> None:
    m = TrustMetric(SMALL)
    for good, bad, _ in script:
        m.good_events(good)
        m.bad_events(bad)
        m.next_time_interval()
    m.pause()
    frozen = m.history_json()
    value = m.trust_value()
    for _ in range(ticks):
        m.next_time_interval()
    assert m.history_json() == frozen
    assert m.trust_value() == value
    m.good_events(1)  # an event un-pauses; time moves the history again
    assert not m.paused
    m.next_time_interval()
    assert m.num_intervals == min(frozen.intervals + 1, SMALL.max_intervals)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=15)
    | st.lists(st.floats(0.0, 1.0), min_size=1, max_size=15)
    | st.lists(st.sampled_from([0.0, 5e-324, 1e-300, 1.0]), min_size=1, max_size=15),
    st.integers(1, 20160),
)
def test_fast_history_value_is_bit_identical_to_the_loop(history: list[float], n: int) -> None:
    assert _history_value(list(history), n) == _history_value_loop(list(history), n)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, max_size=80), st.integers(0, 5), st.integers(0, 5))
def test_judged_score_is_the_worse_of_now_and_the_past(
    script: list[tuple[int, int, bool]], good: int, bad: int
) -> None:
    m = TrustMetric(SMALL)
    for g, b, pause in script:
        m.good_events(g)
        m.bad_events(b)
        if pause:
            m.pause()
        m.next_time_interval()
    m.good_events(good)
    m.bad_events(bad)
    judged = m.judged_score()
    assert 0 <= judged <= m.trust_score() <= 100
    assert judged == math.floor(100 * min(m.trust_value(), m.history_value))
    if good + bad == 0:
        # A silent interval earns nothing: the history alone decides (Go: >= 40 always).
        assert judged == math.floor(100 * m.history_value)
        assert m.trust_score() >= 40
