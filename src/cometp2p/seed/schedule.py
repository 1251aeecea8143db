"""When to visit a node again, and which verified peers to hand out (sans-IO).

Pure functions of their inputs: no clock, no IO, randomness passed in. The seed service
(:mod:`cometp2p.seed.service`) and ``cometp2p crawl --rounds`` call them; the SQLite store
(:mod:`cometp2p.seed.store`) keeps the counters they read.

Revisit schedule:

* a node whose last PEX answer still taught us new node IDs is asked again after
  ``min_interval_s`` (CometBFT accepts one request per connection plus one more, and
  at most one per ``ensure_peers_period / 3`` = 10 s after that; each visit of ours is
  one fresh connection with one ``PexRequest``, and never comes sooner than that
  interval), until ``dry_rounds`` answers in a row brought nothing new: a node with a
  large address book reveals a random selection per answer;
* a node that is new, or flaky (its status changed recently), is revisited every
  ``new_interval_s``;
* a node that keeps answering is revisited less and less often: ``new_interval_s``
  doubled per consecutive success, up to ``stable_interval_s``;
* a node that keeps failing backs off the same way up to ``failed_interval_s``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from cometp2p.errors import ConfigError
from cometp2p.wire.netaddress import NetAddress

__all__ = ["NodeCounters", "SchedulePolicy", "next_visit_delay", "select_verified"]


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """How often nodes are revisited, and what counts as "verified recently".

    Attributes:
        min_interval_s: never visit one node more often than this (seconds).
        new_interval_s: the interval for new and flaky nodes (seconds).
        stable_interval_s: the longest interval for a node that keeps answering.
        failed_interval_s: the longest interval for a node that keeps failing.
        dry_rounds: PEX answers in a row without a new node ID after which a node is no
            longer re-asked early.
        flaky_after: status changes after which a node counts as flaky (kept at
            ``new_interval_s`` until it has been up ``flaky_after`` times in a row).
        fresh_s: a node is handed out only if its last successful handshake is at most
            this old (seconds); default ``2 * stable_interval_s``.

    Raises:
        ConfigError: a negative interval, or intervals out of order.
    """

    min_interval_s: float = 10.0
    new_interval_s: float = 30.0
    stable_interval_s: float = 600.0
    failed_interval_s: float = 3600.0
    dry_rounds: int = 3
    flaky_after: int = 3
    fresh_s: float | None = None

    def __post_init__(self) -> None:
        if self.min_interval_s < 0 or self.new_interval_s < self.min_interval_s:
            raise ConfigError("schedule: need 0 <= min_interval_s <= new_interval_s")
        if self.stable_interval_s < self.new_interval_s:
            raise ConfigError("schedule: need new_interval_s <= stable_interval_s")
        if self.failed_interval_s < self.new_interval_s:
            raise ConfigError("schedule: need new_interval_s <= failed_interval_s")
        if self.dry_rounds < 1 or self.flaky_after < 1:
            raise ConfigError("schedule: dry_rounds and flaky_after must be >= 1")

    @property
    def freshness_s(self) -> float:
        """The age (seconds) past which a verification no longer counts."""
        return self.fresh_s if self.fresh_s is not None else 2 * self.stable_interval_s


@dataclass(frozen=True, slots=True)
class NodeCounters:
    """What the schedule reads about one node after a visit.

    Attributes:
        reachable: the visit's outcome.
        successes: consecutive successful visits (this one included).
        failures: consecutive failed visits (this one included).
        flaps: status changes (up to down or back) seen so far.
        pex_dry: consecutive PEX answers that brought no new node ID.
        pex_answered: whether this visit got a PEX answer.
    """

    reachable: bool
    successes: int
    failures: int
    flaps: int
    pex_dry: int
    pex_answered: bool


def _backoff(base: float, count: int, cap: float) -> float:
    if count <= 1:
        return base
    return min(cap, base * 2.0 ** min(count - 1, 60))


def next_visit_delay(policy: SchedulePolicy, node: NodeCounters) -> float:
    """Seconds until ``node`` is due again, after the visit ``node`` describes."""
    if not node.reachable:
        return _backoff(policy.new_interval_s, node.failures, policy.failed_interval_s)
    if node.pex_answered and node.pex_dry < policy.dry_rounds:
        return policy.min_interval_s
    if node.flaps >= policy.flaky_after and node.successes < policy.flaky_after:
        return policy.new_interval_s
    return _backoff(policy.new_interval_s, node.successes, policy.stable_interval_s)


def select_verified(
    candidates: Sequence[tuple[NetAddress, float]],
    n: int,
    *,
    fresh_s: float,
    rng: random.Random,
) -> list[NetAddress]:
    """Pick up to ``n`` addresses, favouring recent verification and diverse groups.

    Args:
        candidates: ``(address, age_s)``: a verified address and the seconds since its
            last successful handshake (only fresh ones should be passed).
        n: how many to return (at most ``len(candidates)``).
        fresh_s: the freshness window; weights fall from 1 (just verified) to 1/2 (at
            the edge of the window).
        rng: the randomness.

    Returns:
        Distinct addresses: a weighted random order inside each address-book group
        (behaviour.md §5.3, non-strict), taken round-robin across groups so that no group
        gets a second address before every group has one.
    """
    if n <= 0 or not candidates:
        return []
    groups: dict[str, list[tuple[float, NetAddress]]] = {}
    for addr, age_s in candidates:
        weight = 1.0 / (1.0 + max(0.0, age_s) / max(fresh_s, 1e-9))
        # Efraimidis-Spirakis: sorting by u ** (1 / w) draws a weighted random order.
        key = rng.random() ** (1.0 / weight)
        groups.setdefault(addr.group_key(False), []).append((key, addr))
    for members in groups.values():
        members.sort(key=lambda item: item[0], reverse=True)
    order = sorted(groups.values(), key=lambda members: members[0][0], reverse=True)
    picked: list[NetAddress] = []
    depth = 0
    while len(picked) < n:
        took = False
        for members in order:
            if depth < len(members):
                picked.append(members[depth][1])
                took = True
                if len(picked) == n:
                    break
        if not took:
            break
        depth += 1
    return picked


INFINITE: float = math.inf
"""An interval meaning "not again" (``crawl --rounds`` uses it for settled nodes)."""
