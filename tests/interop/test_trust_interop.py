"""Our trust metric equals tendermint v0.34.24's ``p2p/trust`` to 1e-12 (behaviour.md §6).

The Go side is the real package, driven by ``trustharness`` through its ``TestTicker``.
Scripts: the package's own test cases, then random scripts of 1,000+ intervals with
bursts, pauses, loaded histories and windows much shorter than the run.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cometp2p.trust.config import TrustMetricConfig, interval_to_history_offset
from cometp2p.trust.metric import TrustHistory, TrustMetric
from cometp2p.trust.store import TrustMetricStore
from interop.trust_harness import BUILD_TIMEOUT_S, ensure_trustharness_binary, run_mode

pytestmark = [pytest.mark.interop, pytest.mark.timeout(BUILD_TIMEOUT_S + 120)]

TOLERANCE = 1e-12
NS = 1_000_000_000
Step = tuple[int, int, int]  # good, bad, pause (0/1) in one interval


@pytest.fixture(scope="module")
def trustharness() -> Path:
    return ensure_trustharness_binary()


def go_config(cfg: TrustMetricConfig) -> dict[str, object]:
    return {
        "proportional_weight": cfg.proportional_weight,
        "integral_weight": cfg.integral_weight,
        "tracking_window_ns": round(cfg.tracking_window_s * NS),
        "interval_ns": round(cfg.interval_length_s * NS),
    }


def script(
    cfg: TrustMetricConfig, steps: Sequence[Step], init: TrustHistory | None = None
) -> dict[str, object]:
    return {
        "config": go_config(cfg),
        "init": None if init is None else {"intervals": init.intervals, "history": init.history},
        "steps": [list(s) for s in steps],
    }


def replay_ours(
    cfg: TrustMetricConfig, steps: Sequence[Step], init: TrustHistory | None = None
) -> tuple[list[tuple[float, float]], TrustHistory]:
    m = TrustMetric(cfg, history=init)
    values = []
    for good, bad, pause in steps:
        if good:
            m.good_events(good)
        if bad:
            m.bad_events(bad)
        if pause:
            m.pause()
        before = m.trust_value()
        m.next_time_interval()
        values.append((before, m.trust_value()))
    return values, m.history_json()


def random_case(rng: random.Random) -> tuple[TrustMetricConfig, list[Step], TrustHistory | None]:
    interval_s = rng.choice([1.0, 30.0, 60.0, 120.0])
    window = rng.choice([1, 2, 3, 7, 16, 50, 100, 333, 1024, 20160])
    cfg = TrustMetricConfig(
        proportional_weight=rng.choice([0.4, 0.3, rng.uniform(0.05, 1.0)]),
        integral_weight=rng.choice([0.6, 0.7, rng.uniform(0.05, 1.0)]),
        tracking_window_s=interval_s * window,
        interval_length_s=interval_s,
    )
    mood = rng.uniform(0.0, 1.0)  # how often this peer misbehaves
    steps: list[Step] = []
    for _ in range(rng.randint(1000, 1600)):
        roll = rng.random()
        if roll < 0.03:
            steps.append((0, rng.randint(20, 500), 0))  # burst of bad events
        elif roll < 0.08:
            steps.append((rng.randint(0, 3), 0, 1))  # disconnect: pause
        elif roll < 0.15:
            steps.append((0, 0, 0))  # quiet interval
        else:
            good = rng.randint(0, 40)
            steps.append((good, rng.randint(0, 10) if rng.random() < mood else 0, 0))
    init = None
    if rng.random() < 0.4:
        # Go indexes the history by the interval count (and panics when it is too short),
        # so a loaded history has at least the slots its interval count needs.
        intervals = rng.randint(1, 40_000)
        needed = interval_to_history_offset(max(min(intervals, cfg.max_intervals) - 1, 1)) + 1
        length = rng.randint(needed, needed + 12)
        init = TrustHistory(intervals, tuple(rng.uniform(0.0, 1.0) for _ in range(length)))
    return cfg, steps, init


def assert_same(go: dict[str, Any], ours: tuple[list[tuple[float, float]], TrustHistory]) -> int:
    """Compare one script; return how many values were bit-identical."""
    values, final = ours
    assert len(go["values"]) == len(values)
    identical = 0
    for index, ((go_before, go_after), (before, after)) in enumerate(
        zip(go["values"], values, strict=True)
    ):
        assert abs(go_before - before) <= TOLERANCE, f"interval {index}: before tick"
        assert abs(go_after - after) <= TOLERANCE, f"interval {index}: after tick"
        identical += (go_before == before) + (go_after == after)
    assert go["final"]["intervals"] == final.intervals
    go_history = go["final"]["history"] or []
    assert len(go_history) == len(final.history)
    for g, o in zip(go_history, final.history, strict=True):
        assert abs(g - o) <= TOLERANCE
    return identical


def test_packages_own_cases(trustharness: Path) -> None:
    default = TrustMetricConfig()
    seven_days = TrustMetricConfig(tracking_window_s=7 * 24 * 3600.0, interval_length_s=120.0)
    custom = TrustMetricConfig(
        proportional_weight=0.3,
        integral_weight=0.7,
        tracking_window_s=7 * 24 * 3600.0,
        interval_length_s=120.0,
    )
    cases: list[tuple[TrustMetricConfig, list[Step]]] = [
        # TestTrustMetricScores: one good event, then ten bad ones.
        (default, [(1, 0, 0), (0, 10, 0), (1, 0, 0)]),
        # TestTrustMetricConfig: the 7-day / 2-minute window, default then custom weights.
        (seven_days, [(5, 1, 0)] * 50 + [(0, 3, 0)] * 10 + [(2, 0, 0)] * 40),
        (custom, [(5, 1, 0)] * 50 + [(0, 3, 0)] * 10 + [(2, 0, 0)] * 40),
        # _TestTrustMetricStopPause: two ticks, pause, two ticks, five good events, two ticks.
        (default, [(0, 0, 0), (0, 0, 1), (0, 0, 0), (0, 0, 0), (5, 0, 0), (0, 0, 0)]),
    ]
    go = run_mode(trustharness, "replay", [script(cfg, steps) for cfg, steps in cases])
    assert isinstance(go, list)
    for result, (cfg, steps) in zip(go, cases, strict=True):
        assert_same(result, replay_ours(cfg, steps))
    # The score test's own assertions, on Go's numbers and ours alike.
    assert int(go[0]["values"][0][0] * 100) == 100
    assert go[0]["values"][1][0] < 1.0


def test_random_scripts_match_go(trustharness: Path) -> None:
    rng = random.Random(13)
    cases = [random_case(rng) for _ in range(24)]
    assert sum(1 for cfg, steps, _ in cases if len(steps) > cfg.max_intervals) >= 10
    go = run_mode(trustharness, "replay", [script(*case) for case in cases])
    assert isinstance(go, list)
    identical = total = 0
    for result, (cfg, steps, init) in zip(go, cases, strict=True):
        identical += assert_same(result, replay_ours(cfg, steps, init))
        total += 2 * len(steps)
    # Same operations in the same order: every value is in fact bit-identical to Go's.
    assert identical == total


def test_store_json_moves_between_go_and_us(trustharness: Path) -> None:
    """Go's MetricStore (over a MemDB) and ours read each other's ``trustMetricStore`` JSON."""
    rng = random.Random(6)
    default = TrustMetricConfig()
    peers = {f"{i:040x}": random_case(rng)[1][: rng.randint(0, 300)] for i in range(6)}
    peers["never-ticked"] = []
    go_bytes = run_mode(
        trustharness, "store-export", {k: script(default, steps) for k, steps in peers.items()}
    )
    raw = json.dumps(go_bytes).encode()
    ours = TrustMetricStore(None)
    assert ours.import_go_json(raw) == len(peers)
    for key, steps in peers.items():
        _, final = replay_ours(default, steps)
        assert ours.metric(key).history_json() == final
    assert json.loads(ours.export_go_json()) == go_bytes  # same layout, same numbers
    # And back: Go loads what we export and computes the same values from it.
    go_values = run_mode(trustharness, "store-import", ours.export_go_json())
    assert isinstance(go_values, dict)
    assert set(go_values) == set(peers)
    for key, (loaded, after_tick) in go_values.items():
        m = ours.metric(key)
        if m.history_json().intervals == 0:
            # behaviour.md §6.4: Go's Init computes 0/0 and stays NaN; ours stays perfect.
            assert math.isnan(float(loaded))
            assert math.isnan(float(after_tick))
            assert m.trust_value() == 1.0
            continue
        assert m.trust_value() == float(loaded)
        m.next_time_interval()
        assert m.trust_value() == float(after_tick)
    ours.close(save=False)
