"""One entry of the AddrBook: :class:`KnownAddress`, its bucket kind and when it is bad.

Implements behaviour.md §5.2 and the eviction test of §5.7 (CometBFT v0.38
``p2p/pex/known_address.go``). Pure values: no IO, no clock; time comes in as ``now``.
:mod:`cometp2p.pex.addrbook` re-exports every public name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

__all__ = [
    "MAX_FAILURES",
    "MIN_BAD_DAYS",
    "NUM_MISSING_DAYS",
    "NUM_RETRIES",
    "ZERO_TIME",
    "BadCutoffs",
    "BucketType",
    "KnownAddress",
]

# behaviour.md §5.1
NUM_MISSING_DAYS: Final = 7
NUM_RETRIES: Final = 3
MAX_FAILURES: Final = 10
MIN_BAD_DAYS: Final = 7

ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time`` ("never"), used for ``last_success`` and ``last_ban_time``."""

_RECENT_ATTEMPT: Final = timedelta(minutes=1)
_MISSING: Final = timedelta(days=NUM_MISSING_DAYS)
_MIN_BAD: Final = timedelta(days=MIN_BAD_DAYS)


class BucketType(enum.IntEnum):
    """Bucket kind, with CometBFT's codes as saved in ``bucket_type`` (behaviour.md §5.1)."""

    NEW = 1
    OLD = 2


@dataclass(frozen=True, slots=True)
class BadCutoffs:
    """The instants :meth:`KnownAddress.is_bad` compares against, for one ``now``.

    Attributes:
        recent: ``now - 1 min``: attempted after it, never bad.
        missing: ``now - 7 days``: attempted before it, bad.
        min_bad: ``now - 7 days``: not succeeded since, with >= 10 attempts, bad.
    """

    recent: datetime
    missing: datetime
    min_bad: datetime

    @classmethod
    def at(cls, now: datetime) -> BadCutoffs:
        return cls(now - _RECENT_ATTEMPT, now - _MISSING, now - _MIN_BAD)


@dataclass(frozen=True, slots=True)
class KnownAddress:
    """One entry of the book (behaviour.md §5.2); immutable, the book swaps in new copies.

    Attributes:
        addr: the peer's address; its ID is the book key.
        src: the address of the peer that told us about it.
        buckets: bucket indices it occupies: 1..4 distinct new buckets, or exactly one old.
        attempts: failed dial attempts since the last success (int32 in the file).
        bucket_type: :class:`BucketType`.
        last_attempt: creation time, then every attempt and success (aware, UTC).
        last_success: last :meth:`AddrBook.mark_good`, or :data:`ZERO_TIME`.
        last_ban_time: ban expiry, or :data:`ZERO_TIME`; banned while in the future.
    """

    addr: NetAddress
    src: NetAddress
    buckets: tuple[int, ...]
    attempts: int
    bucket_type: BucketType
    last_attempt: datetime
    last_success: datetime = ZERO_TIME
    last_ban_time: datetime = ZERO_TIME

    @property
    def id(self) -> NodeID:
        """The node ID (the book key)."""
        return self.addr.id

    @property
    def is_new(self) -> bool:
        """True if the entry lives in new buckets (never vetted)."""
        return self.bucket_type is BucketType.NEW

    @property
    def is_old(self) -> bool:
        """True if the entry lives in an old bucket (we once connected to it)."""
        return self.bucket_type is BucketType.OLD

    def is_bad(self, now: datetime) -> bool:
        """CometBFT's ``isBad``: may this new entry be evicted first (behaviour.md §5.7)?

        Bad iff new, not attempted within the last minute, and either last attempted more
        than 7 days ago, or never succeeded with ≥ 3 attempts, or not succeeded for 7 days
        with ≥ 10 attempts. Old entries are never bad. "From the future" is not checked.
        """
        return self.is_bad_before(BadCutoffs.at(now))

    def is_bad_before(self, cutoffs: BadCutoffs) -> bool:
        """:meth:`is_bad` with the three time thresholds computed once (for scans)."""
        if self.bucket_type is BucketType.OLD:
            return False
        if self.last_attempt > cutoffs.recent:
            return False
        if self.last_attempt < cutoffs.missing:
            return True
        if self.last_success == ZERO_TIME and self.attempts >= NUM_RETRIES:
            return True
        return self.last_success < cutoffs.min_bad and self.attempts >= MAX_FAILURES

    def is_banned(self, now: datetime) -> bool:
        """True while the ban expiry lies after ``now``."""
        return self.last_ban_time > now
