"""The fuzzed connection's decisions, without I/O (behaviour.md §8).

CometBFT's ``p2p/fuzz.go`` wraps a socket and, before every read and every write, rolls
a die: drop the operation, close the connection, or sleep first. :class:`FuzzCore` is
that die. It never sleeps and never touches a socket: it returns a :class:`FuzzDecision`
that an I/O driver (:mod:`cometp2p.aio.fuzz`) carries out. Time is passed in as ``now``
(seconds on any monotonic clock) and randomness comes from an injected
:class:`random.Random`, so a seed replays the same decisions.

Rules, per operation, once active (``fuzz()`` in Go)::

    drop mode:   r = U[0, 1)
                 r <  prob_drop_rw                               -> DROP
                 r <  prob_drop_rw + prob_drop_conn              -> CLOSE
                 r <  prob_drop_rw + prob_drop_conn + prob_sleep -> PASS after a sleep
                 otherwise                                       -> PASS
    delay mode:  PASS after a sleep

Before activation every operation passes untouched. Activation is immediate
(``activate_after_s = 0``, Go's ``FuzzConn``) or after a delay from creation (Go's
``FuzzConnAfter``; its transport uses 10 s so handshakes succeed).

Deviation from Go (the quirk of behaviour.md §8): a sleep is drawn from
``U[0, max_delay_s)`` seconds. Go computes "max milliseconds" as the delay in
*microseconds* and then sleeps that many *milliseconds* (with 3 s: up to ~50 min), and
crashes when ``MaxDelay`` is under 1 µs; here ``max_delay_s = 0`` means no sleep. Go
drops when ``r <= ProbDropRW``, so a probability of 0 still drops when ``r`` is exactly 0;
here the test is ``r < prob_drop_rw``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum, IntEnum

from cometp2p.config import FuzzConnConfig
from cometp2p.errors import ConfigError

__all__ = [
    "FuzzAction",
    "FuzzCore",
    "FuzzDecision",
    "FuzzMode",
    "FuzzStats",
    "validate_fuzz_config",
]


class FuzzMode(IntEnum):
    """``test_fuzz_config.mode``: Go's ``FuzzModeDrop`` (0) and ``FuzzModeDelay`` (1)."""

    DROP = 0
    DELAY = 1


class FuzzAction(Enum):
    """What the driver does with one read or write."""

    PASS = "pass"
    """Carry the operation out (after ``sleep_s``)."""
    DROP = "drop"
    """Skip it: a write's bytes are lost; a read returns nothing (the caller reads again)."""
    CLOSE = "close"
    """Close the connection and skip the operation."""


@dataclass(frozen=True, slots=True)
class FuzzDecision:
    """One roll of the die.

    Attributes:
        action: what to do with the operation.
        sleep_s: seconds to wait before it (only with ``PASS``), in ``[0, max_delay_s)``.
    """

    action: FuzzAction
    sleep_s: float = 0.0


PASS_NOW = FuzzDecision(FuzzAction.PASS)


@dataclass(slots=True)
class FuzzStats:
    """Counts of the decisions taken (for tests and ``bench/faults.py``)."""

    passed: int = 0
    dropped: int = 0
    closed: int = 0
    slept: int = 0
    slept_s: float = 0.0
    inactive: int = 0

    def record(self, decision: FuzzDecision, *, active: bool) -> None:
        """Count ``decision``."""
        if not active:
            self.inactive += 1
            return
        if decision.action is FuzzAction.PASS:
            self.passed += 1
        elif decision.action is FuzzAction.DROP:
            self.dropped += 1
        else:
            self.closed += 1
        if decision.sleep_s > 0:
            self.slept += 1
            self.slept_s += decision.sleep_s


def validate_fuzz_config(config: FuzzConnConfig) -> FuzzMode:
    """Check ``[p2p.test_fuzz_config]`` and return its mode.

    Raises:
        ConfigError: an unknown mode, a probability outside ``[0, 1]`` or a negative
            ``maxdelay``.
    """
    try:
        mode = FuzzMode(config.mode)
    except ValueError as exc:
        raise ConfigError(
            f"p2p.test_fuzz_config.mode: expected 0 (drop) or 1 (delay), got {config.mode}"
        ) from exc
    for key, value in (
        ("probdroprw", config.prob_drop_rw),
        ("probdropconn", config.prob_drop_conn),
        ("probsleep", config.prob_sleep),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"p2p.test_fuzz_config.{key}: expected 0..1, got {value}")
    if not config.max_delay_s >= 0.0:
        raise ConfigError(
            f"p2p.test_fuzz_config.maxdelay: expected >= 0 s, got {config.max_delay_s}"
        )
    return mode


class FuzzCore:
    """Decides the fate of each read and write of one connection (behaviour.md §8).

    Args:
        config: probabilities, mode and maximum sleep (``[p2p.test_fuzz_config]``).
        rng: the only source of randomness; the same seed gives the same decisions.
        now: the creation time, seconds (monotonic).
        activate_after_s: seconds after ``now`` before fuzzing starts; 0 = at once.

    Raises:
        ConfigError: as :func:`validate_fuzz_config`, or a negative ``activate_after_s``.
    """

    __slots__ = ("_activate_at", "_active", "config", "mode", "rng", "stats")

    def __init__(
        self,
        config: FuzzConnConfig,
        rng: random.Random,
        *,
        now: float,
        activate_after_s: float = 0.0,
    ) -> None:
        if not activate_after_s >= 0.0:
            raise ConfigError(f"fuzz activation delay must be >= 0 s, got {activate_after_s}")
        self.config = config
        self.mode = validate_fuzz_config(config)
        self.rng = rng
        self.stats = FuzzStats()
        self._activate_at = now + activate_after_s
        self._active = activate_after_s == 0.0

    def is_active(self, now: float) -> bool:
        """True once the activation delay has passed (it never turns off again)."""
        if not self._active and now >= self._activate_at:
            self._active = True
        return self._active

    def decide(self, now: float) -> FuzzDecision:
        """Roll for one read or write at time ``now``."""
        if not self.is_active(now):
            self.stats.record(PASS_NOW, active=False)
            return PASS_NOW
        decision = self._roll()
        self.stats.record(decision, active=True)
        return decision

    def _roll(self) -> FuzzDecision:
        cfg = self.config
        if self.mode is FuzzMode.DELAY:
            return FuzzDecision(FuzzAction.PASS, self._delay())
        r = self.rng.random()
        if r < cfg.prob_drop_rw:
            return FuzzDecision(FuzzAction.DROP)
        if r < cfg.prob_drop_rw + cfg.prob_drop_conn:
            return FuzzDecision(FuzzAction.CLOSE)
        if r < cfg.prob_drop_rw + cfg.prob_drop_conn + cfg.prob_sleep:
            return FuzzDecision(FuzzAction.PASS, self._delay())
        return PASS_NOW

    def _delay(self) -> float:
        # U[0, max_delay): the fixed form of Go's randomDuration (see the module docstring).
        max_delay = self.config.max_delay_s
        if max_delay <= 0:
            return 0.0
        # random() < 1, but the product can round up to max_delay itself: keep it open.
        return min(self.rng.random() * max_delay, math.nextafter(max_delay, 0.0))
