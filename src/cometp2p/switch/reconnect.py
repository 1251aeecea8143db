"""The persistent-peer redial schedule (behaviour.md §1.10): pure, randomness injected.

:class:`ReconnectPolicy` holds the parameters, :class:`ReconnectSchedule` the waits of
one reconnect loop. The Switch runs the loop; both names are re-exported from
:mod:`cometp2p.switch.switch`, where they used to live.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ReconnectPolicy", "ReconnectSchedule"]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """The persistent-peer redial schedule (behaviour.md §1.10), in seconds.

    Phase 1: ``fast_attempts`` dials, the first at once, the others ``fast_interval_s``
    apart. Phase 2: ``backoff_attempts`` dials, the i-th (1-based) after
    ``backoff_base_s ** i``. Every wait adds ``U[0, jitter_s)``. After the n-th
    *incompatible* refusal in a row the peer's ID is not dialed for
    :meth:`incompatible_cooldown` ``(n)`` seconds and its schedule continues in phase 2.
    """

    fast_attempts: int = 20
    fast_interval_s: float = 5.0
    backoff_attempts: int = 10
    backoff_base_s: float = 3.0
    jitter_s: float = 3.0
    incompatible_cooldown_s: float = 5.0
    incompatible_cooldown_max_s: float = 300.0
    short_lived_s: float = 10.0
    short_lived_backoff_s: float = 1.0
    short_lived_backoff_max_s: float = 300.0

    def short_lived_wait(self, deaths: int) -> float:
        """Seconds before redialing after the ``deaths``-th short-lived connection in a row
        (1-based): ``short_lived_backoff_s`` doubled each time, at most
        ``short_lived_backoff_max_s``; 0 for ``deaths < 1``."""
        first = self.short_lived_backoff_s
        if first <= 0 or deaths < 1:
            return 0.0
        cap = max(self.short_lived_backoff_max_s, first)
        return min(first * 2.0 ** min(deaths - 1, 64), cap)

    def incompatible_cooldown(self, refusals: int) -> float:
        """Seconds of cooldown after the ``refusals``-th incompatible refusal in a row
        (1-based): ``incompatible_cooldown_s`` doubled each time, at most
        ``incompatible_cooldown_max_s``."""
        first = self.incompatible_cooldown_s
        if first <= 0 or refusals < 1:
            return max(first, 0.0)
        return min(
            first * 2.0 ** min(refusals - 1, 64), max(self.incompatible_cooldown_max_s, first)
        )

    def delays(self, *, cooled_down: bool = False) -> list[float]:
        """The waits before each attempt (without jitter); the first fast one is 0."""
        fast = [] if cooled_down else [0.0] + [self.fast_interval_s] * (self.fast_attempts - 1)
        backoff = [self.backoff_base_s**i for i in range(1, self.backoff_attempts + 1)]
        return fast + backoff


class ReconnectSchedule:
    """The waits of one reconnect loop: pure, with the randomness injected.

    Args:
        policy: the schedule's parameters.
        rng: source of the jitter.
        first_attempt_done: the failed dial that started the loop counts as the first
            fast attempt (so the next one waits ``fast_interval_s``).
        cooled_down: start in the back-off phase (after an incompatible refusal).
    """

    def __init__(
        self,
        policy: ReconnectPolicy,
        rng: random.Random,
        *,
        first_attempt_done: bool = False,
        cooled_down: bool = False,
    ) -> None:
        self.policy = policy
        self._rng = rng
        self._fast_done = 1 if first_attempt_done else 0
        self._fast_total = 0 if cooled_down else policy.fast_attempts
        self._backoff_done = 0
        self.attempts = 0

    def _jitter(self) -> float:
        jitter = self.policy.jitter_s
        return self._rng.uniform(0, jitter) if jitter > 0 else 0.0

    def cool_down(self) -> None:
        """Skip what is left of the fast phase (the peer refused us as incompatible)."""
        self._fast_total = 0

    def next_wait(self, cooldown_remaining_s: float = 0.0) -> float | None:
        """Seconds to wait before the next attempt, or ``None``: give up.

        The very first fast attempt is immediate; every other wait has jitter, and no
        wait ends before ``cooldown_remaining_s``.
        """
        policy = self.policy
        if self._fast_done < self._fast_total:
            wait = 0.0 if self._fast_done == 0 else policy.fast_interval_s + self._jitter()
            self._fast_done += 1
        elif self._backoff_done < policy.backoff_attempts:
            self._backoff_done += 1
            wait = policy.backoff_base_s**self._backoff_done + self._jitter()
        else:
            return None
        self.attempts += 1
        return max(wait, cooldown_remaining_s)
