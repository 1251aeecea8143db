"""PexCore.seed_fallback_due: the sans-IO clock of the seed fallback (issue 10)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.core import PexCore
from cometp2p.wire.netaddress import NetAddress

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SEED = NetAddress.parse(f"{'ab' * 20}@127.0.0.1:26656", resolve=False)


def _core(*, seeds: bool = True, after_s: float | None = 10.0) -> PexCore:
    config = PexConfig(ensure_peers_period_s=30.0, seed_fallback_s=after_s)
    return PexCore(
        AddrBook(strict=False, rng=random.Random(1)),
        config,
        rng=random.Random(2),
        seed_addrs=(SEED,) if seeds else (),
    )


def _at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_due_after_the_bounded_time_without_outbound_then_waits_as_long_again() -> None:
    core = _core()
    assert core.seed_fallback_due(0, _at(0)) is None  # starts the clock
    assert core.seed_fallback_due(0, _at(9.9)) is None
    assert core.seed_fallback_due(0, _at(10.5)) == 10.5
    assert core.seed_fallback_due(0, _at(15)) is None  # rate-limited: once per period
    assert core.seed_fallback_due(0, _at(20.5)) == 10.0


def test_an_outbound_peer_resets_the_clock() -> None:
    core = _core()
    core.seed_fallback_due(0, _at(0))
    assert core.seed_fallback_due(1, _at(8)) is None
    assert core.seed_fallback_due(0, _at(12)) is None  # the clock restarted at 12
    assert core.seed_fallback_due(0, _at(22)) == 10.0


def test_never_due_without_seeds() -> None:
    core = _core(seeds=False)
    assert all(core.seed_fallback_due(0, _at(s)) is None for s in range(0, 1000, 50))


def test_default_is_two_ensure_peers_periods() -> None:
    assert PexConfig(ensure_peers_period_s=30.0).seed_fallback_after_s == 60.0
    core = _core(after_s=None)
    core.seed_fallback_due(0, _at(0))
    assert core.seed_fallback_due(0, _at(59)) is None
    assert core.seed_fallback_due(0, _at(60)) == 60.0
