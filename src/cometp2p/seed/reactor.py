"""The seed's PEX reactor: CometBFT's seed mode, answering only with verified peers.

It is the :class:`~cometp2p.pex.reactor.PEXReactor` in seed mode (behaviour.md §4.7):
an inbound peer's first ``PexRequest`` gets one answer and then a graceful disconnect, a
repeat is ignored, peers held too long are let go. Two things differ:

* the answer is drawn by ``select`` (the service's verified peers, favouring recent
  verification and diverse groups) instead of from an address book fed by what peers
  say, so nothing unverified is ever handed out;
* the reactor dials nobody: the service's crawl rounds (:mod:`cometp2p.seed.rounds`) do
  the crawling, with real handshakes. An inbound peer's listen address is passed to
  ``on_inbound`` so that the crawl verifies it too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PEX_CHANNEL, PexConfig
from cometp2p.pex.core import encode_pex_addrs
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.peer import Peer
from cometp2p.wire.netaddress import NetAddress

__all__ = ["VerifiedSeedReactor"]

logger = logging.getLogger(__name__)


class VerifiedSeedReactor(PEXReactor):
    """A seed-mode PEX reactor that hands out ``select()`` and never dials.

    Args:
        select: returns the addresses to offer (at most ``max_addrs_per_message`` are sent,
            never the requester's own).
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
            AddrBook(strict=False, rng=rng), replace(base, seed_mode=True, seeds=()), rng=rng
        )
        self._select = select
        self._on_inbound = on_inbound
        self.answers: list[tuple[str, tuple[NetAddress, ...]]] = []
        """``(peer ID, addresses)`` of the last answers sent (at most 100 kept)."""

    async def add_peer(self, peer: Peer) -> None:
        """As seed mode does; an inbound peer's listen address also goes to the crawl."""
        await super().add_peer(peer)
        if not peer.is_outbound:
            addr = self._ref(peer).listen_address
            if addr is not None:
                self._on_inbound(addr)

    async def _on_request(self, peer: Peer, now: datetime) -> None:
        # The core keeps seed mode's rules (one answer per inbound peer, then goodbye);
        # only the addresses come from the verified set.
        decision = self.core.on_request(self._ref(peer), now)
        if decision.reply is None:
            return
        limit = self.config.max_addrs_per_message
        reply = tuple(a for a in self._select() if a.id != peer.id)[:limit]
        self.counters.requests_answered += 1
        self.answers = [*self.answers[-99:], (peer.id, reply)]
        await peer.send(PEX_CHANNEL, encode_pex_addrs(reply))
        if decision.disconnect_after_reply:
            self._spawn(self._switch().stop_peer_gracefully(peer), f"pex-bye-{peer.id[:8]}")

    async def _crawl_peers_routine(self) -> None:
        # No crawl through the Switch (the service crawls); only let go of held peers.
        if not await self._wait_switch_running():
            return
        while True:
            await asyncio.sleep(self.config.crawl_period_s)
            self._attempt_disconnects()
