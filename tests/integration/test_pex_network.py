"""PEXReactor on loopback (behaviour.md §4, §9.1): networks, hostile peers, seeds, addrbook.json.

Every node runs with short intervals from :func:`fast_pex`; every wait is bounded and
synchronised on the reactors' own events (``PEXReactor.wait_for``), never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cometp2p.errors import ConfigError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook
from cometp2p.pex.config import PEX_CHANNEL, PexConfig, RequestStrategy
from cometp2p.pex.core import Offence, encode_pex_addrs, encode_pex_request
from cometp2p.pex.dialect import V035_MAX_ADDRESSES, format_pex_url, parse_pex_url
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.pex.reactor import PEXReactor
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.testing.pex import fast_pex
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2, types_pb2

NETWORK_SIZE = 30
OUTBOUND_TARGET = 8
CONVERGE_TIMEOUT_S = 60.0  # typically 1-3 s; bounded generously for a loaded CI machine
STEP_TIMEOUT_S = 10.0


@dataclass
class Node:
    switch: Switch
    pex: PEXReactor

    @property
    def id(self) -> NodeID:
        return self.switch.node_info.node_id

    @property
    def address(self) -> NetAddress:
        return switch_address(self.switch)

    def outbound(self) -> int:
        return self.switch.num_peers()[0]


def make_node(
    seed: int,
    *,
    pex: PexConfig | None = None,
    strict: bool = False,
    book: AddrBook | None = None,
    book_file: Path | None = None,
    moniker: str = "node",
    **p2p: object,
) -> Node:
    settings = pex or fast_pex()
    reactor = PEXReactor(
        book if book is not None else AddrBook(strict=strict, rng=random.Random(seed)),
        settings,
        book_file=book_file,
        rng=random.Random(seed + 10_000),
    )
    config = loopback_p2p_config(
        seeds=settings.seeds, seed_mode=settings.seed_mode, addr_book_strict=strict, **p2p
    )
    switch = make_switch([("PEX", reactor)], moniker=moniker, p2p=config)
    return Node(switch, reactor)


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node.switch)
        yield


async def wait_all(nodes: list[Node], predicate: Callable[[Node], bool]) -> None:
    """Until ``predicate`` holds for every node at once (re-checked after each PEX event)."""
    while not all(predicate(n) for n in nodes):
        for node in nodes:
            await node.pex.wait_for(functools.partial(predicate, node))


# -- a network bootstrapped from one seed ---------------------------------------------------------


def inbound_from(node: Node, network: set[NodeID]) -> int:
    return sum(1 for p in node.switch.peers.list() if not p.is_outbound and p.id in network)


def outbound_goal(node: Node, network: set[NodeID]) -> int:
    """The outbound target, or every other node that is not already our inbound peer.

    A node never dials a node connected to it the other way round. One that many nodes
    dialed first (the seed hands the earliest nodes to everyone) may have fewer than the
    target left to dial: with 30 nodes and a target of 8, 22 inbound peers leave it 7.
    """
    return min(OUTBOUND_TARGET, len(network) - 1 - inbound_from(node, network))


def states(nodes: list[Node], network: set[NodeID]) -> str:
    """Each node short of its goal: outbound / goal, inbound, known addresses."""
    return "; ".join(
        f"{n.switch.node_info.moniker}: out {n.outbound()}/{outbound_goal(n, network)}, "
        f"in {inbound_from(n, network)}, book {len(n.pex.book)}"
        for n in nodes
        if n.outbound() < outbound_goal(n, network)
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(RequestStrategy), ids=lambda s: s.value)
async def test_thirty_nodes_from_one_seed_reach_their_outbound_target(
    strategy: RequestStrategy,
) -> None:
    seed = make_node(1, pex=fast_pex(seed_mode=True), moniker="seed")
    async with running(seed):
        seeds = (str(seed.address),)
        nodes = [
            make_node(
                100 + i,
                pex=fast_pex(seeds=seeds, strategy=strategy),
                moniker=f"n{i}",
                max_num_outbound_peers=OUTBOUND_TARGET,
            )
            for i in range(NETWORK_SIZE)
        ]
        network = {n.id for n in nodes}
        async with running(*nodes):
            try:
                async with asyncio.timeout(CONVERGE_TIMEOUT_S):
                    await wait_all(nodes, lambda n: n.outbound() >= outbound_goal(n, network))
            except TimeoutError:
                pytest.fail(f"not converged in {CONVERGE_TIMEOUT_S} s: {states(nodes, network)}")
            # Never more than the target (behaviour.md §4.6: dials only fill the gap).
            assert all(n.outbound() <= OUTBOUND_TARGET for n in nodes)
            assert all(n.outbound() >= outbound_goal(n, network) for n in nodes)
            # Everyone heard of (nearly) everyone through PEX, and nobody misbehaved.
            everyone = {n.id for n in nodes} | {seed.id}
            for node in nodes:
                known = {ka.id for ka in node.pex.book}
                assert node.id not in known
                assert len(known & everyone) >= OUTBOUND_TARGET
                assert not node.pex.counters.violations
            assert not seed.pex.counters.violations
            assert seed.pex.counters.requests_answered >= 1
            if strategy is RequestStrategy.ADAPTIVE:
                assert all(n.pex.scheduler is not None for n in nodes)


# -- hostile peers --------------------------------------------------------------------------------


class PuppetReactor(Reactor):
    """Speaks raw bytes on the PEX channel, so a test can send anything."""

    def __init__(self) -> None:
        super().__init__()
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.added: asyncio.Queue[Peer] = asyncio.Queue()
        self.removed: asyncio.Queue[Peer] = asyncio.Queue()

    def get_channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                id=PEX_CHANNEL, priority=1, send_queue_capacity=10, recv_message_capacity=1 << 20
            )
        ]

    async def add_peer(self, peer: Peer) -> None:
        self.added.put_nowait(peer)

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.removed.put_nowait(peer)

    async def receive(self, envelope: Envelope) -> None:
        assert isinstance(envelope.message, bytes)
        self.received.put_nowait(envelope.message)

    async def next_message(self) -> pex_pb2.Message:
        return pex_pb2.Message.FromString(await self.received.get())


@dataclass
class Pair:
    target: Node
    puppet: Switch
    reactor: PuppetReactor

    @property
    def puppet_id(self) -> NodeID:
        return self.puppet.node_info.node_id

    def connected(self) -> bool:
        return self.target.switch.peers.has(self.puppet_id)

    def banned(self) -> bool:
        return self.target.pex.book.is_banned(switch_address(self.puppet))


@contextlib.asynccontextmanager
async def target_and_puppet(*, strict: bool = False, **pex: object) -> AsyncIterator[Pair]:
    """A PEX node (``ensure_peers_period`` 30 s, so its own routine stays quiet) and a
    puppet; nothing connected yet."""
    settings = fast_pex(ensure_peers_period_s=30.0, min_receive_request_interval_s=10.0, **pex)
    target = make_node(7, pex=settings, strict=strict, moniker="target")
    puppet_reactor = PuppetReactor()
    puppet = make_switch([("puppet", puppet_reactor)], moniker="puppet")
    async with running(target), puppet, asyncio.timeout(STEP_TIMEOUT_S):
        yield Pair(target, puppet, puppet_reactor)


async def puppet_dials_target(pair: Pair) -> Peer:
    """Puppet → target: the puppet is an inbound peer of the target, which lists its
    listen address in the (lax) book, so a ban of its ID takes effect."""
    peer = await pair.puppet.dial_peer_with_address(pair.target.address)
    await pair.target.pex.wait_for(
        lambda: pair.target.pex.book.has_address(switch_address(pair.puppet))
    )
    return peer


async def target_dials_puppet(pair: Pair) -> Peer:
    """Target → puppet: the target asks the puppet for addresses at once (v0.38); returns
    the puppet's view of the target once that request arrived. A lax book lists the
    puppet first, so that a ban of its ID takes effect."""
    book = pair.target.pex.book
    puppet = switch_address(pair.puppet)
    if not book.strict:
        book.add_address(puppet, puppet, pair.target.pex.now())
    await pair.target.switch.dial_peer_with_address(puppet)
    peer = await pair.reactor.added.get()
    request = await pair.reactor.next_message()
    assert request.WhichOneof("sum") == "pex_request"
    return peer


def _now(node: Node) -> object:
    return node.pex.now()


async def test_request_flood_gets_two_answers_then_a_disconnect_and_a_ban() -> None:
    async with target_and_puppet() as pair:
        peer = await puppet_dials_target(pair)
        for _ in range(3):
            assert await peer.send(PEX_CHANNEL, encode_pex_request())
        for _ in range(2):
            answer = await pair.reactor.next_message()
            assert answer.WhichOneof("sum") == "pex_addrs"
        await pair.reactor.removed.get()
        counters = pair.target.pex.counters
        assert counters.violations == {Offence.REQUEST_TOO_SOON: 1}
        assert counters.requests_answered == 2
        assert not pair.connected()
        assert pair.banned()


async def test_unsolicited_addrs_disconnect_and_ban() -> None:
    async with target_and_puppet() as pair:
        peer = await puppet_dials_target(pair)
        offered = NetAddress.parse(f"{'ab' * 20}@8.8.8.8:26656")
        assert await peer.send(PEX_CHANNEL, encode_pex_addrs([offered]))
        await pair.reactor.removed.get()
        assert pair.target.pex.counters.violations == {Offence.UNSOLICITED_ADDRS: 1}
        assert pair.banned()
        assert not pair.target.pex.book.has_address(offered)


async def test_undecodable_bytes_disconnect_without_ban() -> None:
    async with target_and_puppet() as pair:
        peer = await puppet_dials_target(pair)
        assert await peer.send(PEX_CHANNEL, b"\x0a\x05\x01")
        await pair.reactor.removed.get()
        assert pair.target.pex.counters.violations == {Offence.UNDECODABLE: 1}
        assert not pair.banned()
        assert pair.target.pex.book.has_address(switch_address(pair.puppet))


def _addrs_bytes(*items: types_pb2.NetAddress) -> bytes:
    return pex_pb2.Message(pex_addrs=pex_pb2.PexAddrs(addrs=list(items))).SerializeToString()


def _proto(n: int, ip: str, port: int = 26656) -> types_pb2.NetAddress:
    return types_pb2.NetAddress(id=f"{n:040x}", ip=ip, port=port)


@pytest.mark.parametrize(
    ("answer", "offence"),
    [
        (_addrs_bytes(_proto(1, "8.8.8.8"), _proto(2, "999.1.1.1")), Offence.MALFORMED_ADDRESS),
        (_addrs_bytes(_proto(1, "8.8.8.8", 70000)), Offence.MALFORMED_ADDRESS),
        (
            _addrs_bytes(*(_proto(i, f"8.8.{i // 250}.{i % 250}") for i in range(1, 252))),
            Offence.TOO_MANY_ADDRS,
        ),
    ],
    ids=["bad-ip", "bad-port", "too-many"],
)
async def test_hostile_answers_disconnect_and_ban(answer: bytes, offence: Offence) -> None:
    async with target_and_puppet() as pair:
        peer = await target_dials_puppet(pair)
        assert await peer.send(PEX_CHANNEL, answer)
        await pair.reactor.removed.get()
        assert pair.target.pex.counters.violations == {offence: 1}
        assert pair.banned()
        assert pair.target.pex.book.size() == 0  # nothing of the answer, and not the puppet


async def test_unroutable_own_and_private_addresses_are_refused_and_the_peer_kept() -> None:
    private_id = "cd" * 20
    async with target_and_puppet(strict=True) as pair:
        pex = pair.target.pex
        pex.book.add_private_ids([private_id])
        peer = await target_dials_puppet(pair)
        routable = NetAddress.parse(f"{'ef' * 20}@8.8.4.4:26656")
        answer = encode_pex_addrs(
            [
                NetAddress.parse(f"{'01' * 20}@10.0.0.1:26656"),  # RFC 1918
                NetAddress.parse(f"{'02' * 20}@127.0.0.5:26656"),  # loopback
                pair.target.address,  # the target itself
                NetAddress.parse(f"{private_id}@8.8.8.8:26656"),  # private ID
                routable,
            ]
        )
        assert await peer.send(PEX_CHANNEL, answer)
        await pex.wait_for(lambda: pex.counters.addrs_received == 1)
        assert pex.counters.addresses_refused == 4
        assert pex.counters.addresses_added == 1
        assert [ka.addr for ka in pex.book] == [routable]
        assert not pex.counters.violations
        assert pair.connected()


async def test_solicited_answer_is_taken_in() -> None:
    async with target_and_puppet() as pair:
        peer = await target_dials_puppet(pair)
        offered = [NetAddress.parse(f"{i:040x}@127.0.0.{i}:2665{i}") for i in range(1, 6)]
        assert await peer.send(PEX_CHANNEL, encode_pex_addrs(offered))
        pex = pair.target.pex
        await pex.wait_for(lambda: pex.counters.addrs_received == 1)
        assert {a.id for a in offered} <= {ka.id for ka in pex.book}
        entry = pex.book.get(offered[0].id)
        assert entry is not None
        assert entry.src.id == pair.puppet_id
        assert pair.connected()


# -- seed mode ------------------------------------------------------------------------------------


async def test_seed_answers_an_inbound_requester_once_then_disconnects_it() -> None:
    book = AddrBook(strict=False, rng=random.Random(3))
    known = [NetAddress.parse(f"{i:040x}@127.0.1.{i}:26656") for i in range(1, 11)]
    src = NetAddress.parse(f"{99:040x}@127.0.2.1:26656")
    seed = make_node(3, pex=fast_pex(seed_mode=True, crawl_period_s=30.0), book=book)
    for a in known:
        book.add_address(a, src, seed.pex.now())
    puppet_reactor = PuppetReactor()
    puppet = make_switch([("puppet", puppet_reactor)], moniker="client")
    async with running(seed), puppet, asyncio.timeout(STEP_TIMEOUT_S):
        peer = await puppet.dial_peer_with_address(seed.address)
        assert await peer.send(PEX_CHANNEL, encode_pex_request())
        answer = await puppet_reactor.next_message()
        got = {NetAddress.from_proto(a) for a in answer.pex_addrs.addrs}
        assert got <= set(known) | {switch_address(puppet)}
        assert set(known) <= got  # 10 of 11 known: all go out
        await puppet_reactor.removed.get()
        assert not seed.switch.peers.has(puppet.node_info.node_id)
        assert seed.pex.counters.requests_answered == 1
        assert not seed.pex.counters.violations


async def test_seed_crawls_the_addresses_it_knows() -> None:
    # a -> b -> c form a chain; the seed knows only a, and crawls its way to c.
    a, b, c = (make_node(20 + i, moniker=f"c{i}", max_num_outbound_peers=1) for i in range(3))
    seed = make_node(30, pex=fast_pex(seed_mode=True), moniker="crawler")
    async with running(a, b, c, seed), asyncio.timeout(STEP_TIMEOUT_S):
        now = seed.pex.now()
        a.pex.book.add_address(b.address, b.address, now)
        b.pex.book.add_address(c.address, c.address, now)
        seed.pex.book.add_address(a.address, a.address, now)
        wanted = {a.id, b.id, c.id}
        await seed.pex.wait_for(lambda: wanted <= {ka.id for ka in seed.pex.book})
        await seed.pex.wait_for(lambda: seed.pex.counters.requests_sent >= 3)
        assert seed.pex.core.crawl_record(a.id) is not None


# -- persistence and dial back-off ----------------------------------------------------------------


async def test_addrbook_is_saved_periodically_and_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "config" / "addrbook.json"
    node = make_node(40, book_file=path)
    other = make_node(41)
    async with running(node, other), asyncio.timeout(STEP_TIMEOUT_S):
        saver = node.pex.saver
        assert saver is not None
        await saver.wait_for_saves(2)  # every 0.2 s
        node.pex.book.add_address(other.address, other.address, node.pex.now())
    loaded = load_addrbook(path, strict=False, rng=random.Random(0))
    assert loaded.key == node.pex.book.key
    assert {ka.id for ka in loaded} == {ka.id for ka in node.pex.book}
    assert other.id in {ka.id for ka in loaded}
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(path.parent.glob("*.tmp"))


async def test_unreachable_address_is_retried_with_backoff() -> None:
    node = make_node(50, pex=fast_pex(ensure_peers_period_s=0.05, dial_backoff_unit_s=0.2))
    dead = NetAddress.parse(f"{'77' * 20}@127.0.0.1:1")  # nothing listens on port 1
    async with running(node), asyncio.timeout(STEP_TIMEOUT_S):
        node.pex.book.add_address(dead, dead, node.pex.now())
        await node.pex.wait_for(lambda: node.pex.core.backoff.attempts(dead) >= 3)
        entry = node.pex.book.get(dead.id)
        assert entry is not None
        assert entry.attempts >= 3
        # 0.2 * (2 + 4) s of back-off passed between three failures, at 20 rounds/s: far
        # fewer dials than rounds.
        assert node.pex.counters.dials_failed == node.pex.core.backoff.attempts(dead)


async def test_an_address_with_our_own_id_is_never_stored() -> None:
    """Issue #12: once started, the book refuses our ID on any address (Go stored it and
    dropped it only after dialing it)."""
    node = make_node(60, pex=fast_pex(ensure_peers_period_s=0.05))
    async with running(node):
        alias = NetAddress.parse(f"{node.id}@127.0.0.1:1")  # our ID, another port
        other = NetAddress.parse(f"{'55' * 20}@127.0.0.1:2")
        with pytest.raises(AddrBookError) as info:
            node.pex.book.add_address(alias, other, node.pex.now())
        assert info.value.reason is AddrBookErrorReason.SELF
        assert not node.pex.book.has_address(alias)
        assert node.pex.core.backoff.attempts(alias) == 0  # never dialed


async def test_mark_peer_as_good_promotes_the_peer_in_the_book() -> None:
    a, b = make_node(70), make_node(71)
    async with running(a, b), asyncio.timeout(STEP_TIMEOUT_S):
        a.pex.book.add_address(b.address, b.address, a.pex.now())
        await a.pex.wait_for(lambda: a.switch.peers.has(b.id))  # a dials b from its book
        peer = a.switch.peers.get(b.id)
        assert peer is not None
        assert not a.pex.book.is_good(b.address)
        a.switch.mark_peer_as_good(peer)
        assert a.pex.book.is_good(b.address)


async def test_malformed_seed_refuses_to_start() -> None:
    node = make_node(80, pex=fast_pex(seeds=("not-an-address",)))
    with pytest.raises(ConfigError, match="seed"):
        await node.switch.start()
    assert not node.switch.is_running


# -- tendermint v0.35 peers (behaviour.md §9.1) ------------------------------------------------


async def test_v2_requests_get_v2_answers_and_v035_pacing_is_never_punished() -> None:
    # A peer that sends PexRequestV2 speaks v0.35: it is answered with URLs (at most 100,
    # our own address first), and may ask every 200 ms where v0.38 bans the third request.
    async with target_and_puppet() as pair:
        peer = await puppet_dials_target(pair)
        answers: list[pex_pb2.PexResponseV2] = []
        for i in range(5):
            if i:
                await asyncio.sleep(0.3)  # the pacing under test: v0.35's 200 ms plus margin
            assert await peer.send(PEX_CHANNEL, encode_pex_request(v2=True))
            answer = await pair.reactor.next_message()
            assert answer.WhichOneof("sum") == "pex_response_v2"
            answers.append(answer.pex_response_v2)
        counters = pair.target.pex.counters
        assert counters.violations == {}
        assert counters.received_by_dialect == {"v0.35": 5}
        assert pair.connected()
        urls = [a.url for a in answers[0].addresses]
        assert urls[0] == format_pex_url(pair.target.address)
        assert all(parse_pex_url(url).address is not None for url in urls)
        assert len(urls) <= V035_MAX_ADDRESSES
        # Faster than v0.35 allows is still punished.
        assert await peer.send(PEX_CHANNEL, encode_pex_request(v2=True))
        assert await peer.send(PEX_CHANNEL, encode_pex_request(v2=True))
        await pair.reactor.removed.get()
        assert counters.violations == {Offence.REQUEST_TOO_SOON: 1}
        assert counters.refused_by_dialect == {"v0.35": 1}
        assert pair.banned()
