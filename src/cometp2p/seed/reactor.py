"""The seed's PEX reactor: CometBFT's seed mode, answering only with verified peers.

It is the :class:`~cometp2p.pex.reactor.PEXReactor` in seed mode (behaviour.md §4.7):
an inbound peer's first ``PexRequest`` gets one answer and then a graceful disconnect, a
repeat is ignored, peers held too long are let go. Two things differ:

* the answer is drawn by ``select`` (the service's verified peers, favouring recent
  verification and diverse groups) through :class:`VerifiedBook`, instead of from an
  address book fed by what peers say, so nothing unverified is ever handed out (the
  core's rules still choose when to answer, how many and to whom);
* the reactor dials nobody: the service's crawl rounds (:mod:`cometp2p.seed.rounds`) do
  the crawling, with real handshakes. An inbound peer's listen address is passed to
  ``on_inbound`` so that the crawl verifies it too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import replace

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.peer import Peer
from cometp2p.wire.netaddress import NetAddress

__all__ = ["VerifiedBook", "VerifiedSeedReactor"]

logger = logging.getLogger(__name__)


class VerifiedBook(AddrBook):
    """An AddrBook whose selections are ``select()``: what PEX hands out comes from there.

    Everything else is the ordinary book (an inbound peer's address may still be added to
    it, as seed mode does, but nothing reads it back).
    """

    def __init__(self, select: Callable[[], list[NetAddress]], *, rng: random.Random) -> None:
        super().__init__(strict=False, rng=rng)
        self._select = select

    def get_selection(self) -> list[NetAddress]:
        """The verified peers (see :meth:`SeedService.pex_selection`)."""
        return self._select()

    def get_selection_with_bias(self, bias_new: int) -> list[NetAddress]:
        """The verified peers; ``bias_new`` is ignored (recency weighs instead)."""
        return self._select()


class VerifiedSeedReactor(PEXReactor):
    """A seed-mode PEX reactor that hands out ``select()`` and never dials.

    Args:
        select: returns the addresses to offer (the core's rules then apply: at most
            ``max_addrs_per_message``, never the requester's own, trust filter if any).
        on_inbound: called with an inbound peer's listen address (unverified).
        config: PEX settings; ``seed_mode`` is forced on and ``seeds`` off.
        rng: randomness for the reactor.
    """

    def __init__(
        self,
        select: Callable[[], list[NetAddress]],
        on_inbound: Callable[[NetAddress], None],
        config: PexConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng if rng is not None else random.Random()
        base = config if config is not None else PexConfig()
        super().__init__(
            VerifiedBook(select, rng=rng), replace(base, seed_mode=True, seeds=()), rng=rng
        )
        self._on_inbound = on_inbound

    async def add_peer(self, peer: Peer) -> None:
        """As seed mode does; an inbound peer's listen address also goes to the crawl."""
        await super().add_peer(peer)
        if not peer.is_outbound:
            addr = self._ref(peer).listen_address
            if addr is not None:
                self._on_inbound(addr)

    async def _crawl(self, addrs: list[NetAddress]) -> None:
        # Seed mode's own crawl dials through the Switch; the service's rounds crawl
        # instead (real handshakes, their own schedule), so this one dials nobody. The
        # rest of seed mode's routine (letting go of peers held too long) still runs.
        return
