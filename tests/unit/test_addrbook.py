"""AddrBook rules (behaviour.md §4.8, §5.5-§5.10) and the fixed quirks Q5.1-Q5.5 (§5.13)."""

from __future__ import annotations

import ipaddress
import random
import shutil
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cometp2p.errors import LocalProtocolError
from cometp2p.pex.addrbook import (
    NEW_BUCKET_COUNT,
    NEW_BUCKET_SIZE,
    OLD_BUCKET_COUNT,
    OLD_BUCKET_SIZE,
    ZERO_TIME,
    AddrBook,
    AddResult,
    BucketType,
    KnownAddress,
    selection_size,
)
from cometp2p.pex.addrbook_store import load_addrbook, save_addrbook
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

NOW = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DAY = timedelta(days=1)
BAN_S = 24 * 3600.0


def node_id(n: int) -> NodeID:
    return NodeID(f"{n:040x}")


def na(n: int, ip: str, port: int = 26656) -> NetAddress:
    return NetAddress(node_id(n), ipaddress.ip_address(ip), port)


# The secret keys are fixed here so that a seeded rng reproduces a whole run; a real book
# draws them from `secrets`.
BOOK_KEY = "0123456789abcdef01234567"
HASH_KEY = bytes(range(32))


def make_book(seed: int = 0, *, strict: bool = True) -> AddrBook:
    return AddrBook(BOOK_KEY, strict=strict, rng=random.Random(seed), hash_key=HASH_KEY)


SRC = na(0xFFFF, "5.6.7.8")


def spread_addr(i: int) -> NetAddress:
    """Routable addresses in distinct /16 groups (i < 60 000)."""
    return na(1_000_000 + i, f"{20 + i // 250}.{i % 250}.1.1")


def spread_src(i: int) -> NetAddress:
    return na(2_000_000 + i, f"{120 + i // 250}.{i % 250}.9.9")


def fill(book: AddrBook, count: int, now: datetime = NOW) -> list[NetAddress]:
    """Add ``count`` addresses spread over groups and sources; all must be accepted."""
    added = []
    for i in range(count):
        a = spread_addr(i)
        assert book.add_address(a, spread_src(i), now) is AddResult.ADDED
        added.append(a)
    return added


def check_invariants(book: AddrBook) -> None:
    """Structural invariants: bucket bounds, bucket <-> entry agreement, counts."""
    entries = {ka.id: ka for ka in book.known_addresses()}
    assert len(entries) == book.size() == len(book) == book.n_new + book.n_old
    assert sum(ka.is_new for ka in entries.values()) == book.n_new
    assert sum(ka.is_old for ka in entries.values()) == book.n_old
    seen: Counter[tuple[BucketType, int, NodeID]] = Counter()
    for bucket_type, count, limit in (
        (BucketType.NEW, NEW_BUCKET_COUNT, NEW_BUCKET_SIZE),
        (BucketType.OLD, OLD_BUCKET_COUNT, OLD_BUCKET_SIZE),
    ):
        for index in range(count):
            ids = book.bucket(bucket_type, index)
            assert len(ids) <= limit
            assert len(set(ids)) == len(ids)
            for i in ids:
                assert entries[i].bucket_type is bucket_type
                assert index in entries[i].buckets
                seen[(bucket_type, index, i)] += 1
    for ka in entries.values():
        assert ka.id == ka.addr.id
        assert len(set(ka.buckets)) == len(ka.buckets)
        if ka.is_new:
            assert 1 <= len(ka.buckets) <= 4
        else:
            assert len(ka.buckets) == 1
        for index in ka.buckets:
            assert seen[(ka.bucket_type, index, ka.id)] == 1
    banned = {ka.id for ka in book.bad_peers()}
    assert not banned & entries.keys()


# -- constants and sizes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 0),
        (1, 1),
        (10, 10),
        (32, 32),
        (100, 32),
        (139, 32),
        (200, 46),
        (1000, 230),
        (1086, 249),
        (1087, 250),
        (20000, 250),
    ],
)
def test_selection_size(size: int, expected: int) -> None:
    assert selection_size(size) == expected


@pytest.mark.parametrize(("size", "expected"), [(10, 10), (100, 32), (1000, 230), (1100, 250)])
def test_get_selection_sizes(size: int, expected: int) -> None:
    book = make_book()
    added = set(fill(book, size))
    selection = book.get_selection()
    assert len(selection) == expected
    assert len(set(selection)) == expected
    assert set(selection) <= added


def test_get_selection_empty_and_includes_old() -> None:
    book = make_book()
    assert book.get_selection() == []
    assert book.get_selection_with_bias(30) == []
    a = fill(book, 1)[0]
    book.mark_good(a.id, NOW)
    assert book.get_selection() == [a]


def test_need_more_addrs_below_1000() -> None:
    book = make_book()
    assert book.empty()
    assert book.need_more_addrs()
    fill(book, 999)
    assert book.need_more_addrs()
    book.add_address(spread_addr(5000), spread_src(5000), NOW)
    assert book.size() == 1000
    assert not book.need_more_addrs()
    assert not book.empty()


# -- add_address rejections (§4.8) ---------------------------------------------------


def rejection(book: AddrBook, addr: NetAddress | None, src: NetAddress | None) -> AddrBookError:
    with pytest.raises(AddrBookError) as info:
        book.add_address(addr, src, NOW)
    return info.value


def test_rejects_nil() -> None:
    book = make_book()
    assert rejection(book, None, SRC).reason is AddrBookErrorReason.NIL
    assert rejection(book, na(1, "1.2.3.4"), None).reason is AddrBookErrorReason.NIL


@pytest.mark.parametrize(
    "addr",
    [
        NetAddress(NodeID("abc"), ipaddress.ip_address("1.2.3.4"), 26656),
        NetAddress(NodeID(""), ipaddress.ip_address("1.2.3.4"), 26656),
        na(1, "0.0.0.0"),
        na(1, "::"),
        na(1, "2001:db8::1"),
        na(1, "255.255.255.255"),
    ],
)
def test_rejects_invalid(addr: NetAddress) -> None:
    book = make_book(strict=False)
    error = rejection(book, addr, SRC)
    assert error.reason is AddrBookErrorReason.INVALID
    assert error.addr == addr
    assert book.empty()


def test_rejects_source_without_valid_id() -> None:
    book = make_book()
    bad_src = NetAddress(NodeID("not-an-id"), ipaddress.ip_address("5.6.7.8"), 1)
    error = rejection(book, na(1, "1.2.3.4"), bad_src)
    assert error.reason is AddrBookErrorReason.INVALID
    assert error.src == bad_src
    upper_src = NetAddress(NodeID(node_id(0xBEEF).upper()), ipaddress.ip_address("5.6.7.8"), 1)
    book.add_address(na(1, "1.2.3.4"), upper_src, NOW)
    ka = book.get(node_id(1))
    assert ka is not None
    assert ka.src.id == node_id(0xBEEF)


def test_rejects_private_ids() -> None:
    book = make_book()
    book.add_private_ids([node_id(1).upper(), node_id(2)])
    error = rejection(book, na(1, "1.2.3.4"), SRC)
    assert error.reason is AddrBookErrorReason.PRIVATE
    assert error.private
    error = rejection(book, na(3, "1.2.3.4"), na(2, "9.9.9.9"))
    assert error.reason is AddrBookErrorReason.PRIVATE_SRC
    assert error.private
    assert book.empty()


def test_rejects_our_address_and_any_address_with_our_id() -> None:
    book = make_book()
    ours = na(1, "1.2.3.4")
    book.add_our_address(ours)
    assert book.our_address(ours)
    error = rejection(book, ours, SRC)
    assert error.reason is AddrBookErrorReason.SELF
    assert not error.private
    # Go stores our ID on another port; we do not (issue #12): the ID is ours.
    other_port = na(1, "1.2.3.4", 26657)
    assert not book.our_address(other_port)
    assert rejection(book, other_port, SRC).reason is AddrBookErrorReason.SELF
    assert book.add_address(na(2, "1.2.3.4", 26657), SRC, NOW) is AddResult.ADDED


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.1.1", "127.0.0.1", "169.254.1.1", "fe80::1"])
def test_strict_rejects_non_routable_lenient_accepts(ip: str) -> None:
    addr = na(1, ip)
    assert rejection(make_book(), addr, SRC).reason is AddrBookErrorReason.NON_ROUTABLE
    lenient = make_book(strict=False)
    assert lenient.add_address(addr, SRC, NOW) is AddResult.ADDED
    assert lenient.has_address(addr)


def test_rejects_banned() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    assert book.mark_bad(a, BAN_S, NOW)
    assert rejection(book, a, SRC).reason is AddrBookErrorReason.BANNED
    # the ban is by ID, whatever the IP
    assert rejection(book, na(1, "4.3.2.1"), SRC).reason is AddrBookErrorReason.BANNED


def test_naive_now_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        make_book().add_address(na(1, "1.2.3.4"), SRC, datetime(2024, 1, 1))


# -- add_address placement (§5.5) ----------------------------------------------------


def test_add_new_entry() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    other_zone = NOW.astimezone(timezone(timedelta(hours=2)))
    assert book.add_address(a, SRC, other_zone) is AddResult.ADDED
    ka = book.get(a.id)
    assert ka is not None
    assert ka == KnownAddress(
        a, SRC, (book.new_bucket_index(a, SRC),), 0, BucketType.NEW, NOW, ZERO_TIME, ZERO_TIME
    )
    assert ka.last_attempt.tzinfo is UTC
    assert (book.size(), book.n_new, book.n_old) == (1, 1, 0)
    assert book.has_address(a)
    assert not book.is_good(a)
    assert not book.is_banned(a)
    check_invariants(book)


def test_uppercase_id_is_the_same_node() -> None:
    book = make_book()
    upper = NetAddress(NodeID(node_id(0xABC).upper()), ipaddress.ip_address("1.2.3.4"), 1)
    book.add_address(upper, SRC, NOW)
    ka = book.get(node_id(0xABC))
    assert ka is not None
    assert ka.addr.id == node_id(0xABC)
    assert book.has_address(upper)
    assert book.add_address(na(0xABC, "1.2.3.4", 1), SRC, NOW) is not AddResult.ADDED


class RecordingRandom(random.Random):
    """A Random whose randrange calls are recorded and answered with ``answer``."""

    def __init__(self, answer: int) -> None:
        super().__init__(0)
        self.answer = answer
        self.calls: list[int] = []

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        assert stop is None
        self.calls.append(start)
        return self.answer


def test_readd_probability_is_one_in_2n_and_at_most_4_buckets() -> None:
    rng = RecordingRandom(answer=0)
    book = AddrBook(strict=True, rng=rng)
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    buckets_seen = 1
    for i in range(200):
        src = spread_src(i)
        result = book.add_address(a, src, NOW)
        ka = book.get(a.id)
        assert ka is not None
        if result is AddResult.IGNORED_MAX_BUCKETS:
            break
        # the draw is randrange(2n) with n the current number of buckets
        assert rng.calls[-1] == 2 * buckets_seen
        if result is AddResult.BUCKET_ADDED:
            buckets_seen += 1
            assert ka.buckets[-1] == book.new_bucket_index(a, src)
        else:
            assert result is AddResult.ALREADY_IN_BUCKET
        assert len(ka.buckets) == buckets_seen
    assert buckets_seen == 4
    assert book.n_new == 1
    check_invariants(book)

    losing = RecordingRandom(answer=1)
    book = AddrBook(strict=True, rng=losing)
    book.add_address(a, SRC, NOW)
    assert book.add_address(a, spread_src(1), NOW) is AddResult.IGNORED_CHANCE
    entry = book.get(a.id)
    assert entry is not None
    assert len(entry.buckets) == 1


def test_readd_of_old_entry_is_ignored() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    book.mark_good(a.id, NOW)
    before = book.get(a.id)
    assert book.add_address(a, spread_src(1), NOW) is AddResult.IGNORED_OLD
    assert book.add_address(na(1, "9.9.9.9"), spread_src(1), NOW) is AddResult.IGNORED_OLD
    assert book.get(a.id) == before


def test_Q5_4_known_id_with_other_ip_is_ignored() -> None:
    # Go would give the *existing* entry a bucket computed from the stranger's address.
    book = AddrBook(strict=True, rng=RecordingRandom(answer=0))
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    before = book.get(a.id)
    for i in range(20):
        hijack = na(1, f"{60 + i}.7.7.7")
        assert book.add_address(hijack, spread_src(i), NOW) is AddResult.IGNORED_OTHER_ADDRESS
    assert book.get(a.id) == before


def test_one_source_group_reaches_at_most_32_new_buckets() -> None:
    book = make_book()
    for i in range(3000):
        book.add_address(spread_addr(i), na(5_000_000 + i, f"5.6.{i % 250}.{i % 7 + 1}"), NOW)
    used = {b for ka in book for b in ka.buckets}
    assert len(used) <= 32
    check_invariants(book)


# -- bucket capacity and eviction (Q5.1, §5.5 expireNew, §5.7) -------------------------


def same_new_bucket(n: int, start: int = 0) -> list[NetAddress]:
    """``n`` addresses of one /16: from one source they all land in one new bucket."""
    return [
        na(3_000_000 + start + i, f"77.88.{(start + i) // 250}.{(start + i) % 250 + 1}")
        for i in range(n)
    ]


def test_Q5_1_new_bucket_holds_at_most_64() -> None:
    book = make_book()
    addrs = same_new_bucket(100)
    for i, a in enumerate(addrs):
        book.add_address(a, SRC, NOW + timedelta(seconds=i))
    index = book.new_bucket_index(addrs[0], SRC)
    assert len(book.bucket(BucketType.NEW, index)) == 64  # Go: 65
    assert book.size() == 64
    # No bad entries: the least recently attempted went first, so the last 64 remain.
    assert {ka.addr for ka in book} == set(addrs[36:])
    check_invariants(book)


def test_eviction_prefers_a_bad_entry_over_the_oldest() -> None:
    book = make_book()
    addrs = same_new_bucket(64)
    for i, a in enumerate(addrs):
        book.add_address(a, SRC, NOW + timedelta(seconds=i))
    victim = addrs[40]
    for _ in range(3):  # never succeeded and 3 attempts: bad once a minute has passed
        book.mark_attempt(victim, NOW + timedelta(minutes=1))
    later = NOW + timedelta(minutes=5)
    newcomer = same_new_bucket(1, start=500)[0]
    assert book.add_address(newcomer, SRC, later) is AddResult.ADDED
    assert not book.has_address(victim)
    assert book.has_address(addrs[0])  # the oldest survived
    assert book.has_address(newcomer)
    assert book.size() == 64


def test_eviction_drops_only_one_bucket_reference() -> None:
    rng = RecordingRandom(answer=0)
    book = AddrBook(strict=True, rng=rng)
    multi = same_new_bucket(1, start=900)[0]
    book.add_address(multi, SRC, NOW - DAY)  # oldest in SRC's bucket
    book.add_address(multi, spread_src(1), NOW - DAY)
    entry = book.get(multi.id)
    assert entry is not None
    assert len(entry.buckets) == 2
    for i, a in enumerate(same_new_bucket(64)):
        book.add_address(a, SRC, NOW + timedelta(seconds=i))
    entry = book.get(multi.id)
    assert entry is not None
    assert entry.buckets == (book.new_bucket_index(multi, spread_src(1)),)
    assert book.size() == 65
    check_invariants(book)


def ka_at(
    last_attempt: datetime,
    *,
    attempts: int = 0,
    last_success: datetime = ZERO_TIME,
    bucket_type: BucketType = BucketType.NEW,
) -> KnownAddress:
    return KnownAddress(
        na(1, "1.2.3.4"), SRC, (0,), attempts, bucket_type, last_attempt, last_success
    )


@pytest.mark.parametrize(
    ("entry", "bad"),
    [
        (ka_at(NOW - 8 * DAY, bucket_type=BucketType.OLD, attempts=99), False),
        (ka_at(NOW - timedelta(seconds=30), attempts=99), False),
        (ka_at(NOW - 8 * DAY), True),
        (ka_at(NOW - 2 * DAY, attempts=3), True),
        (ka_at(NOW - 2 * DAY, attempts=2), False),
        (ka_at(NOW - 2 * DAY, attempts=3, last_success=NOW - 3 * DAY), False),
        (ka_at(NOW - 2 * DAY, attempts=10, last_success=NOW - 8 * DAY), True),
        (ka_at(NOW - 2 * DAY, attempts=9, last_success=NOW - 8 * DAY), False),
        (ka_at(NOW - 2 * DAY, attempts=10, last_success=NOW - 6 * DAY), False),
        (ka_at(NOW + DAY, attempts=99), False),  # "from the future" is not checked
    ],
)
def test_is_bad(entry: KnownAddress, bad: bool) -> None:
    assert entry.is_bad(NOW) is bad


# -- marks (§5.6) ----------------------------------------------------------------------


def test_mark_attempt() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    book.mark_attempt(a, NOW + DAY)
    book.mark_attempt(na(1, "9.9.9.9"), NOW + 2 * DAY)  # by ID
    ka = book.get(a.id)
    assert ka is not None
    assert (ka.attempts, ka.last_attempt) == (2, NOW + 2 * DAY)
    book.mark_attempt(na(2, "1.2.3.4"), NOW)  # unknown: nothing happens
    assert book.size() == 1


def test_mark_good_moves_to_old() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    book.add_address(a, spread_src(3), NOW)
    book.mark_attempt(a, NOW)
    later = NOW + DAY
    book.mark_good(a.id.upper(), later)
    ka = book.get(a.id)
    assert ka is not None
    assert ka.is_old
    assert ka.buckets == (book.old_bucket_index(a),)
    assert (ka.attempts, ka.last_attempt, ka.last_success) == (0, later, later)
    assert book.is_good(a)
    assert (book.n_new, book.n_old) == (0, 1)
    assert all(a.id not in book.bucket(BucketType.NEW, i) for i in range(NEW_BUCKET_COUNT))
    book.mark_good(a.id, later + DAY)  # already old: times refreshed, still one bucket
    ka = book.get(a.id)
    assert ka is not None
    assert ka.buckets == (book.old_bucket_index(a),)
    assert ka.last_success == later + DAY
    book.mark_good(node_id(99), NOW)  # unknown: ignored
    check_invariants(book)


def test_Q5_5_is_good_on_unknown_is_false() -> None:
    assert make_book().is_good(na(1, "1.2.3.4")) is False


def same_old_bucket(book: AddrBook, n: int) -> list[NetAddress]:
    """``n`` addresses of one /16 that share one old bucket."""
    target: int | None = None
    found: list[NetAddress] = []
    i = 0
    while len(found) < n:
        a = na(4_000_000 + i, f"91.92.{i // 250}.{i % 250 + 1}")
        i += 1
        index = book.old_bucket_index(a)
        if target is None:
            target = index
        if index == target:
            found.append(a)
    return found


def test_Q5_2_full_old_bucket_demotes_without_loss() -> None:
    book = make_book()
    addrs = same_old_bucket(book, 65)
    for i, a in enumerate(addrs):  # distinct sources: the new buckets never fill
        book.add_address(a, spread_src(i), NOW)
    for i, a in enumerate(addrs[:64]):
        book.mark_good(a.id, NOW + timedelta(seconds=i))
    index = book.old_bucket_index(addrs[0])
    assert len(book.bucket(BucketType.OLD, index)) == 64
    book.mark_good(addrs[64].id, NOW + DAY)
    assert len(book.bucket(BucketType.OLD, index)) == 64  # Go: 65
    assert book.is_good(addrs[64])
    # The stalest old entry became new again and is still known (Go drops it).
    demoted = book.get(addrs[0].id)
    assert demoted is not None
    assert demoted.is_new
    assert demoted.buckets == (book.new_bucket_index(addrs[0], spread_src(0)),)
    assert demoted.last_success == NOW  # history kept
    assert book.size() == 65
    assert (book.n_new, book.n_old) == (1, 64)
    check_invariants(book)


def test_old_bucket_holds_at_most_64_after_many_promotions() -> None:
    book = make_book()
    addrs = same_old_bucket(book, 150)
    for i, a in enumerate(addrs):
        book.add_address(a, spread_src(i), NOW)
        book.mark_good(a.id, NOW + timedelta(seconds=i))
    assert book.size() == 150
    assert book.n_old == 64
    check_invariants(book)


def test_mark_bad_and_reinstate() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    assert book.mark_bad(na(1, "4.4.4.4"), 3600.0, NOW)  # by ID
    assert book.is_banned(a)
    assert not book.has_address(a)
    assert book.size() == 0
    (banned,) = book.bad_peers()
    assert banned.last_ban_time == NOW + timedelta(hours=1)
    assert book.reinstate_bad_peers(NOW + timedelta(minutes=59)) == []
    assert book.is_banned(a)
    assert book.reinstate_bad_peers(NOW + timedelta(hours=1)) == [a]
    assert not book.is_banned(a)
    ka = book.get(a.id)
    assert ka is not None
    assert ka.is_new
    assert ka.buckets == (book.new_bucket_index(a, SRC),)
    check_invariants(book)


def test_mark_bad_unknown_bans_nothing() -> None:
    book = make_book()
    assert not book.mark_bad(na(1, "1.2.3.4"), BAN_S, NOW)
    assert not book.is_banned(na(1, "1.2.3.4"))
    assert book.add_address(na(1, "1.2.3.4"), SRC, NOW) is AddResult.ADDED


def test_mark_bad_rejects_nan() -> None:
    book = make_book()
    book.add_address(na(1, "1.2.3.4"), SRC, NOW)
    with pytest.raises(LocalProtocolError):
        book.mark_bad(na(1, "1.2.3.4"), float("nan"), NOW)


def test_ban_expiry_only_moves_later() -> None:
    book = make_book()
    entry = replace_ban(ka_at(NOW), NOW + 10 * DAY)
    book.restore(entry)
    book.mark_bad(entry.addr, 3600.0, NOW)
    (banned,) = book.bad_peers()
    assert banned.last_ban_time == NOW + 10 * DAY
    assert book.reinstate_bad_peers(NOW + 2 * DAY) == []
    assert book.reinstate_bad_peers(NOW + 10 * DAY) == [entry.addr]


def replace_ban(ka: KnownAddress, until: datetime) -> KnownAddress:
    return KnownAddress(
        ka.addr,
        ka.src,
        ka.buckets,
        ka.attempts,
        ka.bucket_type,
        ka.last_attempt,
        ka.last_success,
        until,
    )


def test_Q5_3_banned_old_entry_comes_back_as_new() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    book.mark_good(a.id, NOW)
    book.mark_bad(a, 60.0, NOW)
    assert book.reinstate_bad_peers(NOW + timedelta(minutes=2)) == [a]
    ka = book.get(a.id)  # Go: lost (type stayed old, so the new-bucket insert failed)
    assert ka is not None
    assert ka.is_new
    assert not book.is_good(a)
    assert (book.n_new, book.n_old) == (1, 0)
    check_invariants(book)


def test_remove_address_by_id() -> None:
    book = make_book()
    a = na(1, "1.2.3.4")
    book.add_address(a, SRC, NOW)
    book.remove_address(na(1, "8.8.8.8"))
    assert book.empty()
    book.remove_address(a)  # unknown: fine
    check_invariants(book)


# -- pick_address (§5.8) ------------------------------------------------------------


def book_with(n_new: int, n_old: int, seed: int = 0) -> tuple[AddrBook, set[NetAddress]]:
    book = make_book(seed)
    addrs = fill(book, n_new + n_old)
    for a in addrs[:n_old]:
        book.mark_good(a.id, NOW)
    assert (book.n_new, book.n_old) == (n_new, n_old)
    return book, set(addrs[:n_old])


def test_pick_address_empty_and_one_sided() -> None:
    assert make_book().pick_address(50) is None
    only_new, _ = book_with(5, 0)
    assert only_new.pick_address(0) is not None  # both weights zero: Go picks "new"
    only_old, _ = book_with(0, 5)
    assert only_old.pick_address(100) is None  # weights zero, picks "new", none there
    assert only_old.pick_address(0) in {ka.addr for ka in only_old}


def test_pick_address_bias() -> None:
    book, old = book_with(100, 100)
    picks = [book.pick_address(30) for _ in range(3000)]
    assert None not in picks
    new_share = sum(p not in old for p in picks) / len(picks)
    assert 0.25 < new_share < 0.35  # equal sizes: the share is the bias
    assert all(book.pick_address(-20) in old for _ in range(200))  # clamped to 0
    assert all(book.pick_address(250) not in old for _ in range(200))  # clamped to 100


def test_pick_address_weights_entries_by_bucket_count() -> None:
    rng = random.Random(5)
    book = AddrBook(strict=True, rng=rng)
    a = na(1, "1.2.3.4")
    b = na(2, "100.2.3.4")
    book.add_address(a, SRC, NOW)
    book.add_address(b, spread_src(500), NOW)
    while True:  # give a a second bucket
        book.add_address(a, spread_src(rng.randrange(1000)), NOW)
        entry = book.get(a.id)
        assert entry is not None
        if len(entry.buckets) == 2:
            break
    nonempty = [set(book.bucket(BucketType.NEW, i)) for i in range(NEW_BUCKET_COUNT)]
    nonempty = [ids for ids in nonempty if ids]
    expected = sum(1 / len(ids) for ids in nonempty if a.id in ids) / len(nonempty)
    picks = Counter(book.pick_address(100) for _ in range(3000))
    assert abs(picks[a] / 3000 - expected) < 0.05
    assert expected > 0.6  # more than b's share: a sits in more buckets


# -- get_selection_with_bias (§5.10) ------------------------------------------------


@pytest.mark.parametrize(
    ("n_new", "n_old", "bias", "want_new"),
    [
        (100, 100, 30, 14),  # n = 46, round(13.8) = 14
        (100, 100, 100, 46),
        (100, 100, 0, 0),
        (100, 100, 50, 23),
        (195, 5, 30, 41),  # not enough old: n - n_old new ones
        (5, 195, 100, 5),  # not enough new: filled with old
        (100, 100, -7, 0),
        (100, 100, 170, 46),
    ],
)
def test_get_selection_with_bias(n_new: int, n_old: int, bias: int, want_new: int) -> None:
    book, old = book_with(n_new, n_old)
    selection = book.get_selection_with_bias(bias)
    assert len(selection) == selection_size(n_new + n_old) == 46
    assert len(set(selection)) == 46
    assert sum(a not in old for a in selection) == want_new
    # new ones come first
    assert all(a not in old for a in selection[:want_new])


def test_determinism_with_same_seed() -> None:
    def run(seed: int) -> tuple[list[NetAddress], list[NetAddress], str]:
        book = make_book(seed)
        fill(book, 300)
        return book.get_selection(), book.get_selection_with_bias(30), book.key

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_key() -> None:
    assert AddrBook("0123456789abcdef01234567", strict=True, rng=random.Random()).key == (
        "0123456789abcdef01234567"
    )
    generated = make_book(3).key
    assert len(generated) == 24
    assert int(generated, 16) >= 0
    for bad in ["", "0123", "0123456789ABCDEF01234567", "0123456789abcdef0123456g"]:
        with pytest.raises(LocalProtocolError):
            AddrBook(bad, strict=True, rng=random.Random())


def test_restore_validation() -> None:
    book = make_book()
    good = ka_at(NOW)
    book.restore(good)
    cases = [
        good,  # duplicate ID
        KnownAddress(na(2, "1.2.3.4"), SRC, (256,), 0, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (-1,), 0, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (), 0, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (1, 2, 3, 4, 5), 0, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (1, 1), 0, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (64,), 0, BucketType.OLD, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (1, 2), 0, BucketType.OLD, NOW),
        KnownAddress(na(2, "0.0.0.0"), SRC, (1,), 0, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (1,), -1, BucketType.NEW, NOW),
        KnownAddress(na(2, "1.2.3.4"), SRC, (1,), 0, BucketType.NEW, datetime(2024, 1, 1)),
    ]
    for ka in cases:
        with pytest.raises(AddrBookError) as info:
            book.restore(ka)
        assert info.value.reason is AddrBookErrorReason.BAD_ENTRY
    assert book.size() == 1
    for i in range(63):
        book.restore(KnownAddress(na(10 + i, "1.2.3.4"), SRC, (0,), 0, BucketType.NEW, NOW))
    with pytest.raises(AddrBookError):  # bucket 0 is full
        book.restore(KnownAddress(na(9, "1.2.3.4"), SRC, (0,), 0, BucketType.NEW, NOW))
    check_invariants(book)


def test_bucket_index_out_of_range() -> None:
    with pytest.raises(LocalProtocolError):
        make_book().bucket(BucketType.OLD, 64)


# -- invariants as a state machine --------------------------------------------------

GROUPS = ["1.2", "1.3", "8.8", "100.1", "200.9", "10.0"]  # 10.0 is private: strict refuses it
POOL = 12


class AddrBookMachine(RuleBasedStateMachine):
    """Random operation sequences keep the book consistent and lose nothing they shouldn't."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="addrbook-sm-"))
        self.now = NOW
        self.fresh = 10_000
        self.book = make_book()
        self.strict = True

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(seed=st.integers(0, 2**32), strict=st.booleans())
    def setup(self, seed: int, strict: bool) -> None:
        self.strict = strict
        self.book = make_book(seed, strict=strict)

    def addr(self, n: int, group: int, host: int) -> NetAddress:
        return na(n, f"{GROUPS[group]}.{host // 250}.{host % 250 + 1}")

    def new_id(self) -> int:
        self.fresh += 1
        return self.fresh

    @rule(
        n=st.integers(0, POOL - 1),
        group=st.integers(0, len(GROUPS) - 1),
        host=st.integers(0, 3),
        src=st.integers(0, 7),
        src_group=st.integers(0, len(GROUPS) - 1),
    )
    def add(self, n: int, group: int, host: int, src: int, src_group: int) -> None:
        a = self.addr(n, group, host)
        before = self.book.get(a.id)
        banned = self.book.is_banned(a)
        try:
            result = self.book.add_address(a, self.addr(1000 + src, src_group, 0), self.now)
        except AddrBookError as exc:
            reason: AddrBookErrorReason | None = exc.reason
        else:
            reason = None
        assert (reason is AddrBookErrorReason.BANNED) is banned
        if reason is not None:
            return
        after = self.book.get(a.id)
        if result is AddResult.ADDED:
            assert before is None
            assert after is not None
            assert after.addr == a
        elif before is not None and before.is_old:
            assert result is AddResult.IGNORED_OLD
            assert after == before
        elif before is not None and before.addr != a:
            assert result is AddResult.IGNORED_OTHER_ADDRESS
            assert after == before

    @rule(group=st.integers(0, 4), src=st.integers(0, 7), count=st.integers(60, 80))
    def flood_one_bucket(self, group: int, src: int, count: int) -> None:
        source = self.addr(1000 + src, 0, 0)
        for i in range(count):
            self.book.add_address(self.addr(self.new_id(), group, i), source, self.now)
            self.now += timedelta(seconds=1)

    @rule(group=st.integers(0, 4), count=st.integers(60, 75))
    def overflow_old_bucket(self, group: int, count: int) -> None:
        target: int | None = None
        for i in range(400):
            a = self.addr(self.new_id(), group, i)
            if target is None:
                target = self.book.old_bucket_index(a)
            if self.book.old_bucket_index(a) != target:
                continue
            self.book.add_address(a, self.addr(self.new_id(), 4, i), self.now)
            self.mark_good_checked(a.id)
            count -= 1
            if count == 0:
                break

    def mark_good_checked(self, nid: NodeID) -> None:
        known = self.book.get(nid) is not None
        old_before = {ka.id for ka in self.book if ka.is_old}
        size_before = self.book.size()
        self.book.mark_good(nid, self.now)
        self.now += timedelta(milliseconds=1500)
        if not known:
            assert self.book.size() == size_before
            return
        assert self.book.is_good(self.book.get(nid).addr)  # type: ignore[union-attr]
        # Q5.2: whoever left an old bucket is still known; the only loss is at most one
        # new-bucket eviction caused by re-inserting the demoted entry.
        for demoted in old_before - {ka.id for ka in self.book if ka.is_old}:
            assert self.book.get(demoted) is not None
        assert self.book.size() >= size_before - 1

    @rule(n=st.integers(0, POOL - 1))
    def mark_good(self, n: int) -> None:
        self.mark_good_checked(node_id(n))

    def known_id(self, pick: int) -> NodeID | None:
        ids = sorted(ka.id for ka in self.book)
        return ids[pick % len(ids)] if ids else None

    @rule(pick=st.integers(0, 2**16))
    def mark_good_known(self, pick: int) -> None:
        nid = self.known_id(pick)
        if nid is not None:
            self.mark_good_checked(nid)

    @rule(pick=st.integers(0, 2**16), old=st.booleans(), duration=st.sampled_from([0.0, 60.0]))
    def mark_bad_known(self, pick: int, old: bool, duration: float) -> None:
        candidates = sorted(ka.id for ka in self.book if ka.is_old == old)
        if candidates:
            self.mark_bad(candidates[pick % len(candidates)], duration)

    @rule(n=st.integers(0, POOL - 1))
    def mark_attempt(self, n: int) -> None:
        before = self.book.get(node_id(n))
        self.book.mark_attempt(na(n, "1.1.1.1"), self.now)
        after = self.book.get(node_id(n))
        if before is not None:
            assert after is not None
            assert after.attempts == before.attempts + 1

    @rule(n=st.integers(0, POOL - 1), duration=st.sampled_from([0.0, 60.0, 3600.0, BAN_S]))
    def mark_bad_pool(self, n: int, duration: float) -> None:
        self.mark_bad(node_id(n), duration)

    def mark_bad(self, nid: NodeID, duration: float) -> None:
        a = NetAddress(nid, ipaddress.ip_address("1.1.1.1"), 1)
        known = self.book.has_address(a)
        size_before = self.book.size()
        assert self.book.mark_bad(a, duration, self.now) is known
        if known:
            assert self.book.is_banned(a)
            assert not self.book.has_address(a)
            assert self.book.size() == size_before - 1

    @rule()
    def reinstate(self) -> None:
        expired = {ka.id for ka in self.book.bad_peers() if not ka.is_banned(self.now)}
        banned_src = {ka.id: ka.src for ka in self.book.bad_peers()}
        still = {ka.id for ka in self.book.bad_peers()} - expired
        size_before = self.book.size()
        back = self.book.reinstate_bad_peers(self.now)
        assert {a.id for a in back} == expired
        assert {ka.id for ka in self.book.bad_peers()} == still
        # each comes back into a new bucket; a full bucket costs one other entry at most
        assert size_before <= self.book.size() <= size_before + len(expired)
        for a in back:  # Q5.3: back as new, unless a later arrival evicted it from a full bucket
            ka = self.book.get(a.id)
            if ka is not None:
                assert ka.is_new
            else:
                index = self.book.new_bucket_index(a, banned_src[a.id])
                assert len(self.book.bucket(BucketType.NEW, index)) == NEW_BUCKET_SIZE

    @rule(n=st.integers(0, POOL - 1))
    def remove(self, n: int) -> None:
        self.book.remove_address(na(n, "1.1.1.1"))
        assert not self.book.has_address(na(n, "1.1.1.1"))

    @rule(
        step=st.sampled_from(
            [timedelta(seconds=1), timedelta(seconds=61), timedelta(hours=1), 8 * DAY]
        )
    )
    def advance(self, step: timedelta) -> None:
        self.now += step

    @rule(bias=st.integers(-10, 110))
    def pick(self, bias: int) -> None:
        picked = self.book.pick_address(bias)
        if picked is not None:
            assert self.book.get(picked.id) is not None
        elif self.book.size():
            assert (self.book.n_old == 0) or (self.book.n_new == 0)

    @rule(bias=st.integers(-10, 110))
    def selections(self, bias: int) -> None:
        n = selection_size(self.book.size())
        for selection in (self.book.get_selection(), self.book.get_selection_with_bias(bias)):
            assert len(selection) == n
            assert len({a.id for a in selection}) == n
            for a in selection:
                ka = self.book.get(a.id)
                assert ka is not None
                assert ka.addr == a

    @precondition(lambda self: self.book.size() > 0)
    @rule(seed=st.integers(0, 2**32))
    def save_and_reload(self, seed: int) -> None:
        path = self.dir / "addrbook.json"
        save_addrbook(self.book, path)
        loaded = load_addrbook(path, strict=self.strict, rng=random.Random(seed))
        assert loaded.key == self.book.key
        assert sorted(loaded, key=lambda ka: ka.id) == sorted(self.book, key=lambda ka: ka.id)
        for bucket_type, count in ((BucketType.NEW, NEW_BUCKET_COUNT), (BucketType.OLD, 64)):
            for i in range(count):
                assert set(loaded.bucket(bucket_type, i)) == set(self.book.bucket(bucket_type, i))
        assert (loaded.n_new, loaded.n_old) == (self.book.n_new, self.book.n_old)
        self.book = loaded  # bans are forgotten across restarts, as in CometBFT

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.book)


AddrBookMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_addrbook_state_machine = AddrBookMachine.TestCase


# -- keys come from secrets, the rng only chooses -------------------------------------------


def test_bucket_keys_do_not_come_from_the_rng() -> None:
    """Two books on identically seeded rngs still get different secret keys."""
    a = AddrBook(strict=False, rng=random.Random(7))
    b = AddrBook(strict=False, rng=random.Random(7))
    assert a.key != b.key
    assert a._placement.hash_key != b._placement.hash_key
    rng = random.Random(7)
    before = rng.getstate()
    AddrBook(strict=False, rng=rng)
    assert rng.getstate() == before  # creating a book draws nothing from the rng


def test_hash_key_can_be_fixed_for_reproducible_placement() -> None:
    with pytest.raises(LocalProtocolError):
        AddrBook(strict=False, rng=random.Random(1), hash_key=bytes(31))
    key = "ab" * 12
    a = AddrBook(key, strict=False, rng=random.Random(1), hash_key=bytes(32))
    b = AddrBook(key, strict=False, rng=random.Random(2), hash_key=bytes(32))
    assert a._placement.hash_key == b._placement.hash_key
