"""A token-bucket rate limiter in bytes/s with the clock passed in (wire.md §8.1, §8.3, §8.4).

CometBFT limits each MConnection's send and receive rate (``send_rate`` / ``recv_rate``
in ``config.toml [p2p]``, 5 120 000 B/s on a node; 0 means unlimited) with
``libs/flowrate``, which allows ``rate * 100 ms`` bytes per 100 ms sample and lets a
transfer that started within its allowance finish ("send more than we asked for, it
evens out"). This module gives the same long-run behaviour as a token bucket:

* the bucket holds at most ``burst_bytes`` (default: 100 ms worth of rate);
* a transfer may start whenever the bucket is not empty, and may overdraw it, so one
  whole packet or read always goes through; the debt delays what follows;
* time is passed in as ``now`` (float seconds, monotonic); nothing here reads a clock.

Pure arithmetic, no IO.
"""

from __future__ import annotations

import math
from typing import Final

from cometp2p.errors import LocalProtocolError

__all__ = ["DEFAULT_BURST_S", "UNLIMITED", "RateLimiter"]

UNLIMITED: Final = 1 << 62
"""What :meth:`RateLimiter.available` returns when the rate is 0 (unlimited), in bytes."""

DEFAULT_BURST_S: Final = 0.1
"""Default bucket size in seconds of rate: Go's flowrate sample period (100 ms)."""

# Refill arithmetic in floats can land a hair below a whole byte at the exact instant
# ready_at() promised; this slack keeps a timer that fires on time from finding 0.
_EPSILON: Final = 1e-6


class RateLimiter:
    """Token bucket: how many bytes may go now, and when the next ones may go.

    Args:
        rate_bytes_per_s: the long-run limit in bytes/s; 0 means unlimited.
        now: the current time in seconds (monotonic); the bucket starts full.
        burst_bytes: the bucket size in bytes; defaults to ``rate * 0.1 s`` (at least
            1 byte).

    Raises:
        LocalProtocolError: a negative rate or a burst below 1 byte.
    """

    __slots__ = ("_last", "_tokens", "burst_bytes", "rate_bytes_per_s")

    def __init__(self, rate_bytes_per_s: int, now: float, burst_bytes: int | None = None) -> None:
        if rate_bytes_per_s < 0:
            raise LocalProtocolError(
                f"rate must be >= 0 bytes/s (0 = unlimited), got {rate_bytes_per_s}"
            )
        if burst_bytes is None:
            burst_bytes = max(1, round(rate_bytes_per_s * DEFAULT_BURST_S))
        elif burst_bytes < 1:
            raise LocalProtocolError(f"burst must be >= 1 byte, got {burst_bytes}")
        self.rate_bytes_per_s = rate_bytes_per_s
        self.burst_bytes = burst_bytes
        self._tokens = float(burst_bytes)
        self._last = now

    @property
    def unlimited(self) -> bool:
        """True when the rate is 0, i.e. no limit applies."""
        return self.rate_bytes_per_s == 0

    @property
    def exhausted(self) -> bool:
        """True if the bucket was empty (or in debt) at the last call given ``now``.

        Needs no clock: tokens only grow with time, so ``False`` stays true until the
        next :meth:`consume`; when ``True``, :meth:`ready_at` says when it ends.
        """
        return self.rate_bytes_per_s != 0 and self._tokens < 1 - _EPSILON

    def _refill(self, now: float) -> float:
        # A clock that goes backwards (or a stale `now`) adds nothing.
        if now > self._last:
            tokens = self._tokens + (now - self._last) * self.rate_bytes_per_s
            self._tokens = tokens if tokens < self.burst_bytes else float(self.burst_bytes)
            self._last = now
        return self._tokens

    def available(self, now: float) -> int:
        """Bytes that may be transferred at ``now`` (>= 0; :data:`UNLIMITED` if unlimited).

        A transfer may start whenever this is > 0 and may exceed it; report what was
        actually transferred with :meth:`consume`.
        """
        if self.rate_bytes_per_s == 0:
            return UNLIMITED
        tokens = self._refill(now)
        return int(tokens + _EPSILON) if tokens > 0 else 0

    def consume(self, n_bytes: int) -> None:
        """Record ``n_bytes`` transferred; the bucket may go into debt."""
        if self.rate_bytes_per_s:
            self._tokens -= n_bytes

    def ready_at(self, want_bytes: int = 1) -> float:
        """The earliest time at which ``available() >= min(want_bytes, burst_bytes)``.

        Computed from the state at the last call that passed ``now``, so it needs no
        clock; it is in the past (or equal to that last ``now``) when already true.

        Args:
            want_bytes: how many bytes the caller would like to move at once (>= 1).
        """
        if self.rate_bytes_per_s == 0:
            return self._last
        target = min(max(want_bytes, 1), self.burst_bytes)
        missing = target - self._tokens
        if missing <= 0:
            return self._last
        return self._last + missing / self.rate_bytes_per_s

    def delay_s(self, now: float, want_bytes: int = 1) -> float:
        """Seconds to wait from ``now`` until :meth:`ready_at` (0.0 if no wait is needed)."""
        if self.rate_bytes_per_s == 0:
            return 0.0
        self._refill(now)
        delay = self.ready_at(want_bytes) - now
        return delay if delay > 0 else 0.0

    def __repr__(self) -> str:
        rate = "unlimited" if self.rate_bytes_per_s == 0 else f"{self.rate_bytes_per_s} B/s"
        tokens = math.floor(self._tokens)
        return f"RateLimiter({rate}, burst={self.burst_bytes} B, tokens={tokens} B)"
