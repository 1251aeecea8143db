"""A small fault-injection network: PEX nodes over fuzzed links, with message accounting.

Used by ``tests/integration/test_faults.py`` (short, bounded runs) and ``bench/faults.py``
(minutes, with figures). Everything is in one process on 127.0.0.1.

* :class:`NumberingReactor` sends numbered messages to every peer and checks what
  arrives: per connection the numbers must be 0, 1, 2, ... with no reordering, no
  duplicate and no gap. A message the sender queued and the receiver never got is
  *lost*; it is allowed only on a connection whose end the sender was told about
  (``remove_peer``).
* :class:`FaultNet` starts a seed (in seed mode, as ``cometp2p localnet`` does) and
  ``n - 1`` members (PEX plus the numbering reactor, the seed as their only known
  address), optionally fuzzing every socket each node dials (so every link is fuzzed
  once, at its dialer), and samples whether the network is *converged*: every member
  holds at least ``target`` outbound peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cometp2p.config import FuzzConnConfig
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.reactor import PEXReactor
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.fuzz import FuzzRecorder, fuzz_switch
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.testing.pex import fast_pex

__all__ = [
    "NUMBERING_CHANNEL",
    "Accounting",
    "Convergence",
    "FaultNet",
    "NumberingReactor",
    "account",
]

NUMBERING_CHANNEL = 0x70
"""The numbering reactor's channel (unused by CometBFT)."""

_TOKEN_BYTES = 8


class NumberingReactor(Reactor):
    """Sends ``token || seq`` messages to each peer every ``interval_s`` and checks arrivals.

    Each connection gets a fresh random token on the sending side, so numbers restart
    at 0 per connection and reconnections are told apart.

    Args:
        rng: source of the tokens.
        interval_s: seconds between two messages to one peer.

    Attributes:
        sent: token -> messages queued (``Peer.send`` returned True).
        told: tokens whose connection ended with ``remove_peer`` on this side.
        delivered: (sender ID, token) -> messages received in order.
        violations: every reordering, duplicate or gap seen, as text.
    """

    def __init__(self, rng: random.Random, interval_s: float = 0.02) -> None:
        super().__init__()
        self.rng = rng
        self.interval_s = interval_s
        self.sending = True
        self.sent: dict[bytes, int] = {}
        self.told: set[bytes] = set()
        self.delivered: dict[tuple[str, bytes], int] = {}
        self.violations: list[str] = []
        self.added: list[str] = []
        self.removed: list[str] = []
        self._tokens: dict[Peer, bytes] = {}
        self._senders: dict[Peer, asyncio.Task[None]] = {}

    def get_channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                NUMBERING_CHANNEL, priority=5, send_queue_capacity=100, recv_message_capacity=64
            )
        ]

    async def add_peer(self, peer: Peer) -> None:
        token = self.rng.randbytes(_TOKEN_BYTES)
        self._tokens[peer] = token
        self.sent[token] = 0
        self.added.append(peer.id)
        self._senders[peer] = asyncio.get_running_loop().create_task(
            self._send_numbers(peer, token), name=f"numbers-{peer.id[:8]}"
        )

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        self.removed.append(peer.id)
        token = self._tokens.pop(peer, None)
        if token is not None:
            self.told.add(token)
        task = self._senders.pop(peer, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _send_numbers(self, peer: Peer, token: bytes) -> None:
        seq = 0
        while self.sending and peer.is_running:
            if await peer.send(NUMBERING_CHANNEL, token + seq.to_bytes(8, "big"), timeout_s=1.0):
                seq += 1
                self.sent[token] = seq
            await asyncio.sleep(self.interval_s)

    async def receive(self, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, bytes) or len(message) != _TOKEN_BYTES + 8:
            self.violations.append(f"malformed message from {envelope.src.id}: {message!r}")
            return
        token, seq = message[:_TOKEN_BYTES], int.from_bytes(message[_TOKEN_BYTES:], "big")
        key = (envelope.src.id, token)
        expected = self.delivered.get(key, 0)
        if seq != expected:
            kind = "duplicate or reordered" if seq < expected else "gap"
            self.violations.append(
                f"{kind} from {envelope.src.id[:8]}/{token.hex()}: expected {expected}, got {seq}"
            )
        self.delivered[key] = max(expected, seq + 1)


@dataclass(slots=True)
class Accounting:
    """Messages over the whole network.

    Attributes:
        sent: queued by senders.
        delivered: received in order.
        lost_told: lost on connections whose end the sender was told about.
        lost_untold: lost on connections still open for the sender (must be 0).
        connections: sending connections seen.
        violations: reorderings, duplicates and gaps (must be empty).
    """

    sent: int = 0
    delivered: int = 0
    lost_told: int = 0
    lost_untold: int = 0
    connections: int = 0
    violations: list[str] = field(default_factory=list)


def account(reactors: list[NumberingReactor]) -> Accounting:
    """Match every sender's counts with what its receivers got."""
    delivered: dict[bytes, int] = {}
    result = Accounting()
    for reactor in reactors:
        for (_, token), count in reactor.delivered.items():
            delivered[token] = delivered.get(token, 0) + count
        result.violations.extend(reactor.violations)
    for reactor in reactors:
        for token, sent in reactor.sent.items():
            got = delivered.get(token, 0)
            result.connections += 1
            result.sent += sent
            result.delivered += min(got, sent)
            if got > sent:
                result.violations.append(f"{token.hex()}: {got} delivered but {sent} sent")
            elif got < sent:
                if token in reactor.told:
                    result.lost_told += sent - got
                else:
                    result.lost_untold += sent - got
    return result


@dataclass(slots=True)
class Convergence:
    """Samples of "every node has at least ``target`` outbound peers".

    Attributes:
        samples: taken so far.
        converged: of those, converged.
        first_converged_s: seconds from the start to the first converged sample.
        longest_gap_s: the longest run of non-converged samples after the first converged
            one, seconds.
    """

    samples: int = 0
    converged: int = 0
    first_converged_s: float | None = None
    longest_gap_s: float = 0.0
    _gap_started: float | None = None

    def record(self, ok: bool, elapsed_s: float) -> None:
        """Add one sample taken ``elapsed_s`` after the start."""
        self.samples += 1
        if ok:
            self.converged += 1
            if self.first_converged_s is None:
                self.first_converged_s = elapsed_s
            if self._gap_started is not None:
                self.longest_gap_s = max(self.longest_gap_s, elapsed_s - self._gap_started)
                self._gap_started = None
        elif self.first_converged_s is not None and self._gap_started is None:
            self._gap_started = elapsed_s

    def fraction_after_first(self) -> float:
        """Converged share of the samples since the first converged one."""
        return self.converged / self.samples if self.samples else 0.0


class FaultNet:
    """``count`` PEX nodes with numbering reactors, all fuzzed by ``fuzz`` if given.

    Args:
        count: nodes, the seed included (node 0, in seed mode: it answers and hangs up).
        target: ``max_num_outbound_peers`` of every member; at most ``count - 2`` (the
            other members).
        fuzz: the fuzz settings of every dialed socket; ``None``: clean links.
        activate_after_s: per socket, seconds of clean running before fuzzing.
        seed: seeds every rng (books, reactors, fuzz).
        interval_s: the numbering reactors' send interval.

    Use ``async with FaultNet(...) as net:``; :meth:`sample` measures convergence.
    """

    def __init__(
        self,
        count: int = 6,
        *,
        target: int = 2,
        fuzz: FuzzConnConfig | None = None,
        activate_after_s: float = 1.0,
        seed: int = 0,
        interval_s: float = 0.02,
    ) -> None:
        if not 1 <= target <= count - 2:
            raise ValueError(f"target must be 1..{count - 2} for {count} nodes, got {target}")
        self.count = count
        self.target = target
        self.fuzz = fuzz
        self.activate_after_s = activate_after_s
        self.seed = seed
        self.interval_s = interval_s
        self.switches: list[Switch] = []
        self.numbering: list[NumberingReactor] = []
        self.pex: list[PEXReactor] = []
        self.fuzzers: list[FuzzRecorder] = []
        self.convergence = Convergence()

    def _node(self, i: int, seeds: tuple[str, ...]) -> Switch:
        seed_mode = i == 0
        pex = PEXReactor(
            AddrBook(strict=False, rng=random.Random(self.seed * 1000 + i)),
            fast_pex(seeds=seeds, seed_mode=seed_mode),
            rng=random.Random(self.seed * 2000 + i),
        )
        numbering = NumberingReactor(random.Random(self.seed * 3000 + i), self.interval_s)
        p2p = loopback_p2p_config(
            seeds=seeds, max_num_outbound_peers=self.target, seed_mode=seed_mode
        )
        switch = make_switch(
            [("PEX", pex), ("numbers", numbering)],
            moniker=f"n{i}",
            p2p=p2p,
            # A dropped write breaks its link only when the next frame arrives: a short ping
            # interval makes that frame come soon, so a link whose last messages were lost is
            # found broken (and the sender told) while `drain` waits, not 60 s later.
            mconnection_config=MConnectionConfig(ping_interval_s=1.5, pong_timeout_s=1.0),
        )
        if self.fuzz is not None:
            self.fuzzers.append(
                fuzz_switch(
                    switch,
                    self.fuzz,
                    seed=self.seed * 4000 + i,
                    activate_after_s=self.activate_after_s,
                    inbound=False,
                )
            )
        self.pex.append(pex)
        self.numbering.append(numbering)
        self.switches.append(switch)
        return switch

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[FaultNet]:
        async with contextlib.AsyncExitStack() as stack:
            first = self._node(0, ())
            await stack.enter_async_context(first)
            seeds = (str(switch_address(first)),)
            for i in range(1, self.count):
                await stack.enter_async_context(self._node(i, seeds))
            try:
                yield self
            finally:
                for reactor in self.numbering:
                    reactor.sending = False

    async def __aenter__(self) -> FaultNet:
        self._cm = self._running()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)  # type: ignore[arg-type]

    @property
    def members(self) -> list[Switch]:
        """Every node but the seed."""
        return self.switches[1:]

    def is_converged(self) -> bool:
        """Every member holds at least ``target`` outbound peers, or is connected to every
        other member (then it cannot dial anyone more: PEX never dials a peer it has)."""
        ids = {s.node_id for s in self.members}
        for switch in self.members:
            if switch.num_peers()[0] >= self.target:
                continue
            if sum(1 for p in switch.peers if p.id in ids) < len(ids) - 1:
                return False
        return True

    async def sample(self, duration_s: float, every_s: float = 0.05) -> Convergence:
        """Sample convergence for ``duration_s`` seconds (loop clock)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (now := loop.time()) - start < duration_s:
            self.convergence.record(self.is_converged(), now - start)
            await asyncio.sleep(every_s)
        return self.convergence

    async def wait_converged(self, timeout_s: float, every_s: float = 0.05) -> float:
        """Seconds until the network is converged; ``TimeoutError`` after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(timeout_s):
            while not self.is_converged():  # noqa: ASYNC110 - no event spans all nodes
                await asyncio.sleep(every_s)
        return loop.time() - start

    async def drain(self, timeout_s: float) -> Accounting:
        """Stop the senders, wait (bounded) until what open connections carry arrived,
        and account. Connections still open must have delivered everything."""
        for reactor in self.numbering:
            reactor.sending = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            result = account(self.numbering)
            if result.lost_untold == 0 or loop.time() >= deadline:
                return result
            await asyncio.sleep(0.05)

    def _member_links(self, attr: str) -> int:
        ids = {s.node_id for s in self.members}
        seen = sum(
            sum(1 for peer_id in getattr(r, attr) if peer_id in ids) for r in self.numbering[1:]
        )
        return seen // 2  # both ends see each link

    def links_broken(self) -> int:
        """Member-to-member connections that ended (the seed's hang-ups not counted)."""
        return self._member_links("removed")

    def links_made(self) -> int:
        """Member-to-member connections made."""
        return self._member_links("added")
