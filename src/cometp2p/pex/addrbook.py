"""The AddrBook: known peer addresses in new/old buckets, and how to pick among them.

Implements behaviour.md §5 (CometBFT v0.38 ``p2p/pex/addrbook.go``) and the admission rules of
§4.8, as a pure object: no IO, no event loop, no wall clock and no global ``random``. Time is
passed in as ``now`` (an aware :class:`~datetime.datetime`) and randomness comes from the
injected :class:`random.Random`, so a seeded book replays exactly. Persistence lives in
:mod:`cometp2p.pex.addrbook_store`.

Deliberate differences from the Go reference (behaviour.md §5.13):

* Q5.1: a bucket holds at most 64 entries (Go lets a bucket reach 65).
* Q5.2: an entry pushed out of a full old bucket is turned back into a *new* entry and kept
  (Go drops it).
* Q5.3: a banned entry that was old is reinstated as a new entry (Go loses it).
* Q5.4: re-offering a known ID with a *different* IP or port is ignored; only a re-offer of the
  same address can earn the entry another new bucket (Go counts the stranger's address, and
  its network group, towards the vetted entry's placement).
* Q5.5: :meth:`AddrBook.is_good` on an unknown address is ``False`` (Go crashes).
* Q5.6 kept: the 32-byte bucket hash key is secret, drawn from :mod:`secrets` (the OS CSPRNG)
  for each book and never persisted; entries loaded from disk keep their saved bucket
  indices. A fresh persisted ``key`` comes from :mod:`secrets` too. The injected ``rng``
  only makes choices (selection, eviction, bias), so a peer that learns or seeds it cannot
  predict bucket placement.
* Node IDs are compared in lowercase (an uppercase spelling of a known ID is the same node).
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from cometp2p.errors import LocalProtocolError, NetAddressError
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, validate_node_id

__all__ = [
    "BAN_TIME_S",
    "MAX_GET_SELECTION",
    "NEED_ADDRESS_THRESHOLD",
    "NEW_BUCKET_COUNT",
    "NEW_BUCKET_SIZE",
    "OLD_BUCKET_COUNT",
    "OLD_BUCKET_SIZE",
    "ZERO_TIME",
    "AddResult",
    "AddrBook",
    "BucketType",
    "KnownAddress",
    "selection_size",
]

# behaviour.md §5.1
NEED_ADDRESS_THRESHOLD: Final = 1000
NEW_BUCKET_COUNT: Final = 256
NEW_BUCKET_SIZE: Final = 64
OLD_BUCKET_COUNT: Final = 64
OLD_BUCKET_SIZE: Final = 64
NEW_BUCKETS_PER_GROUP: Final = 32
OLD_BUCKETS_PER_GROUP: Final = 4
MAX_NEW_BUCKETS_PER_ADDRESS: Final = 4
NUM_MISSING_DAYS: Final = 7
NUM_RETRIES: Final = 3
MAX_FAILURES: Final = 10
MIN_BAD_DAYS: Final = 7
GET_SELECTION_PERCENT: Final = 23
MIN_GET_SELECTION: Final = 32
MAX_GET_SELECTION: Final = 250
BAN_TIME_S: Final = 24 * 3600.0
"""``defaultBanTime`` of the PEX reactor (behaviour.md §4.1), in seconds."""

KEY_HEX_CHARS: Final = 24
"""Length of the persisted book ``key`` (96 random bits as lowercase hex)."""
HASH_KEY_BYTES: Final = 32

ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time`` ("never"), used for ``last_success`` and ``last_ban_time``."""
_MAX_TIME: Final = datetime.max.replace(tzinfo=UTC)

_KEY_RE: Final = re.compile(r"[0-9a-f]{24}")
_RECENT_ATTEMPT: Final = timedelta(minutes=1)
_MISSING: Final = timedelta(days=NUM_MISSING_DAYS)
_MIN_BAD: Final = timedelta(days=MIN_BAD_DAYS)
# Random bucket draws before falling back to scanning for non-empty buckets; the fallback
# keeps pick_address fast on a nearly empty book without changing the distribution.
_PICK_DRAWS: Final = 32


class BucketType(enum.IntEnum):
    """Bucket kind, with CometBFT's codes as saved in ``bucket_type`` (behaviour.md §5.1)."""

    NEW = 1
    OLD = 2


class AddResult(enum.Enum):
    """What :meth:`AddrBook.add_address` did with an acceptable address (behaviour.md §5.5)."""

    ADDED = "added as a new entry"
    BUCKET_ADDED = "known entry placed in one more new bucket"
    ALREADY_IN_BUCKET = "known entry already in the computed bucket"
    IGNORED_OLD = "ID already vetted (old); ignored"
    IGNORED_MAX_BUCKETS = "entry already in 4 new buckets; ignored"
    IGNORED_CHANCE = "lost the 1/(2n) re-add draw; ignored"
    IGNORED_OTHER_ADDRESS = "ID known with another IP or port; ignored"


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


def selection_size(size: int) -> int:
    """How many addresses one PEX answer carries for a book of ``size`` (behaviour.md §5.9).

    ``min(250, max(min(32, size), size * 23 // 100))``: 10 → 10, 100 → 32, 1000 → 230,
    1087 and more → 250.
    """
    if size <= 0:
        return 0
    n = max(min(MIN_GET_SELECTION, size), size * GET_SELECTION_PERCENT // 100)
    return min(MAX_GET_SELECTION, n)


def _go_round(x: float) -> int:
    """Go's ``math.Round`` for x ≥ 0: halves away from zero (Python rounds halves to even)."""
    floor = math.floor(x)
    return floor + 1 if x - floor >= 0.5 else floor


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise LocalProtocolError(f"expected an aware datetime for now, got naive {now!r}")
    if now.tzinfo is UTC:
        return now
    return now.astimezone(UTC)


def _clamp_bias(bias_new: int) -> int:
    return min(100, max(0, bias_new))


class AddrBook:
    """CometBFT's address book as a pure object (behaviour.md §5).

    Entries are keyed by node ID. Unvetted addresses live in up to 4 of 256 *new* buckets,
    addresses we have connected to in one of 64 *old* buckets; each bucket holds at most 64
    entries. Bucket placement hashes network groups with a keyed 64-bit PRF so that one source
    group can reach only 32 new buckets and one address group only 4 old buckets.

    All methods taking ``now`` need an aware datetime (converted to UTC); none of them blocks
    or performs IO. The book is not thread-safe; drive it from one task.
    """

    __slots__ = (
        "_bad",
        "_group_cache",
        "_hash_key",
        "_key",
        "_key_bytes",
        "_lookup",
        "_n_new",
        "_n_old",
        "_new",
        "_old",
        "_our_addrs",
        "_our_ids",
        "_private_ids",
        "_rng",
        "_strict",
    )

    def __init__(
        self,
        key: str | None = None,
        *,
        strict: bool,
        rng: random.Random,
        hash_key: bytes | None = None,
    ) -> None:
        """Create an empty book.

        Args:
            key: the persisted book key, 24 lowercase hex characters; a fresh one from
                :mod:`secrets` when ``None``.
            strict: ``addr_book_strict`` from config.toml (CometBFT default ``true``):
                refuse non-routable addresses and group them as "local"/"unroutable".
            rng: the source of every random *choice* (never of a key).
            hash_key: the secret 32-byte bucket hash key; from :mod:`secrets` when
                ``None`` (give one only to reproduce a placement in tests).

        Raises:
            LocalProtocolError: if ``key`` is not 24 lowercase hex characters, or
                ``hash_key`` is not 32 bytes.
        """
        if key is None:
            key = secrets.token_hex(KEY_HEX_CHARS // 2)
        elif _KEY_RE.fullmatch(key) is None:
            raise LocalProtocolError(
                f"address book key: expected {KEY_HEX_CHARS} lowercase hex characters, got {key!r}"
            )
        self._key = key
        self._key_bytes = key.encode("ascii")
        self._strict = strict
        self._rng = rng
        if hash_key is None:
            hash_key = secrets.token_bytes(HASH_KEY_BYTES)
        elif len(hash_key) != HASH_KEY_BYTES:
            raise LocalProtocolError(
                f"address book hash key: expected {HASH_KEY_BYTES} bytes, got {len(hash_key)}"
            )
        self._hash_key = bytes(hash_key)
        self._lookup: dict[NodeID, KnownAddress] = {}
        # Buckets are insertion-ordered sets of IDs; the entries themselves live in _lookup.
        self._new: list[dict[NodeID, None]] = [{} for _ in range(NEW_BUCKET_COUNT)]
        self._old: list[dict[NodeID, None]] = [{} for _ in range(OLD_BUCKET_COUNT)]
        self._n_new = 0
        self._n_old = 0
        self._bad: dict[NodeID, KnownAddress] = {}
        self._our_addrs: set[str] = set()
        self._our_ids: set[NodeID] = set()
        self._private_ids: set[str] = set()
        self._group_cache: dict[NetAddress, str] = {}

    # -- properties and queries ---------------------------------------------------------

    @property
    def key(self) -> str:
        """The persisted book key (24 hex characters), mixed into every bucket hash."""
        return self._key

    @property
    def strict(self) -> bool:
        """``addr_book_strict``: routability enforced on insert and in group keys."""
        return self._strict

    @property
    def n_new(self) -> int:
        """Number of distinct entries in new buckets."""
        return self._n_new

    @property
    def n_old(self) -> int:
        """Number of distinct entries in old buckets."""
        return self._n_old

    def size(self) -> int:
        """Number of known (not banned) entries: ``n_new + n_old``."""
        return self._n_new + self._n_old

    def __len__(self) -> int:
        return self._n_new + self._n_old

    def empty(self) -> bool:
        """True when the book knows no address."""
        return self._n_new + self._n_old == 0

    def need_more_addrs(self) -> bool:
        """True while the book holds fewer than 1000 addresses (behaviour.md §5.1)."""
        return self._n_new + self._n_old < NEED_ADDRESS_THRESHOLD

    def has_address(self, addr: NetAddress) -> bool:
        """True if ``addr``'s ID is known (whatever its IP)."""
        return addr.id.lower() in self._lookup

    def is_good(self, addr: NetAddress) -> bool:
        """True if ``addr``'s ID is in an old bucket; False if unknown (fixes Q5.5)."""
        ka = self._lookup.get(NodeID(addr.id.lower()))
        return ka is not None and ka.bucket_type is BucketType.OLD

    def is_banned(self, addr: NetAddress) -> bool:
        """True if ``addr``'s ID is on the ban list, expired or not (until reinstated)."""
        return addr.id.lower() in self._bad

    def get(self, node_id: str) -> KnownAddress | None:
        """The entry for ``node_id``, or ``None``."""
        return self._lookup.get(NodeID(node_id.lower()))

    def __iter__(self) -> Iterator[KnownAddress]:
        """Iterate over a snapshot of the known entries (new and old, not banned)."""
        return iter(list(self._lookup.values()))

    def known_addresses(self) -> list[KnownAddress]:
        """A snapshot list of the known entries (new and old, not banned)."""
        return list(self._lookup.values())

    def bad_peers(self) -> list[KnownAddress]:
        """A snapshot list of banned entries (not persisted, not counted in :meth:`size`)."""
        return list(self._bad.values())

    def bucket(self, bucket_type: BucketType, index: int) -> tuple[NodeID, ...]:
        """The IDs in one bucket, in insertion order.

        Raises:
            LocalProtocolError: if ``index`` is out of range for ``bucket_type``.
        """
        return tuple(self._bucket(bucket_type, index))

    # -- our own and private addresses ------------------------------------------------

    def add_our_address(self, addr: NetAddress) -> None:
        """Remember ``addr`` (exact ``id@ip:port``) as ours; it will never be added.

        Its ID is registered as ours too (:meth:`add_our_id`).
        """
        self._our_addrs.add(str(_normalise_id(addr)))
        self.add_our_id(addr.id)

    def add_our_id(self, node_id: str) -> None:
        """Remember ``node_id`` as ours: no address with it is ever stored (so none is ever
        gossiped), whatever its IP and port, and an entry already held (say, from an old
        addrbook.json) is dropped now.

        Go refuses only our exact addresses; an address with our ID and another IP or
        port (a NAT, a second interface, a lie) would be stored and gossiped (issue #12).
        """
        our_id = NodeID(node_id.lower())
        self._our_ids.add(our_id)
        ka = self._lookup.get(our_id)
        if ka is not None:
            self._remove_from_all_buckets(ka)

    def our_address(self, addr: NetAddress) -> bool:
        """True if ``addr`` (exact ``id@ip:port``) was registered as ours."""
        return str(_normalise_id(addr)) in self._our_addrs

    def add_private_ids(self, ids: Iterable[str]) -> None:
        """Never store addresses with these IDs, nor addresses they tell us about."""
        self._private_ids.update(i.lower() for i in ids)

    # -- bucket placement (behaviour.md §5.3, §5.4) --------------------------------------

    def _hash(self, data: bytes) -> int:
        digest = hashlib.blake2b(data, digest_size=8, key=self._hash_key).digest()
        return int.from_bytes(digest, "big")

    def _group(self, addr: NetAddress) -> str:
        group = self._group_cache.get(addr)
        if group is None:
            if len(self._group_cache) >= 65536:  # bound the memo during long crawls
                self._group_cache.clear()
            group = addr.group_key(self._strict)
            self._group_cache[addr] = group
        return group

    def new_bucket_index(self, addr: NetAddress, src: NetAddress) -> int:
        """The new bucket ``addr`` goes to when ``src`` tells us about it (0..255)."""
        src_group = self._group(src).encode()
        h1 = self._hash(self._key_bytes + self._group(addr).encode() + src_group)
        h1 %= NEW_BUCKETS_PER_GROUP
        return self._hash(self._key_bytes + src_group + h1.to_bytes(8, "big")) % NEW_BUCKET_COUNT

    def old_bucket_index(self, addr: NetAddress) -> int:
        """The old bucket ``addr`` goes to once vetted (0..63)."""
        h1 = self._hash(self._key_bytes + str(addr).encode()) % OLD_BUCKETS_PER_GROUP
        data = self._key_bytes + self._group(addr).encode() + h1.to_bytes(8, "big")
        return self._hash(data) % OLD_BUCKET_COUNT

    # -- insertion (behaviour.md §5.5) ---------------------------------------------------

    def add_address(
        self, addr: NetAddress | None, src: NetAddress | None, now: datetime
    ) -> AddResult:
        """Offer ``addr``, learnt from ``src``; the only way addresses enter the book.

        A new ID gets a new entry in the new bucket computed from (addr, src). A known new
        entry with the *same* address may gain one more new bucket (at most 4) with
        probability 1/(2·n), n its current bucket count. Known old entries, and known IDs
        offered with another IP or port, are left alone.

        Args:
            addr: the offered address.
            src: the address of the peer that offered it (for an inbound peer, itself).
            now: current time (aware).

        Returns:
            What happened, as an :class:`AddResult`.

        Raises:
            AddrBookError: with reason NIL (addr or src missing), INVALID (bad ID, or IP
                unspecified, documentation or broadcast; or a source without a valid ID),
                BANNED, PRIVATE, PRIVATE_SRC, SELF (our ID or one of our addresses) or
                NON_ROUTABLE (strict book only).
            LocalProtocolError: if ``now`` is naive.
        """
        now = _utc(now)
        if addr is None or src is None:
            raise AddrBookError(
                AddrBookErrorReason.NIL, f"expected an address and a source, got {addr}, {src}"
            )
        if not addr.valid():
            raise AddrBookError(AddrBookErrorReason.INVALID, str(addr), addr, src)
        try:
            # Sources come from handshaken NodeInfos, so their IDs are valid in practice;
            # checking keeps every stored entry loadable from addrbook.json.
            validate_node_id(src.id)
        except NetAddressError as exc:
            raise AddrBookError(
                AddrBookErrorReason.INVALID, f"source of {addr}: {exc}", addr, src
            ) from exc
        addr = _normalise_id(addr)
        src = _normalise_id(src)
        node_id = addr.id
        if node_id in self._bad:
            raise AddrBookError(AddrBookErrorReason.BANNED, str(addr), addr, src)
        if node_id in self._private_ids:
            raise AddrBookError(AddrBookErrorReason.PRIVATE, str(addr), addr, src)
        if src.id in self._private_ids:
            raise AddrBookError(AddrBookErrorReason.PRIVATE_SRC, f"{addr} from {src}", addr, src)
        if node_id in self._our_ids or str(addr) in self._our_addrs:
            raise AddrBookError(AddrBookErrorReason.SELF, str(addr), addr, src)
        if self._strict and not addr.routable():
            raise AddrBookError(AddrBookErrorReason.NON_ROUTABLE, str(addr), addr, src)

        ka = self._lookup.get(node_id)
        if ka is None:
            ka = KnownAddress(addr, src, (), 0, BucketType.NEW, now)
            result = AddResult.ADDED
        else:
            if ka.bucket_type is BucketType.OLD:
                return AddResult.IGNORED_OLD
            if ka.addr != addr:
                return AddResult.IGNORED_OTHER_ADDRESS
            n = len(ka.buckets)
            if n >= MAX_NEW_BUCKETS_PER_ADDRESS:
                return AddResult.IGNORED_MAX_BUCKETS
            if self._rng.randrange(2 * n) != 0:
                return AddResult.IGNORED_CHANCE
            result = AddResult.BUCKET_ADDED
        index = self.new_bucket_index(addr, src)
        if index in ka.buckets:
            return AddResult.ALREADY_IN_BUCKET
        self._add_to_new_bucket(ka, index, now)
        return result

    def restore(self, ka: KnownAddress) -> None:
        """Put a saved entry back exactly where it was (used by the store when loading).

        Raises:
            AddrBookError: reason BAD_ENTRY if the entry is invalid, its ID is already
                known or banned, its buckets do not fit its type (1..4 distinct new
                buckets in 0..255, or one old bucket in 0..63), or a bucket is full.
        """

        def bad(why: str) -> AddrBookError:
            return AddrBookError(
                AddrBookErrorReason.BAD_ENTRY, f"{ka.addr}: {why}", ka.addr, ka.src
            )

        if not ka.addr.valid():
            raise bad("invalid address")
        if ka.addr.id != ka.addr.id.lower():
            ka = replace(ka, addr=_normalise_id(ka.addr))
        if ka.id in self._lookup or ka.id in self._bad:
            raise bad("duplicate ID")
        if ka.last_attempt.tzinfo is None or ka.last_success.tzinfo is None:
            raise bad("naive timestamp")
        if ka.last_ban_time.tzinfo is None:
            raise bad("naive timestamp")
        if not 0 <= ka.attempts < 2**31:
            raise bad(f"expected attempts in 0..2^31-1, got {ka.attempts}")
        buckets = ka.buckets
        if len(set(buckets)) != len(buckets):
            raise bad(f"duplicate bucket index in {list(buckets)}")
        if ka.bucket_type is BucketType.NEW:
            limit, count, table = NEW_BUCKET_SIZE, NEW_BUCKET_COUNT, self._new
            if not 1 <= len(buckets) <= MAX_NEW_BUCKETS_PER_ADDRESS:
                raise bad(f"a new entry needs 1..4 buckets, got {list(buckets)}")
        elif ka.bucket_type is BucketType.OLD:
            limit, count, table = OLD_BUCKET_SIZE, OLD_BUCKET_COUNT, self._old
            if len(buckets) != 1:
                raise bad(f"an old entry needs exactly 1 bucket, got {list(buckets)}")
        else:  # pragma: no cover - BucketType has two members
            raise bad(f"unknown bucket type {ka.bucket_type!r}")
        for index in buckets:
            if not 0 <= index < count:
                raise bad(f"bucket index {index} out of range 0..{count - 1}")
            if len(table[index]) >= limit:
                raise bad(f"bucket {index} already holds {limit} entries")
        for index in buckets:
            table[index][ka.id] = None
        if ka.bucket_type is BucketType.NEW:
            self._n_new += 1
        else:
            self._n_old += 1
        self._lookup[ka.id] = ka

    # -- marks (behaviour.md §5.6) -------------------------------------------------------

    def mark_good(self, node_id: str, now: datetime) -> None:
        """We connected to ``node_id`` and it behaved: reset attempts, move it to an old bucket.

        If that old bucket is full, its entry with the oldest ``last_attempt`` becomes a new
        entry again (kept, unlike Go, Q5.2). Unknown IDs are ignored.

        Raises:
            LocalProtocolError: if ``now`` is naive.
        """
        now = _utc(now)
        ka = self._lookup.get(NodeID(node_id.lower()))
        if ka is None:
            return
        ka = replace(ka, attempts=0, last_attempt=now, last_success=now)
        self._lookup[ka.id] = ka
        if ka.bucket_type is BucketType.NEW:
            self._move_to_old(ka, now)

    def mark_attempt(self, addr: NetAddress, now: datetime) -> None:
        """A dial to ``addr``'s ID failed: attempts += 1, ``last_attempt = now``.

        Raises:
            LocalProtocolError: if ``now`` is naive.
        """
        now = _utc(now)
        ka = self._lookup.get(NodeID(addr.id.lower()))
        if ka is not None:
            self._lookup[ka.id] = replace(ka, attempts=ka.attempts + 1, last_attempt=now)

    def mark_bad(self, addr: NetAddress, ban_duration_s: float, now: datetime) -> bool:
        """Ban ``addr``'s ID for ``ban_duration_s`` seconds and take it out of the buckets.

        Only IDs in the book are banned; the ban expiry only ever moves later.

        Args:
            addr: the offending address (matched by ID).
            ban_duration_s: ban length in seconds (PEX uses 86 400).
            now: current time (aware).

        Returns:
            True if the ID was known and is now on the ban list.

        Raises:
            LocalProtocolError: if ``now`` is naive or ``ban_duration_s`` is NaN.
        """
        now = _utc(now)
        if math.isnan(ban_duration_s):
            raise LocalProtocolError("ban_duration_s: expected a number of seconds, got NaN")
        ka = self._lookup.get(NodeID(addr.id.lower()))
        if ka is None:
            return False
        try:
            until = now + timedelta(seconds=ban_duration_s)
        except OverflowError:
            until = _MAX_TIME if ban_duration_s > 0 else ZERO_TIME
        self._remove_from_all_buckets(ka)
        if until > ka.last_ban_time:
            ka = replace(ka, last_ban_time=until)
        self._bad[ka.id] = replace(ka, buckets=())
        return True

    def reinstate_bad_peers(self, now: datetime) -> list[NetAddress]:
        """Put every banned entry whose ban has expired back into a new bucket.

        The entry returns as *new* whatever it was when banned (fixes Q5.3).

        Returns:
            The reinstated addresses.

        Raises:
            LocalProtocolError: if ``now`` is naive.
        """
        now = _utc(now)
        expired = [ka for ka in self._bad.values() if not ka.is_banned(now)]
        for ka in expired:
            del self._bad[ka.id]
            fresh = replace(ka, buckets=(), bucket_type=BucketType.NEW)
            self._add_to_new_bucket(fresh, self.new_bucket_index(ka.addr, ka.src), now)
        return [ka.addr for ka in expired]

    def remove_address(self, addr: NetAddress) -> None:
        """Forget ``addr``'s ID (whatever its IP); unknown IDs are ignored."""
        ka = self._lookup.get(NodeID(addr.id.lower()))
        if ka is not None:
            self._remove_from_all_buckets(ka)

    # -- selection (behaviour.md §5.8-§5.10) ---------------------------------------------

    def pick_address(self, bias_new: int) -> NetAddress | None:
        """Pick a dial candidate, favouring new entries by ``bias_new`` percent (0..100).

        Old vs new is chosen with weights ``sqrt(n_old)·(100-bias)`` and
        ``sqrt(n_new)·bias``; then a uniformly random non-empty bucket of that kind, then a
        uniformly random entry of it (so an entry in 4 new buckets is likelier). The result
        may already be connected; the caller filters.

        Returns:
            An address, or ``None`` if the book is empty or the chosen kind has no entry.
        """
        if self._n_new + self._n_old == 0:
            return None
        bias = _clamp_bias(bias_new)
        w_old = math.sqrt(self._n_old) * (100 - bias)
        w_new = math.sqrt(self._n_new) * bias
        pick_old = (w_old + w_new) * self._rng.random() < w_old
        if pick_old:
            if self._n_old == 0:
                return None
            buckets = self._old
        else:
            if self._n_new == 0:
                return None
            buckets = self._new
        rng = self._rng
        chosen: dict[NodeID, None] | None = None
        for _ in range(_PICK_DRAWS):
            candidate = buckets[rng.randrange(len(buckets))]
            if candidate:
                chosen = candidate
                break
        if chosen is None:
            chosen = rng.choice([b for b in buckets if b])
        ids = list(chosen)
        return self._lookup[ids[rng.randrange(len(ids))]].addr

    def get_selection(self) -> list[NetAddress]:
        """A random sample of known addresses (new and old) to answer a PEX request.

        The sample size is :func:`selection_size` of the book size (10 → 10, 100 → 32,
        1000 → 230, ≥ 1087 → 250), every subset equally likely, in random order.
        """
        entries = list(self._lookup.values())
        n = selection_size(len(entries))
        return [ka.addr for ka in self._rng.sample(entries, n)]

    def get_selection_with_bias(self, bias_new: int) -> list[NetAddress]:
        """A sample for seed answers: about ``bias_new`` percent new, the rest old.

        Takes ``max(round(bias·n/100), n - n_old)`` new addresses first (fewer if the book
        has fewer), then fills up to ``n`` with old ones; ``n`` as in :meth:`get_selection`.
        New addresses are drawn with weight equal to their bucket count, as in CometBFT.
        """
        size = self._n_new + self._n_old
        n = selection_size(size)
        if n == 0:
            return []
        bias = _clamp_bias(bias_new)
        need_new = max(_go_round(bias / 100 * n), n - self._n_old)
        selection = self._random_pick(self._new, need_new)
        selection += self._random_pick(self._old, n - len(selection))
        return selection

    def _random_pick(self, buckets: list[dict[NodeID, None]], count: int) -> list[NetAddress]:
        """Up to ``count`` distinct entries: CometBFT shuffles every bucket slot and keeps
        first occurrences. Reading a partial Fisher-Yates shuffle slot by slot, stopping
        once ``count`` are found, gives the same distribution without shuffling it all."""
        if count <= 0:
            return []
        slots = [node_id for bucket in buckets for node_id in bucket]
        randbelow = self._rng.randrange
        chosen: dict[NodeID, None] = {}
        total = len(slots)
        for i in range(total):
            j = i + randbelow(total - i)
            slots[i], slots[j] = slots[j], slots[i]
            chosen[slots[i]] = None
            if len(chosen) >= count:
                break
        return [self._lookup[node_id].addr for node_id in chosen]

    # -- bucket mechanics -----------------------------------------------------------------

    def _bucket(self, bucket_type: BucketType, index: int) -> dict[NodeID, None]:
        table = self._new if bucket_type is BucketType.NEW else self._old
        if not 0 <= index < len(table):
            raise LocalProtocolError(
                f"{bucket_type.name.lower()} bucket index: expected 0..{len(table) - 1}, "
                f"got {index}"
            )
        return table[index]

    def _add_to_new_bucket(self, ka: KnownAddress, index: int, now: datetime) -> None:
        """Add new entry ``ka`` (not yet in bucket ``index``) there, evicting if full."""
        bucket = self._new[index]
        if len(bucket) >= NEW_BUCKET_SIZE:
            self._expire_new(index, now)
        bucket[ka.id] = None
        if not ka.buckets:
            self._n_new += 1
        self._lookup[ka.id] = replace(ka, buckets=(*ka.buckets, index))

    def _expire_new(self, index: int, now: datetime) -> None:
        """Drop one reference from full new bucket ``index``: the first bad entry, else the
        least recently attempted one."""
        bucket = self._new[index]
        lookup = self._lookup
        cutoffs = BadCutoffs.at(now)  # once per scan, not once per entry
        victim: KnownAddress | None = None  # one pass: the first bad one, else the stalest
        for node_id in bucket:
            ka = lookup[node_id]
            if ka.is_bad_before(cutoffs):
                victim = ka
                break
            if victim is None or ka.last_attempt < victim.last_attempt:
                victim = ka
        if victim is not None:
            self._remove_from_new_bucket(victim, index)

    def _remove_from_new_bucket(self, ka: KnownAddress, index: int) -> None:
        del self._new[index][ka.id]
        remaining = tuple(b for b in ka.buckets if b != index)
        if remaining:
            self._lookup[ka.id] = replace(ka, buckets=remaining)
        else:
            self._n_new -= 1
            del self._lookup[ka.id]

    def _remove_from_all_buckets(self, ka: KnownAddress) -> None:
        table = self._new if ka.bucket_type is BucketType.NEW else self._old
        for index in ka.buckets:
            del table[index][ka.id]
        if ka.bucket_type is BucketType.NEW:
            self._n_new -= 1
        else:
            self._n_old -= 1
        del self._lookup[ka.id]

    def _move_to_old(self, ka: KnownAddress, now: datetime) -> None:
        """Promote new entry ``ka`` to its old bucket, demoting that bucket's stalest entry
        to a new bucket if the old bucket is full (Q5.1 and Q5.2 fixed)."""
        self._remove_from_all_buckets(ka)
        ka = replace(ka, buckets=(), bucket_type=BucketType.OLD)
        index = self.old_bucket_index(ka.addr)
        bucket = self._old[index]
        if len(bucket) >= OLD_BUCKET_SIZE:
            lookup = self._lookup
            stalest = lookup[min(bucket, key=lambda i: lookup[i].last_attempt)]
            self._remove_from_all_buckets(stalest)
            demoted = replace(stalest, buckets=(), bucket_type=BucketType.NEW)
            self._add_to_new_bucket(demoted, self.new_bucket_index(demoted.addr, demoted.src), now)
        bucket[ka.id] = None
        self._n_old += 1
        self._lookup[ka.id] = replace(ka, buckets=(index,))


def _normalise_id(addr: NetAddress) -> NetAddress:
    """``addr`` with its ID in lowercase (IDs are hex; Go accepts either case)."""
    lowered = addr.id.lower()
    if lowered == addr.id:
        return addr
    return NetAddress(NodeID(lowered), addr.ip, addr.port)
