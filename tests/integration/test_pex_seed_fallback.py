"""PEX seed fallback (issue 10): a book full of dead addresses must not keep a node from its
seeds. Go dials seeds only when the book yields no candidate; we also dial them after a
bounded time without an outbound peer, and say why at INFO."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.testing.pex import fast_pex
from cometp2p.wire.netaddress import NetAddress

DEAD = 40
DEADLINE_S = 10.0


def _node(seed: int, pex: PexConfig, moniker: str) -> tuple[Switch, PEXReactor]:
    reactor = PEXReactor(
        AddrBook(strict=False, rng=random.Random(seed)), pex, rng=random.Random(seed)
    )
    p2p = loopback_p2p_config(seeds=pex.seeds, seed_mode=pex.seed_mode, addr_book_strict=False)
    return make_switch([("PEX", reactor)], moniker=moniker, p2p=p2p), reactor


async def test_a_node_whose_book_holds_only_dead_addresses_dials_its_seed_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cometp2p.pex.reactor")
    seed_switch, seed_pex = _node(1, fast_pex(seed_mode=True), "seed")
    async with seed_switch:
        seed_address = str(switch_address(seed_switch))
        # Slow back-off: the dead addresses stay in the book for the whole test, as they
        # do for minutes with CometBFT's defaults (what broke a second `localnet` run).
        pex = fast_pex(
            seeds=(seed_address,),
            dial_backoff_unit_s=5.0,
            max_attempts_to_dial=100,
        )
        switch, reactor = _node(2, pex, "node")
        now = reactor.now()
        for port in range(1, DEAD + 1):  # nothing listens on these loopback ports
            dead = NetAddress.parse(f"{port:040x}@127.0.0.1:{port}")
            reactor.book.add_address(dead, dead, now)
        async with switch, asyncio.timeout(DEADLINE_S):
            await reactor.wait_for(lambda: reactor.counters.seed_dials >= 1)
            await seed_pex.wait_for(lambda: seed_pex.counters.requests_answered >= 1)
            assert len(reactor.book) >= DEAD  # the book still held its dead addresses
    assert any(
        r.levelno == logging.INFO and "dialing the seeds again" in r.getMessage()
        for r in caplog.records
    )
