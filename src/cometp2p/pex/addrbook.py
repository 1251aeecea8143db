"""The AddrBook: known peer addresses in new/old buckets, and how to pick among them.

Implements behaviour.md §5 (CometBFT v0.38 ``p2p/pex/addrbook.go``) and the admission rules of
§4.8, as a pure object: no IO, no event loop, no wall clock and no global ``random``. Time is
passed in as ``now`` (an aware :class:`~datetime.datetime`) and randomness comes from the
injected :class:`random.Random`, so a seeded book replays exactly. Persistence lives in
:mod:`cometp2p.pex.addrbook_store`. The book decides; its parts do one job each: the
entries (:mod:`cometp2p.pex.known_address`), where they go and how buckets fill and evict
(:mod:`cometp2p.pex.buckets`), and which offers may enter (:mod:`cometp2p.pex.admission`).
Every public name of those modules that this one offered before is re-exported here.

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
import math
import random
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

from cometp2p.errors import LocalProtocolError
from cometp2p.pex.admission import AdmissionRules, normalise_id
from cometp2p.pex.buckets import HASH_KEY_BYTES as HASH_KEY_BYTES
from cometp2p.pex.buckets import MAX_NEW_BUCKETS_PER_ADDRESS as MAX_NEW_BUCKETS_PER_ADDRESS
from cometp2p.pex.buckets import (
    NEW_BUCKET_COUNT,
    NEW_BUCKET_SIZE,
    OLD_BUCKET_COUNT,
    OLD_BUCKET_SIZE,
    BucketPlacement,
    BucketTable,
    bad_entry,
)
from cometp2p.pex.buckets import NEW_BUCKETS_PER_GROUP as NEW_BUCKETS_PER_GROUP
from cometp2p.pex.buckets import OLD_BUCKETS_PER_GROUP as OLD_BUCKETS_PER_GROUP
from cometp2p.pex.errors import AddrBookError as AddrBookError
from cometp2p.pex.errors import AddrBookErrorReason as AddrBookErrorReason
from cometp2p.pex.known_address import MAX_FAILURES as MAX_FAILURES
from cometp2p.pex.known_address import MIN_BAD_DAYS as MIN_BAD_DAYS
from cometp2p.pex.known_address import NUM_MISSING_DAYS as NUM_MISSING_DAYS
from cometp2p.pex.known_address import NUM_RETRIES as NUM_RETRIES
from cometp2p.pex.known_address import ZERO_TIME, BucketType, KnownAddress
from cometp2p.pex.known_address import BadCutoffs as BadCutoffs
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

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
GET_SELECTION_PERCENT: Final = 23
MIN_GET_SELECTION: Final = 32
MAX_GET_SELECTION: Final = 250
BAN_TIME_S: Final = 24 * 3600.0
"""``defaultBanTime`` of the PEX reactor (behaviour.md §4.1), in seconds."""

KEY_HEX_CHARS: Final = 24
"""Length of the persisted book ``key`` (96 random bits as lowercase hex)."""

_MAX_TIME: Final = datetime.max.replace(tzinfo=UTC)
_KEY_RE: Final = re.compile(r"[0-9a-f]{24}")


class AddResult(enum.Enum):
    """What :meth:`AddrBook.add_address` did with an acceptable address (behaviour.md §5.5)."""

    ADDED = "added as a new entry"
    BUCKET_ADDED = "known entry placed in one more new bucket"
    ALREADY_IN_BUCKET = "known entry already in the computed bucket"
    IGNORED_OLD = "ID already vetted (old); ignored"
    IGNORED_MAX_BUCKETS = "entry already in 4 new buckets; ignored"
    IGNORED_CHANCE = "lost the 1/(2n) re-add draw; ignored"
    IGNORED_OTHER_ADDRESS = "ID known with another IP or port; ignored"


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
        "_key",
        "_lookup",
        "_placement",
        "_rng",
        "_rules",
        "_table",
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
        self._rng = rng
        if hash_key is None:
            hash_key = secrets.token_bytes(HASH_KEY_BYTES)
        elif len(hash_key) != HASH_KEY_BYTES:
            raise LocalProtocolError(
                f"address book hash key: expected {HASH_KEY_BYTES} bytes, got {len(hash_key)}"
            )
        self._placement = BucketPlacement(key.encode("ascii"), bytes(hash_key), strict=strict)
        self._table = BucketTable(self._placement)
        self._lookup = self._table.lookup  # the same dict, read often
        self._bad: dict[NodeID, KnownAddress] = {}
        self._rules = AdmissionRules(strict=strict)

    # -- properties and queries ---------------------------------------------------------

    @property
    def key(self) -> str:
        """The persisted book key (24 hex characters), mixed into every bucket hash."""
        return self._key

    @property
    def strict(self) -> bool:
        """``addr_book_strict``: routability enforced on insert and in group keys."""
        return self._rules.strict

    @property
    def n_new(self) -> int:
        """Number of distinct entries in new buckets."""
        return self._table.n_new

    @property
    def n_old(self) -> int:
        """Number of distinct entries in old buckets."""
        return self._table.n_old

    def size(self) -> int:
        """Number of known (not banned) entries: ``n_new + n_old``."""
        return len(self._lookup)

    def __len__(self) -> int:
        return len(self._lookup)

    def empty(self) -> bool:
        """True when the book knows no address."""
        return not self._lookup

    def need_more_addrs(self) -> bool:
        """True while the book holds fewer than 1000 addresses (behaviour.md §5.1)."""
        return len(self._lookup) < NEED_ADDRESS_THRESHOLD

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
        return tuple(self._table.bucket(bucket_type, index))

    # -- our own and private addresses ------------------------------------------------

    def add_our_address(self, addr: NetAddress) -> None:
        """Remember ``addr`` (exact ``id@ip:port``) as ours; it will never be added.

        Its ID is registered as ours too (:meth:`add_our_id`).
        """
        self._rules.add_our_address(addr)
        self.add_our_id(addr.id)

    def add_our_id(self, node_id: str) -> None:
        """Remember ``node_id`` as ours: no address with it is ever stored (so none is ever
        gossiped), whatever its IP and port, and an entry already held (say, from an old
        addrbook.json) is dropped now.

        Go refuses only our exact addresses; an address with our ID and another IP or
        port (a NAT, a second interface, a lie) would be stored and gossiped (issue #12).
        """
        our_id = NodeID(node_id.lower())
        self._rules.our_ids.add(our_id)
        ka = self._lookup.get(our_id)
        if ka is not None:
            self._table.remove(ka)

    def our_address(self, addr: NetAddress) -> bool:
        """True if ``addr`` (exact ``id@ip:port``) was registered as ours."""
        return self._rules.is_our_address(addr)

    def add_private_ids(self, ids: Iterable[str]) -> None:
        """Never store addresses with these IDs, nor addresses they tell us about."""
        self._rules.add_private_ids(ids)

    # -- bucket placement (behaviour.md §5.3, §5.4) --------------------------------------

    def new_bucket_index(self, addr: NetAddress, src: NetAddress) -> int:
        """The new bucket ``addr`` goes to when ``src`` tells us about it (0..255)."""
        return self._placement.new_bucket_index(addr, src)

    def old_bucket_index(self, addr: NetAddress) -> int:
        """The old bucket ``addr`` goes to once vetted (0..63)."""
        return self._placement.old_bucket_index(addr)

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
        addr, src = self._rules.check(addr, src, self._bad)
        ka = self._lookup.get(addr.id)
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
        index = self._placement.new_bucket_index(addr, src)
        if index in ka.buckets:
            return AddResult.ALREADY_IN_BUCKET
        self._table.add_to_new(ka, index, now)
        return result

    def restore(self, ka: KnownAddress) -> None:
        """Put a saved entry back exactly where it was (used by the store when loading).

        Raises:
            AddrBookError: reason BAD_ENTRY if the entry is invalid, its ID is already
                known or banned, its buckets do not fit its type (1..4 distinct new
                buckets in 0..255, or one old bucket in 0..63), or a bucket is full.
        """
        if not ka.addr.valid():
            raise bad_entry(ka, "invalid address")
        if ka.addr.id != ka.addr.id.lower():
            ka = replace(ka, addr=normalise_id(ka.addr))
        if ka.id in self._lookup or ka.id in self._bad:
            raise bad_entry(ka, "duplicate ID")
        if ka.last_attempt.tzinfo is None or ka.last_success.tzinfo is None:
            raise bad_entry(ka, "naive timestamp")
        if ka.last_ban_time.tzinfo is None:
            raise bad_entry(ka, "naive timestamp")
        if not 0 <= ka.attempts < 2**31:
            raise bad_entry(ka, f"expected attempts in 0..2^31-1, got {ka.attempts}")
        self._table.restore(ka)

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
            self._table.move_to_old(ka, now)

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
        self._table.remove(ka)
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
            self._table.add_to_new(fresh, self.new_bucket_index(ka.addr, ka.src), now)
        return [ka.addr for ka in expired]

    def remove_address(self, addr: NetAddress) -> None:
        """Forget ``addr``'s ID (whatever its IP); unknown IDs are ignored."""
        ka = self._lookup.get(NodeID(addr.id.lower()))
        if ka is not None:
            self._table.remove(ka)

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
        table = self._table
        if not self._lookup:
            return None
        bias = _clamp_bias(bias_new)
        w_old = math.sqrt(table.n_old) * (100 - bias)
        w_new = math.sqrt(table.n_new) * bias
        pick_old = (w_old + w_new) * self._rng.random() < w_old
        return table.pick(pick_old, self._rng)

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
        n = selection_size(len(self._lookup))
        if n == 0:
            return []
        bias = _clamp_bias(bias_new)
        need_new = max(_go_round(bias / 100 * n), n - self._table.n_old)
        selection = self._table.random_pick(False, need_new, self._rng)
        selection += self._table.random_pick(True, n - len(selection), self._rng)
        return selection
