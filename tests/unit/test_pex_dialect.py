"""Tendermint v0.35 PEX (behaviour.md §9.1): V2 messages with URLs and v0.35's receive rules."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometp2p.errors import RemoteProtocolError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.core import (
    Offence,
    PeerRef,
    PexCore,
    PexMisbehaviourError,
    decode_pex_message,
    encode_pex_addrs,
    encode_pex_request,
    encode_pex_response_v2,
)
from cometp2p.pex.dialect import (
    V035_MAX_ADDRESSES,
    PexDialect,
    V035RequestLimiter,
    dialect_of_version,
    format_pex_url,
    parse_pex_url,
)
from cometp2p.pex.errors import AddrBookErrorReason
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def node_id(n: int) -> NodeID:
    return NodeID(f"{n:040x}")


def addr(n: int, ip: str | None = None, port: int = 26656) -> NetAddress:
    return NetAddress(
        node_id(n), ipaddress.ip_address(ip or f"8.{n // 256 % 256}.{n % 256}.1"), port
    )


def peer(n: int, dialect: PexDialect = PexDialect.V035, *, outbound: bool = True) -> PeerRef:
    a = addr(n)
    return PeerRef(node_id(n), outbound, a, a, dialect)


def make_core(**changes: object) -> PexCore:
    book = AddrBook(strict=True, rng=random.Random(0))
    return PexCore(book, PexConfig(**changes), rng=random.Random(1))  # type: ignore[arg-type]


def fill(core: PexCore, count: int) -> None:
    for i in range(count):
        src = addr(900_000 + i, f"{11 + i % 100}.{i // 100}.1.1")
        core.book.add_address(addr(1000 + i), src, NOW)


def v2_message(*urls: str) -> pex_pb2.PexResponseV2:
    return pex_pb2.PexResponseV2(addresses=[pex_pb2.PexAddressV2(url=u) for u in urls])


# -- dialect -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "dialect"),
    [
        ("0.35.8", PexDialect.V035),  # what v0.35.9 puts in its NodeInfo
        ("v0.35.0", PexDialect.V035),
        ("0.35.9-rc1", PexDialect.V035),
        ("0.34.24", PexDialect.V038),
        ("0.38.25", PexDialect.V038),
        ("0.350.1", PexDialect.V038),
        ("", PexDialect.V038),
    ],
)
def test_dialect_of_version(version: str, dialect: PexDialect) -> None:
    assert dialect_of_version(version) is dialect


# -- URLs ----------------------------------------------------------------------------------


def _not_v4_mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # NetAddress normalises IPv4-mapped IPv6 to IPv4.
    return not isinstance(ip, ipaddress.IPv6Address) or ip.ipv4_mapped is None


ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6).filter(_not_v4_mapped))
net_addresses = st.builds(
    NetAddress,
    st.binary(min_size=20, max_size=20).map(lambda b: NodeID(b.hex())),
    ips,
    st.integers(0, 65535),
)


@given(net_addresses)
def test_url_round_trip(address: NetAddress) -> None:
    url = format_pex_url(address)
    assert url.startswith("mconn://")
    assert parse_pex_url(url).address == address


@given(st.lists(net_addresses, max_size=V035_MAX_ADDRESSES))
def test_response_v2_round_trips_through_the_wire(addresses: list[NetAddress]) -> None:
    decoded = decode_pex_message(encode_pex_response_v2(addresses).SerializeToString())
    assert isinstance(decoded, pex_pb2.PexResponseV2)
    assert [parse_pex_url(a.url).address for a in decoded.addresses] == addresses


def test_request_v2_bytes_and_decoding() -> None:
    # Message{pex_request_v2: PexRequestV2{}}: field 3, length 0 (v0.35.9 pex.proto).
    assert encode_pex_request(v2=True).SerializeToString() == b"\x1a\x00"
    assert isinstance(decode_pex_message(b"\x1a\x00"), pex_pb2.PexRequestV2)
    assert encode_pex_request().SerializeToString() == b"\x0a\x00"


@given(st.text(max_size=120))
@settings(max_examples=400)
def test_parsing_any_text_gives_an_address_none_or_a_protocol_error(text: str) -> None:
    try:
        parsed = parse_pex_url(text)
    except RemoteProtocolError:
        return
    if parsed.address is not None:
        assert text.startswith("mconn://")
    else:
        assert parsed.reason


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mconn://",
        f"{'a' * 40}@1.2.3.4:26656",  # no scheme
        f"mconn://{'a' * 40}@1.2.3.4",  # no port
        f"mconn://{'a' * 40}@1.2.3.4:65536",
        f"mconn://{'a' * 40}@1.2.3.4:-1",
        f"mconn://{'a' * 40}@1.2.3.4:26656/path",
        f"mconn://{'a' * 40}@:26656",
        f"mconn://{'a' * 40}@1.2.3.4:26656?x=1",
        "mconn://a@b@1.2.3.4:26656",
        f"MCONN://{'a' * 40}@1.2.3.4:26656",
        f"mconn://{'a' * 40}@::1:26656",  # IPv6 without brackets
    ],
)
def test_malformed_urls_raise(url: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_pex_url(url)


@pytest.mark.parametrize(
    "url",
    [
        f"memory:{'a' * 40}",
        f"tcp://{'a' * 40}@1.2.3.4:26656",
        f"mconn://{'a' * 40}@node0.example:26656",
    ],
)
def test_well_formed_but_unusable_urls_give_no_address(url: str) -> None:
    parsed = parse_pex_url(url)
    assert parsed.address is None
    assert parsed.reason


# -- receive rules ---------------------------------------------------------------------------


def test_v2_request_is_answered_with_v2_and_at_most_100_addresses() -> None:
    core = make_core()
    fill(core, 1200)
    decision = core.on_request(peer(1), NOW, v2=True)
    assert decision.v2
    assert decision.reply is not None
    assert 0 < len(decision.reply) <= V035_MAX_ADDRESSES
    v1 = core.on_request(peer(1), NOW + timedelta(seconds=1))
    assert not v1.v2
    assert v1.reply is not None
    assert len(v1.reply) <= V035_MAX_ADDRESSES
    # A CometBFT peer still gets up to 250.
    v038 = core.on_request(peer(2, PexDialect.V038), NOW)
    assert v038.reply is not None
    assert len(v038.reply) > V035_MAX_ADDRESSES


def test_v035_peer_may_ask_every_200_ms_but_not_faster() -> None:
    core = make_core()
    fill(core, 10)
    p = peer(1)
    for i in range(50):  # v0.38 would ban at the third
        core.on_request(p, NOW + timedelta(milliseconds=200 * i))
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_request(p, NOW + timedelta(milliseconds=200 * 49 + 50))
    assert info.value.offence is Offence.REQUEST_TOO_SOON
    assert info.value.ban
    # The v0.38 rule is unchanged for CometBFT peers.
    q = peer(2, PexDialect.V038)
    core.on_request(q, NOW)
    core.on_request(q, NOW + timedelta(seconds=1))
    with pytest.raises(PexMisbehaviourError):
        core.on_request(q, NOW + timedelta(seconds=2))


def _go_v035_interval_s(total: int, added: int, available: int) -> float:
    """v0.35.9 ``calculateNextRequestTime`` (behaviour.md §9.1), store not full."""
    if available == 0:
        return 1.0
    return (0.2 / available) * ((total + 1) / (added + 1)) ** 2 + 0.2


@given(
    st.lists(
        st.tuples(st.integers(0, 100), st.integers(1, 64), st.floats(0.0, 0.09)),
        min_size=2,
        max_size=60,
    ),
    st.floats(0.0, 0.09),
)
def test_a_v035_sender_following_its_own_rules_is_never_refused(
    steps: list[tuple[int, int, float]], first_delay: float
) -> None:
    # One v0.35 node asking us (its only peer, or one of many): it waits its interval,
    # asks, we answer, it recomputes. Each request's delivery is delayed by < 90 ms.
    limiter = V035RequestLimiter()
    sent_at = 0.0
    total = 0
    delay = first_delay
    for added, available, next_delay in steps:
        arrival = NOW + timedelta(seconds=sent_at + delay)
        assert limiter.allow(node_id(1), arrival)
        total += added
        sent_at += _go_v035_interval_s(total, added, available)
        delay = next_delay


def test_v035_response_over_100_addresses_is_banned_v038_is_not() -> None:
    core = make_core()
    urls = [format_pex_url(addr(5000 + i)) for i in range(V035_MAX_ADDRESSES + 1)]
    p = peer(1)
    core.request_sent(p.id, NOW)
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(p, v2_message(*urls), NOW)
    assert info.value.offence is Offence.TOO_MANY_ADDRS
    q = peer(2, PexDialect.V038)
    core.request_sent(q.id, NOW)
    report = core.on_addrs(q, encode_pex_addrs([addr(7000 + i) for i in range(200)]).pex_addrs, NOW)
    assert report.received == 200


def test_v2_response_adds_urls_refuses_unusable_and_bans_malformed() -> None:
    core = make_core()
    p = peer(1)
    core.request_sent(p.id, NOW)
    report = core.on_addrs(
        p,
        v2_message(
            format_pex_url(addr(10)),
            format_pex_url(addr(11, "2001:4860::8888")),
            f"memory:{'a' * 40}",
            f"mconn://{'b' * 40}@seed.example:26656",
        ),
        NOW,
    )
    assert report.added == 2
    assert report.refused == 2
    assert report.refusals[AddrBookErrorReason.INVALID] == 2
    assert core.book.has_address(addr(10))
    core.book.add_address(p.socket_address, p.socket_address, NOW)  # bans apply to known ones
    core.request_sent(p.id, NOW)
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(p, v2_message(format_pex_url(addr(12)), "mconn://nope"), NOW)
    assert info.value.offence is Offence.MALFORMED_ADDRESS
    assert info.value.ban
    assert core.book.is_banned(p.socket_address)
    assert not core.book.has_address(addr(12))  # nothing of the message is kept


def test_unsolicited_v2_response_is_banned() -> None:
    core = make_core()
    with pytest.raises(PexMisbehaviourError) as info:
        core.on_addrs(peer(1), v2_message(format_pex_url(addr(10))), NOW)
    assert info.value.offence is Offence.UNSOLICITED_ADDRS


def test_answers_to_v035_peers_start_with_our_own_address() -> None:
    # v0.35 learns addresses only from PEX, and its own Advertise puts itself first.
    core = make_core()
    fill(core, 30)
    ours = addr(77)
    core.self_address = ours
    to_v035 = core.on_request(peer(1), NOW, v2=True)
    assert to_v035.reply is not None
    assert to_v035.reply[0] == ours
    assert to_v035.reply.count(ours) == 1
    to_v038 = core.on_request(peer(2, PexDialect.V038), NOW)
    assert to_v038.reply is not None
    assert ours not in to_v038.reply
    # Never the requester's own address, even if it were ours.
    core.self_address = addr(3)
    assert addr(3) not in (core.on_request(peer(3), NOW).reply or ())
