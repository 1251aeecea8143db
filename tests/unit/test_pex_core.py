"""PEX rules without IO (behaviour.md §4.2-§4.7): verdicts, rate limit, dial back-off, crawl."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometp2p.errors import ConfigError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig, RequestStrategy
from cometp2p.pex.core import (
    AddrsReport,
    DialBackoff,
    DialVerdict,
    Offence,
    PeerRef,
    PexCore,
    PexMisbehaviourError,
    RequestRateLimiter,
    decode_pex_message,
    encode_pex_addrs,
    encode_pex_request,
    ensure_peers_bias,
)
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2, types_pb2

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BAN_S = 24 * 3600.0


def node_id(n: int) -> NodeID:
    return NodeID(f"{n:040x}")


def addr(n: int, ip: str | None = None, port: int = 26656) -> NetAddress:
    default_ip = f"8.{n // 256 % 256}.{n % 256}.1"
    return NetAddress(node_id(n), ipaddress.ip_address(ip or default_ip), port)


def peer(n: int, *, outbound: bool = True, listen: NetAddress | None = None) -> PeerRef:
    a = addr(n)
    return PeerRef(node_id(n), outbound, a, listen if listen is not None else a)


def make_core(
    *, strict: bool = True, seed: int = 0, book: AddrBook | None = None, **changes: object
) -> PexCore:
    cfg = PexConfig(**changes)  # type: ignore[arg-type]
    book = book if book is not None else AddrBook(strict=strict, rng=random.Random(seed))
    return PexCore(book, cfg, rng=random.Random(seed + 1))


def addrs_message(*items: NetAddress | types_pb2.NetAddress) -> pex_pb2.PexAddrs:
    return pex_pb2.PexAddrs(
        addrs=[i if isinstance(i, types_pb2.NetAddress) else i.to_proto() for i in items]
    )


def fill(core: PexCore, count: int, first: int = 1000) -> list[NetAddress]:
    """Add ``count`` addresses, each from a source in another /16 (so buckets do not fill)."""
    added = [addr(first + i) for i in range(count)]
    for i, a in enumerate(added):
        src = addr(900_000 + i, f"{11 + i % 100}.{i // 100}.1.1")
        core.book.add_address(a, src, NOW)
    return added


# -- messages -------------------------------------------------------------------------------


def test_decode_unwraps_request_and_addrs() -> None:
    request = decode_pex_message(encode_pex_request().SerializeToString())
    assert isinstance(request, pex_pb2.PexRequest)
    sent = [addr(1), addr(2, "2001:4860::8888", 1)]
    decoded = decode_pex_message(encode_pex_addrs(sent).SerializeToString())
    assert isinstance(decoded, pex_pb2.PexAddrs)
    assert [NetAddress.from_proto(a) for a in decoded.addrs] == sent


def test_encoded_request_is_the_go_bytes() -> None:
    # Message{pex_request: PexRequest{}}: field 1, length 0 (wire.md §4.5).
    assert encode_pex_request().SerializeToString() == b"\x0a\x00"


@pytest.mark.parametrize(
    ("data", "offence"),
    [
        (b"\xff\xff\xff", Offence.UNDECODABLE),  # truncated varint tag
        (b"\x0a\x05\x01", Offence.UNDECODABLE),  # length beyond the end
        (b"", Offence.UNKNOWN_MESSAGE),  # empty Message: no oneof member
        (b"\x2a\x00", Offence.UNKNOWN_MESSAGE),  # field 5: no such member
    ],
)
def test_malformed_bytes_disconnect_without_ban(data: bytes, offence: Offence) -> None:
    with pytest.raises(PexMisbehaviourError) as info:
        decode_pex_message(data)
    assert info.value.offence is offence
    assert info.value.ban is False


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_random_bytes_decode_or_raise_only_pex_errors(data: bytes) -> None:
    try:
        message = decode_pex_message(data)
    except PexMisbehaviourError:
        return
    assert isinstance(message, pex_pb2.PexRequest | pex_pb2.PexAddrs)


# -- inbound request rate limit ---------------------------------------------------------------


def test_rate_limit_two_free_requests_then_one_per_interval() -> None:
    limiter = RequestRateLimiter(10.0)
    p = node_id(1)
    assert limiter.allow(p, NOW)
    assert limiter.allow(p, NOW)  # the second is free too, even at once
    assert not limiter.allow(p, NOW + timedelta(seconds=9.999))
    # The refused request was not recorded: the interval still counts from the second.
    assert limiter.allow(p, NOW + timedelta(seconds=10))
    assert not limiter.allow(p, NOW + timedelta(seconds=15))
    assert limiter.allow(p, NOW + timedelta(seconds=20))


def test_rate_limit_is_per_peer_and_forgotten_on_disconnect() -> None:
    limiter = RequestRateLimiter(10.0)
    a, b = node_id(1), node_id(2)
    for _ in range(2):
        assert limiter.allow(a, NOW)
    assert limiter.allow(b, NOW)
    assert not limiter.allow(a, NOW)
    limiter.forget(a)
    assert limiter.allow(a, NOW)
    assert limiter.allow(a, NOW)


def test_request_flood_disconnects_and_bans() -> None:
    core = make_core(ensure_peers_period_s=30.0)
    flooder = peer(7, outbound=False)
    core.book.add_address(flooder.socket_address, flooder.socket_address, NOW)
    core.on_request(flooder, NOW)
    core.on_request(flooder, NOW + timedelta(seconds=1))
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_request(flooder, NOW + timedelta(seconds=2))
    assert info.value.offence is Offence.REQUEST_TOO_SOON
    assert info.value.ban is True
    assert core.book.is_banned(flooder.socket_address)
    assert not core.book.has_address(flooder.socket_address)


def test_receive_interval_defaults_to_a_third_of_the_period() -> None:
    assert PexConfig().receive_request_interval_s == 10.0
    assert PexConfig(ensure_peers_period_s=0.3).receive_request_interval_s == pytest.approx(0.1)
    assert PexConfig(min_receive_request_interval_s=2.0).receive_request_interval_s == 2.0
    core = make_core(ensure_peers_period_s=3.0)
    requester = peer(1)
    core.on_request(requester, NOW)
    core.on_request(requester, NOW)
    core.on_request(requester, NOW + timedelta(seconds=1))  # exactly period / 3 later


# -- answering requests -----------------------------------------------------------------------


def test_request_answer_is_a_selection_without_the_requester() -> None:
    core = make_core()
    known = fill(core, 10)
    requester = PeerRef(known[0].id, False, known[0], known[0])
    decision = core.on_request(requester, NOW)
    assert decision.reply is not None
    assert not decision.disconnect_after_reply
    assert set(decision.reply) == set(known[1:])


def test_request_answer_is_capped_at_max_addrs_per_message() -> None:
    core = make_core(max_addrs_per_message=5)
    fill(core, 100)
    decision = core.on_request(peer(1), NOW)
    assert decision.reply is not None
    assert len(decision.reply) == 5
    # CometBFT's own cap: 250 of a big book.
    big = make_core()
    fill(big, 1200)
    reply = big.on_request(peer(1), NOW).reply
    assert reply is not None
    assert len(reply) == 250
    assert len(encode_pex_addrs(reply).SerializeToString()) < 64_000


def test_seed_answers_an_inbound_requester_once_then_ignores_it() -> None:
    core = make_core(seed_mode=True)
    fill(core, 40)
    requester = peer(1, outbound=False)
    first = core.on_request(requester, NOW)
    assert first.reply is not None
    assert len(first.reply) == 32
    assert first.disconnect_after_reply
    # While the graceful disconnect is under way, more requests are ignored, not punished.
    for _ in range(3):
        assert core.on_request(requester, NOW) == type(first)(None)


def test_seed_treats_outbound_peers_like_a_normal_node() -> None:
    core = make_core(seed_mode=True)
    fill(core, 5)
    crawled = peer(1, outbound=True)
    assert core.on_request(crawled, NOW).disconnect_after_reply is False
    core.on_request(crawled, NOW)
    with pytest.raises(PexMisbehaviourError):
        core.on_request(crawled, NOW)


# -- receiving addresses: the verdicts --------------------------------------------------------


def test_solicited_addrs_are_added_and_the_request_cleared() -> None:
    core = make_core()
    src = peer(1)
    core.request_sent(src.id, NOW)
    assert core.has_outstanding_request(src.id)
    report = core.on_addrs(src, addrs_message(addr(2), addr(3)), NOW)
    assert report.added == 2
    assert report.refused == 0
    assert report.already_known == 0
    assert core.book.has_address(addr(2))
    assert core.book.has_address(addr(3))
    assert core.book.get(node_id(2)) is not None
    entry = core.book.get(node_id(2))
    assert entry is not None
    assert entry.src == src.listen_address
    assert not core.has_outstanding_request(src.id)
    # A second, unrequested answer is unsolicited.
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(src, addrs_message(addr(4)), NOW)
    assert info.value.offence is Offence.UNSOLICITED_ADDRS


def test_unsolicited_addrs_disconnect_and_ban_and_add_nothing() -> None:
    core = make_core()
    intruder = peer(5, outbound=False)
    core.book.add_address(intruder.socket_address, intruder.socket_address, NOW)
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(intruder, addrs_message(addr(6)), NOW)
    assert (info.value.offence, info.value.ban) == (Offence.UNSOLICITED_ADDRS, True)
    assert core.book.is_banned(intruder.socket_address)
    assert not core.book.has_address(addr(6))


def test_unsolicited_addrs_from_an_unknown_peer_cannot_be_banned_by_id() -> None:
    # MarkBad acts only on IDs in the book (behaviour.md §4.5); the peer is still dropped.
    core = make_core()
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(peer(5), addrs_message(addr(6)), NOW)
    assert info.value.ban is True
    assert not core.book.is_banned(addr(5))


@pytest.mark.parametrize(
    "bad",
    [
        types_pb2.NetAddress(id=node_id(9), ip="not-an-ip", port=1),
        types_pb2.NetAddress(id=node_id(9), ip="", port=1),
        types_pb2.NetAddress(id=node_id(9), ip="1.2.3.4", port=65536),
    ],
    ids=["ip-text", "no-ip", "port"],
)
def test_malformed_address_disconnects_and_bans_even_if_solicited(
    bad: types_pb2.NetAddress,
) -> None:
    core = make_core()
    src = peer(1)
    core.book.add_address(src.socket_address, src.socket_address, NOW)
    core.request_sent(src.id, NOW)
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(src, addrs_message(addr(2), bad), NOW)
    assert (info.value.offence, info.value.ban) == (Offence.MALFORMED_ADDRESS, True)
    assert core.book.is_banned(src.socket_address)
    assert not core.book.has_address(addr(2))  # nothing of the message is kept


def test_too_many_addresses_disconnect_and_ban() -> None:
    core = make_core()
    src = peer(1)
    core.book.add_address(src.socket_address, src.socket_address, NOW)
    core.request_sent(src.id, NOW)
    message = addrs_message(*(addr(100 + i) for i in range(251)))
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(src, message, NOW)
    assert (info.value.offence, info.value.ban) == (Offence.TOO_MANY_ADDRS, True)
    assert core.book.size() == 0  # the sender itself was banned out of the book
    # Exactly the limit is fine.
    ok = make_core()
    ok.request_sent(src.id, NOW)
    report = ok.on_addrs(src, addrs_message(*(addr(100 + i) for i in range(250))), NOW)
    assert report.added == 250


def test_unparsable_source_disconnects_without_ban() -> None:
    core = make_core()
    odd = PeerRef(node_id(1), True, addr(1), None)
    core.book.add_address(addr(1), addr(1), NOW)
    core.request_sent(odd.id, NOW)
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(odd, addrs_message(addr(2)), NOW)
    assert (info.value.offence, info.value.ban) == (Offence.BAD_SOURCE, False)
    assert not core.book.is_banned(addr(1))


def _refusals(core: PexCore, src: PeerRef, *items: NetAddress) -> AddrsReport:
    core.request_sent(src.id, NOW)
    return core.on_addrs(src, addrs_message(*items), NOW)


def test_unroutable_addresses_are_refused_by_a_strict_book_and_the_peer_kept() -> None:
    core = make_core(strict=True)
    report = _refusals(
        core,
        peer(1),
        addr(2, "10.0.0.1"),
        addr(3, "127.0.0.1"),
        addr(4, "192.168.1.1"),
        addr(5, "fe80::1"),
        addr(6, "8.8.4.4"),
    )
    assert report.refusals == {AddrBookErrorReason.NON_ROUTABLE: 4}
    assert report.added == 1
    # A lax book (addr_book_strict = false) takes them.
    lax = make_core(strict=False)
    assert _refusals(lax, peer(1), addr(2, "10.0.0.1"), addr(3, "127.0.0.1")).added == 2


def test_invalid_addresses_are_refused_not_punished() -> None:
    core = make_core()
    no_id = NetAddress(NodeID(""), ipaddress.ip_address("8.8.8.8"), 1)
    report = _refusals(core, peer(1), no_id, addr(2, "0.0.0.0"), addr(3, "2001:db8::1"))
    assert report.refusals == {AddrBookErrorReason.INVALID: 3}


def test_our_own_address_is_refused() -> None:
    core = make_core()
    ours = addr(42)
    core.book.add_our_address(ours)
    report = _refusals(core, peer(1), ours, addr(43))
    assert report.refusals == {AddrBookErrorReason.SELF: 1}
    assert not core.book.has_address(ours)
    assert report.added == 1


def test_our_id_with_any_other_address_is_never_stored_nor_gossiped() -> None:
    """Issue #12 weakness 4: our ID on another IP or port, received over PEX, is us."""
    core = make_core(strict=False)
    ours = addr(42)
    core.book.add_our_address(ours)
    liar = [
        addr(42, "8.8.8.8"),
        addr(42, port=1234),
        NetAddress(NodeID(ours.id.upper()), ipaddress.ip_address("9.9.9.9"), 26656),
    ]
    report = _refusals(core, peer(1), *liar, addr(43))
    assert report.refusals == {AddrBookErrorReason.SELF: 3}
    assert report.added == 1
    assert core.book.get(ours.id) is None
    assert all(a.id != ours.id for a in core.book.get_selection())


def test_registering_our_id_drops_an_entry_already_held() -> None:
    """An addrbook.json written before the fix may hold our ID; it goes once we know it."""
    core = make_core(strict=False)
    core.book.add_address(addr(7, "8.8.8.8"), addr(1), NOW)
    assert core.book.get(node_id(7)) is not None
    core.book.add_our_id(node_id(7).upper())
    assert core.book.get(node_id(7)) is None
    assert core.book.get_selection() == []
    with pytest.raises(AddrBookError) as info:
        core.book.add_address(addr(7, "8.8.4.4"), addr(1), NOW)
    assert info.value.reason is AddrBookErrorReason.SELF


def test_private_ids_and_private_sources_are_refused() -> None:
    core = make_core()
    core.book.add_private_ids([node_id(50), node_id(60)])
    report = _refusals(core, peer(1), addr(50), addr(51))
    assert report.refusals == {AddrBookErrorReason.PRIVATE: 1}
    # Everything a private peer tells us is refused.
    report = _refusals(core, peer(60), addr(52), addr(53))
    assert report.refusals == {AddrBookErrorReason.PRIVATE_SRC: 2}
    error = AddrBookError(AddrBookErrorReason.PRIVATE, "x")
    assert error.private


def test_banned_addresses_are_refused() -> None:
    core = make_core()
    fill(core, 1, first=70)
    core.book.mark_bad(addr(70), BAN_S, NOW)
    report = _refusals(core, peer(1), addr(70))
    assert report.refusals == {AddrBookErrorReason.BANNED: 1}


def test_counts_separate_new_known_refused_and_skip_duplicates() -> None:
    core = make_core()
    fill(core, 3, first=10)  # IDs 10, 11, 12 known
    report = _refusals(
        core, peer(1), addr(10), addr(11), addr(20), addr(20), addr(21), addr(22, "10.1.1.1")
    )
    assert report.received == 6
    assert report.distinct == 5
    assert (report.added, report.already_known, report.refused) == (2, 2, 1)
    assert report.book_size_before == 3
    assert core.book.size() == 5


def test_addresses_from_a_seed_are_flagged() -> None:
    seed = addr(77)
    core = make_core()
    core.seed_addrs = (seed,)
    from_seed = PeerRef(seed.id, True, seed, seed)
    assert _refusals(core, from_seed, addr(2)).from_seed
    assert not _refusals(core, peer(3), addr(4)).from_seed


@given(
    st.lists(
        st.tuples(
            st.sampled_from([node_id(i) for i in range(1, 8)] + ["", "zz", "A" * 40]),
            st.sampled_from(["8.8.8.8", "10.0.0.1", "::1", "0.0.0.0", "x", "2001:db8::1"]),
            st.integers(min_value=0, max_value=70000),
        ),
        max_size=20,
    )
)
@settings(max_examples=200)
def test_any_addrs_message_gives_a_consistent_report_or_a_pex_error(
    items: list[tuple[str, str, int]],
) -> None:
    core = make_core()
    src = peer(1000)
    core.request_sent(src.id, NOW)
    message = pex_pb2.PexAddrs(
        addrs=[types_pb2.NetAddress(id=i, ip=ip, port=port) for i, ip, port in items]
    )
    try:
        report = core.on_addrs(src, message, NOW)
    except PexMisbehaviourError as exc:
        offence = exc.offence
        assert offence is Offence.MALFORMED_ADDRESS
        return
    assert report.added + report.already_known + report.refused == report.distinct
    assert sum(report.refusals.values()) == report.refused
    assert core.book.size() == report.added


# -- inbound peers --------------------------------------------------------------------------


def test_inbound_peer_is_its_own_source() -> None:
    core = make_core()
    p = peer(3, outbound=False)
    assert core.learn_inbound_peer(p, NOW) is not None
    entry = core.book.get(p.id)
    assert entry is not None
    assert entry.src == entry.addr == p.listen_address
    unparsable = PeerRef(node_id(4), False, addr(4), None)
    assert isinstance(core.learn_inbound_peer(unparsable, NOW), AddrBookError)
    zero = PeerRef(node_id(5), False, addr(5), addr(5, "0.0.0.0"))
    assert isinstance(core.learn_inbound_peer(zero, NOW), AddrBookError)


# -- requests we send -----------------------------------------------------------------------


def test_no_second_request_while_one_is_outstanding_or_within_the_gap() -> None:
    core = make_core(request_gap_s=10.0)
    p = peer(1)
    assert core.can_request(p.id, NOW)
    core.request_sent(p.id, NOW)
    assert not core.can_request(p.id, NOW + timedelta(hours=1))  # outstanding forever
    core.on_addrs(p, addrs_message(), NOW + timedelta(seconds=1))
    assert not core.can_request(p.id, NOW + timedelta(seconds=9))
    assert core.next_request_allowed_at(p.id) == NOW + timedelta(seconds=10)
    assert core.can_request(p.id, NOW + timedelta(seconds=10))
    core.request_sent(p.id, NOW + timedelta(seconds=10))
    core.request_not_sent(p.id)
    assert not core.has_outstanding_request(p.id)
    core.forget_peer(p.id)
    assert core.can_request(p.id, NOW)


# -- dialing --------------------------------------------------------------------------------


def test_ensure_peers_bias() -> None:
    assert [ensure_peers_bias(n) for n in (0, 1, 4, 8, 20)] == [10, 20, 50, 90, 90]


def test_plan_dials_picks_distinct_unconnected_addresses() -> None:
    core = make_core()
    known = fill(core, 20)
    connected = {a.id for a in known[:15]}
    plan = core.plan_dials(10, 2, lambda a: a.id in connected)
    assert len(plan) <= 5
    assert len({a.id for a in plan}) == len(plan)
    assert not {a.id for a in plan} & connected
    assert core.plan_dials(0, 0, lambda a: False) == []
    assert make_core().plan_dials(5, 0, lambda a: False) == []  # empty book


def test_plan_dials_finds_enough_candidates_in_a_big_book() -> None:
    core = make_core()
    fill(core, 200)
    assert len(core.plan_dials(10, 0, lambda a: False)) == 10


def test_dial_backoff_is_exponential_with_bounded_jitter() -> None:
    cfg = PexConfig(dial_backoff_unit_s=1.0, dial_backoff_jitter_s=1.0)
    backoff = DialBackoff(cfg, random.Random(3))
    a = addr(1)
    assert backoff.check(a, persistent=False, now=NOW) is DialVerdict.DIAL
    for n in range(1, 5):
        assert backoff.failed(a, NOW) == n
        # 2^n s plus jitter in [0, 1 s): too early just before 2^n, fine from 2^n + 1.
        assert backoff.check(a, persistent=False, now=NOW + timedelta(seconds=2**n - 0.001)) is (
            DialVerdict.TOO_EARLY
        )
        later = NOW + timedelta(seconds=2**n + 1)
        assert backoff.check(a, persistent=False, now=later) is DialVerdict.DIAL
    backoff.forget(a)
    assert backoff.attempts(a) == 0


def test_persistent_backoff_is_capped_by_max_dial_period() -> None:
    cfg = PexConfig(persistent_peers_max_dial_period_s=5.0)
    backoff = DialBackoff(cfg, random.Random(0))
    assert backoff.backoff_s(10, persistent=True) == 5.0
    assert backoff.backoff_s(10, persistent=False) >= 1024.0
    assert backoff.backoff_s(0, persistent=False) == 0.0


def test_too_many_failed_dials_ban_a_non_persistent_address() -> None:
    core = make_core(max_attempts_to_dial=3, dial_backoff_unit_s=0.0, dial_backoff_jitter_s=0.0)
    (a,) = fill(core, 1)
    for _ in range(4):
        assert core.check_dial(a, persistent=False, now=NOW) is DialVerdict.DIAL
        core.dial_failed(a, NOW)
    entry = core.book.get(a.id)
    assert entry is not None
    assert entry.attempts == 4
    assert core.check_dial(a, persistent=True, now=NOW) is DialVerdict.DIAL  # never given up
    assert core.check_dial(a, persistent=False, now=NOW) is DialVerdict.GIVE_UP
    assert core.book.is_banned(a)


def test_a_successful_dial_clears_the_backoff() -> None:
    core = make_core()
    (a,) = fill(core, 1)
    core.dial_failed(a, NOW)
    assert core.check_dial(a, persistent=False, now=NOW) is DialVerdict.TOO_EARLY
    core.dial_succeeded(a)
    assert core.check_dial(a, persistent=False, now=NOW) is DialVerdict.DIAL


def test_dialing_ourselves_forgets_the_address_for_good() -> None:
    core = make_core()
    (a,) = fill(core, 1)
    core.dialed_ourselves(a)
    assert not core.book.has_address(a)
    with pytest.raises(AddrBookError) as info:
        core.book.add_address(a, addr(5), NOW)
    assert info.value.reason is AddrBookErrorReason.SELF


# -- seed mode -------------------------------------------------------------------------------


def test_crawl_skips_recently_crawled_and_expires_records() -> None:
    core = make_core(min_time_between_crawls_s=120.0, crawl_retention_s=3600.0)
    a, b = addr(1), addr(2)
    assert core.crawl_targets([a, b], NOW) == [a, b]
    assert core.crawl_targets([a, b], NOW + timedelta(seconds=119)) == []
    assert core.crawl_targets([a], NOW + timedelta(seconds=120)) == [a]
    assert core.crawl_record(b.id) == NOW
    assert core.expire_crawl_records(NOW + timedelta(seconds=3601)) == 1  # b only
    assert core.crawl_record(b.id) is None
    assert core.crawl_record(a.id) == NOW + timedelta(seconds=120)


# -- config ------------------------------------------------------------------------------------


def test_config_defaults_are_cometbft_v038() -> None:
    cfg = PexConfig()
    assert cfg.strategy is RequestStrategy.V038
    assert cfg.ensure_peers_period_s == 30.0
    assert cfg.max_addrs_per_message == 250
    assert cfg.ban_time_s == BAN_S
    assert cfg.max_attempts_to_dial == 16
    assert (cfg.crawl_period_s, cfg.min_time_between_crawls_s) == (30.0, 120.0)
    assert cfg.seed_disconnect_wait_s == 28 * 3600.0
    assert cfg.save_interval_s == 120.0


@pytest.mark.parametrize(
    "changes",
    [
        {"ensure_peers_period_s": 0.0},
        {"ensure_peers_period_s": float("nan")},
        {"request_gap_s": -1.0},
        {"max_addrs_per_message": 0},
        {"adaptive_min_interval_s": 5.0, "adaptive_max_interval_s": 1.0},
        {"min_receive_request_interval_s": -0.5},
    ],
)
def test_config_rejects_nonsense(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PexConfig(**changes)  # type: ignore[arg-type]


def test_config_from_p2p_takes_seeds_mode_and_dial_period() -> None:
    from cometp2p.config import P2PConfig

    p2p = P2PConfig(seeds=("a@1.2.3.4:1",), seed_mode=True, persistent_peers_max_dial_period_s=7.0)
    cfg = PexConfig.from_p2p(p2p, ensure_peers_period_s=1.0)
    assert cfg.seeds == ("a@1.2.3.4:1",)
    assert cfg.seed_mode
    assert cfg.persistent_peers_max_dial_period_s == 7.0
    assert cfg.ensure_peers_period_s == 1.0
    with pytest.raises(ConfigError):
        PexConfig.from_p2p(p2p, no_such_knob=1)
