"""The revisit schedule and the verified-peer selection (sans-IO)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.errors import ConfigError
from cometp2p.seed.schedule import NodeCounters, SchedulePolicy, next_visit_delay, select_verified
from cometp2p.wire.netaddress import NetAddress

POLICY = SchedulePolicy(
    min_interval_s=10, new_interval_s=30, stable_interval_s=600, failed_interval_s=3600
)


def node(
    ok: bool, s: int = 0, f: int = 0, flaps: int = 0, dry: int = 3, answered: bool = True
) -> NodeCounters:
    return NodeCounters(ok, s, f, flaps, dry, answered)


def test_delays() -> None:
    assert next_visit_delay(POLICY, node(True, 1, dry=0)) == 10  # still yielding: re-ask
    assert next_visit_delay(POLICY, node(True, 1)) == 30  # new
    assert next_visit_delay(POLICY, node(True, 3)) == 120
    assert next_visit_delay(POLICY, node(True, 50)) == 600  # stable: capped
    assert next_visit_delay(POLICY, node(True, 2, flaps=5)) == 30  # flaky stays frequent
    assert next_visit_delay(POLICY, node(True, 5, flaps=5)) == 480  # up long enough again
    assert next_visit_delay(POLICY, node(False, f=1)) == 30
    assert next_visit_delay(POLICY, node(False, f=30)) == 3600


def test_policy_is_checked() -> None:
    with pytest.raises(ConfigError):
        SchedulePolicy(min_interval_s=40, new_interval_s=30)
    with pytest.raises(ConfigError):
        SchedulePolicy(stable_interval_s=1)
    assert SchedulePolicy().freshness_s == 1200


def addr(i: int, group: int) -> NetAddress:
    return NetAddress.parse(f"{i:040x}@10.{group}.0.{i % 250 + 1}:26656", resolve=False)


@given(
    st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100)), min_size=0, max_size=60),
    st.integers(0, 80),
    st.integers(0, 2**32),
)
def test_selection_is_distinct_bounded_and_spreads_over_groups(
    spec: list[tuple[int, float]], n: int, seed: int
) -> None:
    candidates = [(addr(i + 1, g), age) for i, (g, age) in enumerate(spec)]
    picked = select_verified(candidates, n, fresh_s=100, rng=random.Random(seed))
    assert len(picked) == min(n, len(candidates))
    assert len(set(picked)) == len(picked)
    assert set(picked) <= {a for a, _ in candidates}
    groups = {a.group_key(False) for a, _ in candidates}
    first = picked[: len(groups)]
    # Every group gets one address before any group gets a second.
    assert len({a.group_key(False) for a in first}) == len(first)


def test_selection_favours_recent_verification() -> None:
    fresh = [(addr(i, 1), 0.0) for i in range(1, 51)]
    stale = [(addr(i, 1), 100.0) for i in range(51, 101)]
    rng = random.Random(7)
    hits = sum(
        a.port == 26656 and int(a.id, 16) <= 50
        for _ in range(200)
        for a in select_verified(fresh + stale, 10, fresh_s=100, rng=rng)
    )
    assert hits > 0.6 * 2000  # fresh ones are picked clearly more often than stale ones
