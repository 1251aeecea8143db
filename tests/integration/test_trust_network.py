"""Trust decides on loopback (behaviour.md §6, wiring): a peer that keeps sending protocol
errors ends below ``min_score``, is not redialed and not gossiped; an honest one stays at 100.

Every wait is a bounded poll on the nodes' own state, never a sleep for synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from cometp2p.config import TrustConfig
from cometp2p.errors import RemoteProtocolError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.reactor import PEXReactor
from cometp2p.sansio.mconnection import ChannelDescriptor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.testing.pex import fast_pex
from cometp2p.trust.reactor import TrustReactor
from cometp2p.trust.reasons import BadReason
from cometp2p.trust.store import TrustMetricStore

APP = 0x42
STEP_TIMEOUT_S = 15.0
TRUST = TrustConfig(min_score=50, ban_time_s=3600.0, interval_length_s=0.2, tracking_window_s=60.0)


class Strict(Reactor):
    """Channel 0x42 accepts only b"ok"; anything else is a protocol error."""

    def get_channels(self) -> list[ChannelDescriptor]:
        return [ChannelDescriptor(id=APP, priority=1, send_queue_capacity=10)]

    async def receive(self, envelope: Envelope) -> None:
        if envelope.message != b"ok":
            raise RemoteProtocolError(f"expected b'ok' on 0x42, got {envelope.message!r}")


class Talker(Strict):
    """Sends ``payload`` on 0x42 every 50 ms while connected; counts inbound connections."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.inbound_from: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add_peer(self, peer: Peer) -> None:
        if not peer.is_outbound:
            self.inbound_from[peer.id] = self.inbound_from.get(peer.id, 0) + 1
        task = asyncio.create_task(self._talk(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def receive(self, envelope: Envelope) -> None:
        pass  # the talkers do not judge

    async def _talk(self, peer: Peer) -> None:
        while peer.is_running:
            peer.try_send(APP, self.payload)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def pex_node(seed: int, app: Reactor, *extra: tuple[str, Reactor], **p2p: object) -> Switch:
    book = AddrBook(strict=False, rng=random.Random(seed))
    pex = PEXReactor(book, fast_pex(), rng=random.Random(seed + 1))
    return make_switch(
        [("PEX", pex), ("APP", app), *extra], moniker=f"n{seed}", p2p=loopback_p2p_config(**p2p)
    )


def pex_of(switch: Switch) -> PEXReactor:
    reactor = switch.reactor("PEX")
    assert isinstance(reactor, PEXReactor)
    return reactor


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (trust verdicts have no event to wait on), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT_S
    while True:
        if predicate():
            return
        if loop.time() >= deadline:
            raise AssertionError(f"not within {STEP_TIMEOUT_S} s: {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(*switches: Switch) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for switch in switches:
            await stack.enter_async_context(switch)
        yield


def gauge_peers(switch: Switch) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in switch.metrics.registry.collect():
        if family.name == "cometbft_p2p_peer_trust_score":
            for sample in family.samples:
                out[sample.labels["peer_id"]] = sample.value
    return out


async def test_protocol_errors_sink_a_peer_while_an_honest_one_stays_at_100(
    tmp_path: Path,
) -> None:
    honest_talker, bad_talker = Talker(b"ok"), Talker(b"not ok")
    honest = pex_node(1, honest_talker)
    bad = pex_node(2, bad_talker)
    trust = TrustReactor(TRUST, db_path=tmp_path / "data" / "trust.sqlite")
    node = pex_node(3, Strict(), ("TRUST", trust))
    async with running(honest, bad, node):
        h, m = switch_address(honest), switch_address(bad)
        book = pex_of(node).book
        now = pex_of(node).now()
        book.add_address(h, m, now)
        book.add_address(m, h, now)
        # The bad peer also keeps coming back by itself: the node is its persistent peer.
        bad.add_persistent_peers([switch_address(node)])
        bad.dial_peers_async([switch_address(node)])

        await until(lambda: trust.is_distrusted(m.id), "the bad peer is distrusted")
        assert trust.score(m.id) < TRUST.min_score
        assert book.is_banned(m)
        dials_at_distrust = bad_talker.inbound_from.get(node.node_id, 0)
        errors_at_distrust = trust.bad_events[BadReason.PROTOCOL_ERROR]

        # It keeps coming back and failing; meanwhile the node runs many ensure-peers
        # rounds (0.3 s) and metric intervals (0.2 s).
        await until(
            lambda: trust.bad_events[BadReason.PROTOCOL_ERROR] >= errors_at_distrust + 5,
            "five more protocol errors",
        )
        await until(lambda: node.peers.get(h.id) is not None, "the honest peer is connected")
        honest_metric = trust.store.get(h.id) if trust.store else None
        assert honest_metric is not None
        intervals = honest_metric.num_intervals
        await until(lambda: honest_metric.num_intervals >= intervals + 5, "five intervals")
        assert bad_talker.inbound_from.get(node.node_id, 0) == dials_at_distrust  # not redialed
        assert trust.score(m.id) < TRUST.min_score
        assert not trust.allows(m.id)
        assert trust.score(h.id) == 100
        assert gauge_peers(node).get(h.id) == 100.0
        stops = node.metrics.registry.get_sample_value(
            "cometbft_p2p_peer_trust_bad_events_total",
            {"chain_id": "test-chain", "reason": "protocol_error"},
        )
        assert stops is not None
        assert stops >= errors_at_distrust + 5

        # A newcomer asking the node for addresses hears of the honest peer only.
        newcomer = pex_node(4, Strict())
        async with running(newcomer):
            await newcomer.dial_peer_with_address(switch_address(node))
            newcomer_book = pex_of(newcomer).book
            await until(lambda: newcomer_book.has_address(h), "the newcomer learns the honest peer")
            assert not newcomer_book.has_address(m)
            assert pex_of(node).counters.requests_answered >= 1

        # Once the bad peer is gone, its gauge series is gone too.
        await bad.stop()
        await until(lambda: node.peers.get(m.id) is None, "the bad peer is disconnected")
        assert m.id not in gauge_peers(node)
    # Saved at stop: the histories (Go persists no more than that) carry the verdicts.
    store = TrustMetricStore(tmp_path / "data" / "trust.sqlite")
    assert store.metric(m.id).history_value < 0.5
    assert store.metric(m.id).judged_score() < TRUST.min_score
    assert store.metric(h.id).history_value == 1.0
    assert store.metric(h.id).trust_score() == 100
    assert set(store.bans()) == {m.id}
    store.close(save=False)
    # A restarted node still neither dials nor gossips the bad peer.
    again = TrustReactor(TRUST, db_path=tmp_path / "data" / "trust.sqlite")
    make_switch([("TRUST", again)])
    await again.start()
    try:
        assert again.is_distrusted(m.id)
        assert not again.allows(m.id)
        assert again.allows(h.id)
    finally:
        await again.stop()
