"""Seed mode's crawl hook: every round crawls through ``PEXReactor._crawl`` (issue #11).

The crawl moved to :class:`~cometp2p.pex.seed_mode.SeedModeCrawler`; the reactor's
``_crawl`` stays the hook a subclass overrides. The base reactor's crawl dials what its
book holds; :class:`~cometp2p.seed.reactor.VerifiedSeedReactor` overrides it and dials
nobody, while the rest of seed mode's routine keeps running.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.reactor import PEXReactor
from cometp2p.seed.reactor import VerifiedSeedReactor
from cometp2p.testing.network import make_switch, switch_address
from cometp2p.testing.pex import fast_pex
from cometp2p.wire.netaddress import NetAddress

TIMEOUT_S = 20.0


class _CountingSeedReactor(VerifiedSeedReactor):
    """The verified seed reactor, counting the crawl rounds that reach the hook."""

    def __init__(self, select: list[NetAddress]) -> None:
        super().__init__(lambda: list(select), lambda _addr: None, fast_pex(crawl_period_s=0.05))
        self.rounds: list[list[NetAddress]] = []
        self.three_rounds = asyncio.Event()

    async def _crawl(self, addrs: list[NetAddress]) -> None:
        self.rounds.append(addrs)
        if len(self.rounds) >= 3:  # the first crawl, then two periodic rounds
            self.three_rounds.set()
        await super()._crawl(addrs)


async def test_base_seed_mode_crawl_dials_the_book_and_asks_for_addresses() -> None:
    target = make_switch([("PEX", PEXReactor(AddrBook(strict=False, rng=random.Random(1))))])
    async with target:
        book = AddrBook(strict=False, rng=random.Random(2))
        addr = switch_address(target)
        book.add_address(addr, addr, datetime.now(UTC))
        reactor = PEXReactor(book, fast_pex(seed_mode=True), rng=random.Random(3))
        async with make_switch([("PEX", reactor)]), asyncio.timeout(TIMEOUT_S):
            await reactor.wait_for(lambda: reactor.counters.requests_sent >= 1)
        assert reactor.counters.dials >= 1


async def test_verified_seed_reactor_crawl_rounds_reach_the_hook_and_dial_nobody() -> None:
    target = make_switch([("PEX", PEXReactor(AddrBook(strict=False, rng=random.Random(1))))])
    async with target:
        reactor = _CountingSeedReactor([switch_address(target)])
        async with make_switch([("PEX", reactor)]):
            async with asyncio.timeout(TIMEOUT_S):
                await reactor.three_rounds.wait()
            assert reactor.counters.dials == 0
            assert reactor.counters.requests_sent == 0
            assert len(target.peers) == 0
        assert all(r == [switch_address(target)] for r in reactor.rounds)
