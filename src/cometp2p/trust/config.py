"""Validated configuration of the trust metric (behaviour.md §6.1).

Go's ``customConfig`` silently replaces a non-positive override by the default; we reject
it with :class:`~cometp2p.errors.ConfigError` instead, so a typo in ``config.toml`` is
seen rather than ignored. Valid values give exactly Go's derived sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from cometp2p.errors import ConfigError

__all__ = [
    "DEFAULT_INTEGRAL_WEIGHT",
    "DEFAULT_INTERVAL_LENGTH_S",
    "DEFAULT_PROPORTIONAL_WEIGHT",
    "DEFAULT_TRACKING_WINDOW_S",
    "DERIVATIVE_GAMMA1",
    "DERIVATIVE_GAMMA2",
    "HISTORY_DATA_WEIGHT",
    "TrustMetricConfig",
    "interval_to_history_offset",
]

DEFAULT_PROPORTIONAL_WEIGHT: Final = 0.4
"""Weight ``a`` of the current interval's good/(good+bad) ratio."""
DEFAULT_INTEGRAL_WEIGHT: Final = 0.6
"""Weight ``b`` of the faded-memory history value."""
DEFAULT_TRACKING_WINDOW_S: Final = 14 * 24 * 3600.0
"""How far back the history reaches: 14 days, in seconds."""
DEFAULT_INTERVAL_LENGTH_S: Final = 60.0
"""Length of one time interval: 1 minute, in seconds."""
DERIVATIVE_GAMMA1: Final = 0.0
"""Derivative weight when the current behaviour is no worse than the history."""
DERIVATIVE_GAMMA2: Final = 1.0
"""Derivative weight when the current behaviour is worse than the history."""
HISTORY_DATA_WEIGHT: Final = 0.8
"""The weight of the history point ``k`` intervals back is ``0.8 ** k`` (optimism)."""

_NS_PER_S: Final = 1_000_000_000


def interval_to_history_offset(interval: int) -> int:
    """``floor(log2(interval))`` for ``interval >= 1``: which faded-memory slot holds it.

    Computed exactly on integers (Go uses ``math.Log2``, which agrees for every interval
    count a tracking window can produce).
    """
    return interval.bit_length() - 1


@dataclass(frozen=True, slots=True)
class TrustMetricConfig:
    """Weights and time base of a :class:`~cometp2p.trust.metric.TrustMetric` (§6.1).

    Attributes:
        proportional_weight: weight of current behaviour, > 0 (Go default 0.4).
        integral_weight: weight of past behaviour, > 0 (Go default 0.6).
        tracking_window_s: seconds of history tracked, >= ``interval_length_s``
            (Go default 14 days).
        interval_length_s: seconds per interval, > 0 (Go default 1 minute).

    Raises:
        ConfigError: if a value is not finite or breaks its rule.
    """

    proportional_weight: float = DEFAULT_PROPORTIONAL_WEIGHT
    integral_weight: float = DEFAULT_INTEGRAL_WEIGHT
    tracking_window_s: float = DEFAULT_TRACKING_WINDOW_S
    interval_length_s: float = DEFAULT_INTERVAL_LENGTH_S

    def __post_init__(self) -> None:
        for name in ("proportional_weight", "integral_weight", "interval_length_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"trust metric {name} must be a finite number > 0, got {value!r}")
        if not math.isfinite(self.tracking_window_s) or self.tracking_window_s <= 0:
            raise ConfigError(
                f"trust metric tracking_window_s must be a finite number > 0, "
                f"got {self.tracking_window_s!r}"
            )
        if self._interval_ns < 1:
            raise ConfigError(
                f"trust metric interval_length_s must be at least 1 ns, "
                f"got {self.interval_length_s!r}"
            )
        if self._window_ns < self._interval_ns:
            raise ConfigError(
                f"trust metric tracking_window_s ({self.tracking_window_s} s) must be at least "
                f"interval_length_s ({self.interval_length_s} s)"
            )

    @property
    def _interval_ns(self) -> int:
        return round(self.interval_length_s * _NS_PER_S)

    @property
    def _window_ns(self) -> int:
        return round(self.tracking_window_s * _NS_PER_S)

    @property
    def max_intervals(self) -> int:
        """``TrackingWindow / IntervalLength`` in integer nanoseconds, as Go divides Durations."""
        return self._window_ns // self._interval_ns

    @property
    def history_max_size(self) -> int:
        """``floor(log2(max_intervals)) + 1`` faded-memory slots (15 by default)."""
        return interval_to_history_offset(self.max_intervals) + 1
