"""Where AddrBook entries live: the keyed bucket placement and the bucket table.

Implements behaviour.md §5.3-§5.4 (which bucket an address goes to) and the bucket
mechanics of §5.5-§5.8 (insertion, eviction from a full bucket, promotion to an old
bucket, uniform picks), CometBFT v0.38 ``p2p/pex/addrbook.go``. Two jobs, two objects:

* :class:`BucketPlacement` hashes network groups with the secret 32-byte key (a keyed
  64-bit BLAKE2b PRF) and the persisted book key, so that one source group reaches only
  32 new buckets and one address group only 4 old buckets;
* :class:`BucketTable` holds the 256 new and 64 old buckets (at most 64 IDs each), the
  entries by ID and the counts, and keeps them consistent.

The :class:`~cometp2p.pex.addrbook.AddrBook` owns one of each and decides *whether* an
address goes in; these objects only do *where* and *how*. Pure: no IO, no clock, no
global ``random`` (the caller passes ``now`` and its ``rng``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from datetime import datetime
from typing import Final

from cometp2p.errors import LocalProtocolError
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.pex.known_address import BadCutoffs, BucketType, KnownAddress
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

__all__ = [
    "HASH_KEY_BYTES",
    "MAX_NEW_BUCKETS_PER_ADDRESS",
    "NEW_BUCKETS_PER_GROUP",
    "NEW_BUCKET_COUNT",
    "NEW_BUCKET_SIZE",
    "OLD_BUCKETS_PER_GROUP",
    "OLD_BUCKET_COUNT",
    "OLD_BUCKET_SIZE",
    "BucketPlacement",
    "BucketTable",
    "bad_entry",
]

# behaviour.md §5.1
NEW_BUCKET_COUNT: Final = 256
NEW_BUCKET_SIZE: Final = 64
OLD_BUCKET_COUNT: Final = 64
OLD_BUCKET_SIZE: Final = 64
NEW_BUCKETS_PER_GROUP: Final = 32
OLD_BUCKETS_PER_GROUP: Final = 4
MAX_NEW_BUCKETS_PER_ADDRESS: Final = 4
HASH_KEY_BYTES: Final = 32

# Random bucket draws before falling back to scanning for non-empty buckets; the fallback
# keeps pick fast on a nearly empty book without changing the distribution.
_PICK_DRAWS: Final = 32
_GROUP_MEMO: Final = 65536

Bucket = dict[NodeID, None]
"""A bucket: an insertion-ordered set of IDs (the entries live in the table's lookup)."""


def bad_entry(ka: KnownAddress, why: str) -> AddrBookError:
    """The error for a saved entry that cannot be restored (reason BAD_ENTRY)."""
    return AddrBookError(AddrBookErrorReason.BAD_ENTRY, f"{ka.addr}: {why}", ka.addr, ka.src)


class BucketPlacement:
    """The bucket an address goes to (behaviour.md §5.3, §5.4).

    Args:
        key_bytes: the persisted book key, as ASCII bytes (mixed into every hash).
        hash_key: the secret 32-byte BLAKE2b key (never persisted, Q5.6).
        strict: ``addr_book_strict``: how network groups are computed.
    """

    __slots__ = ("_group_cache", "_key_bytes", "hash_key", "strict")

    def __init__(self, key_bytes: bytes, hash_key: bytes, *, strict: bool) -> None:
        self._key_bytes = key_bytes
        self.hash_key = hash_key
        self.strict = strict
        self._group_cache: dict[NetAddress, str] = {}

    def _hash(self, data: bytes) -> int:
        digest = hashlib.blake2b(data, digest_size=8, key=self.hash_key).digest()
        return int.from_bytes(digest, "big")

    def _group(self, addr: NetAddress) -> str:
        group = self._group_cache.get(addr)
        if group is None:
            if len(self._group_cache) >= _GROUP_MEMO:  # bound the memo during long crawls
                self._group_cache.clear()
            group = addr.group_key(self.strict)
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


class BucketTable:
    """The new and old buckets, the entries by ID and their counts (behaviour.md §5.2).

    Invariants kept by every method: an entry is in ``lookup`` iff it is in 1..4 new
    buckets (new) or exactly one old bucket (old), its ``buckets`` field lists them, no
    bucket holds more than 64 IDs, and ``n_new``/``n_old`` count the distinct entries.

    Args:
        placement: where entries go (used when an entry moves between kinds).

    Attributes:
        lookup: the entries by (lowercase) node ID; the dict is never replaced.
        new: the 256 new buckets.
        old: the 64 old buckets.
        n_new: distinct entries in new buckets.
        n_old: distinct entries in old buckets.
    """

    __slots__ = ("lookup", "n_new", "n_old", "new", "old", "placement")

    def __init__(self, placement: BucketPlacement) -> None:
        self.placement = placement
        self.lookup: dict[NodeID, KnownAddress] = {}
        self.new: list[Bucket] = [{} for _ in range(NEW_BUCKET_COUNT)]
        self.old: list[Bucket] = [{} for _ in range(OLD_BUCKET_COUNT)]
        self.n_new = 0
        self.n_old = 0

    def bucket(self, bucket_type: BucketType, index: int) -> Bucket:
        """One bucket.

        Raises:
            LocalProtocolError: if ``index`` is out of range for ``bucket_type``.
        """
        table = self.new if bucket_type is BucketType.NEW else self.old
        if not 0 <= index < len(table):
            raise LocalProtocolError(
                f"{bucket_type.name.lower()} bucket index: expected 0..{len(table) - 1}, "
                f"got {index}"
            )
        return table[index]

    def add_to_new(self, ka: KnownAddress, index: int, now: datetime) -> None:
        """Add new entry ``ka`` (not yet in bucket ``index``) there, evicting if full."""
        bucket = self.new[index]
        if len(bucket) >= NEW_BUCKET_SIZE:
            self._expire_new(index, now)
        bucket[ka.id] = None
        if not ka.buckets:
            self.n_new += 1
        self.lookup[ka.id] = replace(ka, buckets=(*ka.buckets, index))

    def _expire_new(self, index: int, now: datetime) -> None:
        """Drop one reference from full new bucket ``index``: the first bad entry, else the
        least recently attempted one."""
        bucket = self.new[index]
        lookup = self.lookup
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
            self._remove_from_new(victim, index)

    def _remove_from_new(self, ka: KnownAddress, index: int) -> None:
        del self.new[index][ka.id]
        remaining = tuple(b for b in ka.buckets if b != index)
        if remaining:
            self.lookup[ka.id] = replace(ka, buckets=remaining)
        else:
            self.n_new -= 1
            del self.lookup[ka.id]

    def remove(self, ka: KnownAddress) -> None:
        """Take entry ``ka`` out of every bucket it is in, and out of ``lookup``."""
        table = self.new if ka.bucket_type is BucketType.NEW else self.old
        for index in ka.buckets:
            del table[index][ka.id]
        if ka.bucket_type is BucketType.NEW:
            self.n_new -= 1
        else:
            self.n_old -= 1
        del self.lookup[ka.id]

    def move_to_old(self, ka: KnownAddress, now: datetime) -> None:
        """Promote new entry ``ka`` to its old bucket, demoting that bucket's stalest entry
        to a new bucket if the old bucket is full (Q5.1 and Q5.2 fixed)."""
        placement = self.placement
        self.remove(ka)
        ka = replace(ka, buckets=(), bucket_type=BucketType.OLD)
        index = placement.old_bucket_index(ka.addr)
        bucket = self.old[index]
        if len(bucket) >= OLD_BUCKET_SIZE:
            lookup = self.lookup
            stalest = lookup[min(bucket, key=lambda i: lookup[i].last_attempt)]
            self.remove(stalest)
            demoted = replace(stalest, buckets=(), bucket_type=BucketType.NEW)
            self.add_to_new(demoted, placement.new_bucket_index(demoted.addr, demoted.src), now)
        bucket[ka.id] = None
        self.n_old += 1
        self.lookup[ka.id] = replace(ka, buckets=(index,))

    def restore(self, ka: KnownAddress) -> None:
        """Put a saved entry (ID not in the table) back into exactly its saved buckets.

        Raises:
            AddrBookError: reason BAD_ENTRY if its buckets do not fit its type (1..4
                distinct new buckets in 0..255, or one old bucket in 0..63), or a bucket
                is full.
        """
        buckets = ka.buckets
        if len(set(buckets)) != len(buckets):
            raise bad_entry(ka, f"duplicate bucket index in {list(buckets)}")
        if ka.bucket_type is BucketType.NEW:
            limit, count, table = NEW_BUCKET_SIZE, NEW_BUCKET_COUNT, self.new
            if not 1 <= len(buckets) <= MAX_NEW_BUCKETS_PER_ADDRESS:
                raise bad_entry(ka, f"a new entry needs 1..4 buckets, got {list(buckets)}")
        elif ka.bucket_type is BucketType.OLD:
            limit, count, table = OLD_BUCKET_SIZE, OLD_BUCKET_COUNT, self.old
            if len(buckets) != 1:
                raise bad_entry(ka, f"an old entry needs exactly 1 bucket, got {list(buckets)}")
        else:  # pragma: no cover - BucketType has two members
            raise bad_entry(ka, f"unknown bucket type {ka.bucket_type!r}")
        for index in buckets:
            if not 0 <= index < count:
                raise bad_entry(ka, f"bucket index {index} out of range 0..{count - 1}")
            if len(table[index]) >= limit:
                raise bad_entry(ka, f"bucket {index} already holds {limit} entries")
        for index in buckets:
            table[index][ka.id] = None
        if ka.bucket_type is BucketType.NEW:
            self.n_new += 1
        else:
            self.n_old += 1
        self.lookup[ka.id] = ka

    def pick(self, old: bool, rng: random.Random) -> NetAddress | None:
        """A uniformly random non-empty bucket of one kind, then a uniformly random entry
        of it (so an entry in 4 new buckets is likelier); ``None`` if that kind is empty."""
        if (self.n_old if old else self.n_new) == 0:
            return None
        buckets = self.old if old else self.new
        chosen: Bucket | None = None
        for _ in range(_PICK_DRAWS):
            candidate = buckets[rng.randrange(len(buckets))]
            if candidate:
                chosen = candidate
                break
        if chosen is None:
            chosen = rng.choice([b for b in buckets if b])
        ids = list(chosen)
        return self.lookup[ids[rng.randrange(len(ids))]].addr

    def random_pick(self, old: bool, count: int, rng: random.Random) -> list[NetAddress]:
        """Up to ``count`` distinct entries of one kind: CometBFT shuffles every bucket slot
        and keeps first occurrences. Reading a partial Fisher-Yates shuffle slot by slot,
        stopping once ``count`` are found, gives the same distribution without shuffling
        it all."""
        if count <= 0:
            return []
        slots = [node_id for bucket in (self.old if old else self.new) for node_id in bucket]
        randbelow = rng.randrange
        chosen: dict[NodeID, None] = {}
        total = len(slots)
        for i in range(total):
            j = i + randbelow(total - i)
            slots[i], slots[j] = slots[j], slots[i]
            chosen[slots[i]] = None
            if len(chosen) >= count:
                break
        return [self.lookup[node_id].addr for node_id in chosen]
