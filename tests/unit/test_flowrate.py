"""Token-bucket rate limiter with an injected clock (wire.md §8.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.errors import LocalProtocolError
from cometp2p.sansio.flowrate import UNLIMITED, RateLimiter


def test_zero_rate_is_unlimited() -> None:
    limiter = RateLimiter(0, now=0.0)
    assert limiter.unlimited
    limiter.consume(10**12)
    assert limiter.available(0.0) == UNLIMITED
    assert limiter.delay_s(0.0, 10**9) == 0.0
    assert limiter.ready_at(10**9) <= 0.0


def test_bucket_starts_full_with_100ms_of_rate() -> None:
    limiter = RateLimiter(10_000, now=5.0)
    assert limiter.burst_bytes == 1_000
    assert limiter.available(5.0) == 1_000
    # It never holds more than the burst, however long it idles.
    assert limiter.available(500.0) == 1_000


def test_debt_delays_the_next_transfer() -> None:
    limiter = RateLimiter(1_000, now=0.0, burst_bytes=100)
    assert limiter.available(0.0) == 100
    limiter.consume(600)  # a whole packet may overdraw the bucket
    assert limiter.available(0.0) == 0
    assert limiter.ready_at() == pytest.approx(0.501)
    assert limiter.delay_s(0.2) == pytest.approx(0.301)
    assert limiter.available(0.5) == 0
    assert limiter.available(0.501) == 1
    assert limiter.available(0.6) == 100
    assert limiter.ready_at(50) <= 0.6


def test_ready_at_promises_are_kept_exactly() -> None:
    limiter = RateLimiter(3_333, now=0.123, burst_bytes=777)
    now = 0.123
    for _ in range(1_000):
        limiter.consume(limiter.available(now) + 1_031)
        now = limiter.ready_at(500)
        assert limiter.available(now) >= 500


def test_clock_going_backwards_adds_nothing() -> None:
    limiter = RateLimiter(1_000, now=10.0, burst_bytes=100)
    limiter.consume(100)
    assert limiter.available(9.0) == 0
    assert limiter.available(10.05) == 50


def test_invalid_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        RateLimiter(-1, now=0.0)
    with pytest.raises(LocalProtocolError):
        RateLimiter(100, now=0.0, burst_bytes=0)


@given(
    rate=st.integers(1, 10_000_000),
    transfers=st.lists(
        st.tuples(st.floats(0, 0.05, allow_nan=False), st.integers(1, 70_000)),
        min_size=1,
        max_size=200,
    ),
)
def test_long_run_rate_is_respected(rate: int, transfers: list[tuple[float, int]]) -> None:
    """Whatever the pattern, bytes moved by time t never exceed burst + one transfer + rate*t."""
    limiter = RateLimiter(rate, now=0.0)
    now = 0.0
    moved = 0
    for gap, size in transfers:
        now += gap
        if limiter.available(now) == 0:
            now = max(now, limiter.ready_at())
            assert limiter.available(now) > 0
        limiter.consume(size)
        moved += size
        assert moved <= limiter.burst_bytes + size + rate * now + 1


def test_exhausted_needs_no_clock() -> None:
    limiter = RateLimiter(1_000, now=0.0, burst_bytes=100)
    assert not limiter.exhausted
    limiter.consume(100)
    assert limiter.exhausted
    assert limiter.available(0.05) == 50
    assert not limiter.exhausted
    assert not RateLimiter(0, now=0.0).exhausted
