"""The trust metric of one peer: a PID-style reliability score (behaviour.md §6.2-§6.4).

Pure and sans-IO: the clock is passed in (``now``, seconds on any monotonic scale) and the
metric never sleeps, logs or reads the time. The owner calls :meth:`TrustMetric.handle_timer`
when :meth:`TrustMetric.get_timer` says, or :meth:`TrustMetric.next_time_interval` directly
(as Go's ticker does).

The arithmetic follows tendermint v0.34.24 ``p2p/trust`` operation by operation (same
order of floating-point operations, Go's ``math.Pow`` for the integer powers of 0.8), so
the values equal Go's to the last bit on every script the interop test replays. One
deliberate difference, recommended by §6.4: a history loaded with ``intervals = 0`` keeps
the perfect history value 1.0 instead of Go's ``0/0 = NaN``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cometp2p.errors import LocalProtocolError
from cometp2p.trust.config import (
    DERIVATIVE_GAMMA1,
    DERIVATIVE_GAMMA2,
    HISTORY_DATA_WEIGHT,
    TrustMetricConfig,
    interval_to_history_offset,
)

__all__ = ["TrustHistory", "TrustMetric", "go_pow_int"]


def go_pow_int(x: float, n: int) -> float:
    """``x ** n`` for an integer ``n >= 0``, computed as Go's ``math.Pow`` does.

    Go multiplies successive squarings of the mantissa and keeps the exponent apart; C's
    ``pow`` may differ from it by one ulp. Reproducing it keeps the history weights, and so
    every trust value, bit-identical to Go's.
    """
    if n == 0 or x == 1.0:
        return 1.0
    if n == 1:
        return x
    a1 = 1.0
    ae = 0
    x1, xe = math.frexp(x)
    i = n
    while i != 0:
        if xe < -(1 << 12) or xe > (1 << 12):
            ae += xe
            break
        if i & 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    return math.ldexp(a1, ae)


class _WeightTable:
    """The history weights ``0.8 ** k`` (Go's ``math.Pow``) and their running sums.

    Every metric uses the same weights, and Go sums them one by one in order, both in
    ``Init`` and interval by interval, so ``sums[n]`` is exactly the ``historyWeightSum``
    of a metric tracking ``n`` intervals. Shared, grown on demand: a metric costs no
    weight list of its own (20 160 floats at the default window).
    """

    def __init__(self) -> None:
        self.weights: list[float] = []  # weights[k] = 0.8 ** (k + 1)
        self.sums: list[float] = [0.0]  # sums[n] = weights[0] + ... + weights[n - 1]

    def ensure(self, n: int) -> None:
        while len(self.weights) < n:
            w = go_pow_int(HISTORY_DATA_WEIGHT, len(self.weights) + 1)
            self.weights.append(w)
            self.sums.append(self.sums[-1] + w)


_TABLE = _WeightTable()


@dataclass(frozen=True, slots=True)
class TrustHistory:
    """What is persisted of a metric: Go's ``MetricHistoryJSON``.

    Attributes:
        intervals: number of intervals tracked so far (``"intervals"``), >= 0.
        history: faded-memory trust values, oldest first (``"history"``), each in 0..1 for
            data a metric produced.
    """

    intervals: int
    history: tuple[float, ...]


class TrustMetric:
    """Reliability of one peer over time, 0.0 (untrusted) to 1.0 (perfect), §6.3.

    Args:
        config: weights and time base.
        now: the current time in seconds; the first interval ends one interval length later.
        history: persisted state to resume from (Go's ``Init``); ``None`` starts perfect.
    """

    __slots__ = (
        "_bad",
        "_good",
        "_history",
        "_history_value",
        "_max_size",
        "_next_tick",
        "_num_intervals",
        "_paused",
        "config",
    )

    def __init__(
        self,
        config: TrustMetricConfig | None = None,
        *,
        now: float = 0.0,
        history: TrustHistory | None = None,
    ) -> None:
        self.config = config if config is not None else TrustMetricConfig()
        self._max_size = self.config.history_max_size
        self._num_intervals = 0
        self._history: list[float] = []
        self._history_value = 1.0
        self._good = 0.0
        self._bad = 0.0
        self._paused = False
        self._next_tick = now + self.config.interval_length_s
        if history is not None:
            self._init(history)

    def _init(self, hist: TrustHistory) -> None:
        intervals = min(max(hist.intervals, 0), self.config.max_intervals)
        values = list(hist.history[-self._max_size :]) if hist.history else []
        if not values:
            intervals = 0  # Go would index an empty history and panic
        self._num_intervals = intervals
        self._history = values
        _TABLE.ensure(intervals)
        # §6.4: Go computes 0/0 = NaN here for intervals == 0; a fresh metric has H = 1.0.
        self._history_value = self._calc_history_value() if intervals > 0 else 1.0

    # -- events ---------------------------------------------------------------------------

    def good_events(self, n: int = 1) -> None:
        """Record ``n >= 0`` desirable events in the current interval; un-pauses.

        Raises:
            LocalProtocolError: if ``n`` is negative.
        """
        self._check_count(n)
        self._unpause()
        self._good += float(n)

    def bad_events(self, n: int = 1) -> None:
        """Record ``n >= 0`` undesirable events in the current interval; un-pauses.

        Raises:
            LocalProtocolError: if ``n`` is negative.
        """
        self._check_count(n)
        self._unpause()
        self._bad += float(n)

    def pause(self) -> None:
        """Freeze the history (the peer went away) until the next event."""
        self._paused = True

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and the next event."""
        return self._paused

    @staticmethod
    def _check_count(n: int) -> None:
        if n < 0:
            raise LocalProtocolError(f"trust metric event count must be >= 0, got {n}")

    def _unpause(self) -> None:
        if self._paused:
            self._good = 0.0
            self._bad = 0.0
            self._paused = False

    # -- values ---------------------------------------------------------------------------

    def trust_value(self) -> float:
        """The current trust value, in 0.0..1.0 (Go's ``TrustValue``)."""
        proportional = self._proportional_value()
        weighted_p = self.config.proportional_weight * proportional
        weighted_i = self.config.integral_weight * self._history_value
        d = proportional - self._history_value
        weighted_d = (DERIVATIVE_GAMMA2 if d < 0 else DERIVATIVE_GAMMA1) * d
        tv = weighted_p + weighted_i + weighted_d
        return 0.0 if tv < 0 else tv

    def trust_score(self) -> int:
        """``floor(100 * trust_value())``, in 0..100 (Go's ``TrustScore``)."""
        return math.floor(self.trust_value() * 100)

    def judged_score(self) -> int:
        """``floor(100 * min(trust_value(), history_value))``, in 0..100 (ours, not Go's).

        Go's value counts an interval without events as perfect (R = 1), so a peer that is
        idle or gone scores at least ``100 * a`` (40) however bad its history. Judged by
        the worse of its current interval and its history, it earns nothing for silence;
        with events this is Go's score whenever they are worse than its past.
        """
        return math.floor(min(self.trust_value(), self._history_value) * 100)

    @property
    def history_value(self) -> float:
        """The integral part H: faded-memory weighted history, 1.0 when nothing is tracked."""
        return self._history_value

    @property
    def num_intervals(self) -> int:
        """Intervals tracked so far (at most ``config.max_intervals``)."""
        return self._num_intervals

    def history_json(self) -> TrustHistory:
        """A snapshot to persist (Go's ``HistoryJSON``)."""
        return TrustHistory(self._num_intervals, tuple(self._history))

    def _proportional_value(self) -> float:
        total = self._good + self._bad
        return self._good / total if total > 0 else 1.0

    # -- time -----------------------------------------------------------------------------

    def get_timer(self) -> float:
        """When the current interval ends (seconds, same scale as ``now``)."""
        return self._next_tick

    def handle_timer(self, now: float) -> None:
        """End the current interval if ``now`` has reached :meth:`get_timer`.

        Like Go's ``time.Ticker``, missed ticks are dropped: after a long stall one interval
        ends and the next deadline is the first boundary after ``now``.
        """
        if now < self._next_tick:
            return
        self.next_time_interval()
        step = self.config.interval_length_s
        missed = math.floor((now - self._next_tick) / step) + 1
        self._next_tick += missed * step

    def next_time_interval(self) -> None:
        """Fold the current interval into the history and start a new one (§6.3).

        Does nothing while paused.
        """
        if self._paused:
            return
        self._history.append(self.trust_value())
        if len(self._history) > self._max_size:
            del self._history[: len(self._history) - self._max_size]
        if self._num_intervals < self.config.max_intervals:
            self._num_intervals += 1
            _TABLE.ensure(self._num_intervals)
        self._update_faded_memory()
        self._history_value = self._calc_history_value()
        self._good = 0.0
        self._bad = 0.0

    def _update_faded_memory(self) -> None:
        history = self._history
        size = len(history)
        if size < 2:
            return
        end = size - 1
        for count in range(1, size):
            i = end - count
            x = float(1 << count)
            history[i] = ((history[i] * (x - 1)) + history[i + 1]) / x

    def _calc_history_value(self) -> float:
        n = self._num_intervals
        if not self._history or n == 0:
            return 1.0
        return _history_value(self._history, n)


def _history_value_loop(history: list[float], n: int) -> float:
    """Go's ``calcHistoryValue`` for ``n >= 1`` intervals, term by term in Go's order."""
    _TABLE.ensure(n)
    weights = _TABLE.weights
    first = len(history) - 1
    hv = history[first] * weights[0]
    # Intervals [2^m, 2^(m+1)) share slot m. A history shorter than its interval count
    # needs (only from loaded data; Go would panic) reads its oldest slot.
    interval = 1
    while interval < n:
        value = history[max(first - interval_to_history_offset(interval), 0)]
        stop = min(n, interval << 1)
        for k in range(interval, stop):
            hv += value * weights[k]
        interval = stop
    return hv / _TABLE.sums[n]


def _history_value(history: list[float], n: int) -> float:
    """:func:`_history_value_loop`, stopping once the remaining terms cannot change the sum.

    With no negative history value the sum only grows and the terms only shrink (the
    weights fall as 0.8^k, each value is at most ``max(history)``). Once
    ``max(history) * w_k`` is below half an ulp of the sum, adding that term, or any
    later one, rounds back to the same sum in IEEE arithmetic, so the result is
    bit-identical to adding all ``n`` (Go's loop) while summing a few hundred terms
    instead of 20 160.
    """
    _TABLE.ensure(n)
    weights = _TABLE.weights
    first = len(history) - 1
    hi = max(history)
    if min(history) < 0 or hi <= 0:
        return _history_value_loop(history, n)
    hv = history[first] * weights[0]
    interval = 1
    while interval < n:
        if hi * weights[interval] < math.ulp(hv) / 2:
            break
        value = history[max(first - interval_to_history_offset(interval), 0)]
        stop = min(n, interval << 1)
        for k in range(interval, stop):
            hv += value * weights[k]
        interval = stop
    return hv / _TABLE.sums[n]
