"""The PEX reactor's seed mode: crawl the book, answer once, let peers go.

Implements the crawl side of behaviour.md §4.7 (CometBFT v0.38 ``crawlPeersRoutine``,
``crawlPeers``, ``attemptDisconnects``): dial the seeds first (or crawl the book when there
are none), then every ``crawl_period_s`` let go of peers held longer than
``seed_disconnect_wait_s``, dial the addresses the core says are due (at most
:data:`CRAWL_CONCURRENCY` at once) and ask each for addresses. The answer-once-and-
disconnect side lives in the core's request rules.

The :class:`~cometp2p.pex.reactor.PEXReactor` owns one :class:`SeedModeCrawler` when
``seed_mode`` is on. Each round crawls through the reactor's ``_crawl`` hook, so a
subclass (:class:`~cometp2p.seed.reactor.VerifiedSeedReactor`) can replace the crawl and
keep the rest of the routine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from cometp2p.pex.dialing import PexDialer
from cometp2p.pex.host import PexHost, wait_switch_running
from cometp2p.wire.netaddress import NetAddress

__all__ = ["CRAWL_CONCURRENCY", "SeedModeCrawler"]

logger = logging.getLogger("cometp2p.pex.reactor")  # the reactor's log, as before the split

CRAWL_CONCURRENCY: Final = 8
"""Most crawl dials in flight at once."""


class SeedModeCrawler:
    """Seed mode's routine for one PEX reactor.

    Args:
        host: the reactor (its ``_crawl`` hook does each round's crawl).
        dialer: dials the seeds and the crawl targets.
    """

    def __init__(self, host: PexHost, dialer: PexDialer) -> None:
        self._host = host
        self._dialer = dialer

    async def routine(self) -> None:
        """Dial the seeds (or crawl the book), then crawl every ``crawl_period_s``."""
        host = self._host
        if not await wait_switch_running(host._switch()):
            return
        if host.core.seed_addrs:
            await self._dialer.dial_seeds()
        else:
            await host._crawl(host.book.get_selection())
        while True:
            await asyncio.sleep(host.config.crawl_period_s)
            try:
                self.attempt_disconnects()
                await host._crawl(host.book.get_selection())
                host.core.expire_crawl_records(host.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("PEX crawl failed; continuing")

    async def crawl(self, addrs: list[NetAddress]) -> None:
        """Dial those of ``addrs`` the core says are due and ask each for addresses."""
        host = self._host
        targets = host.core.crawl_targets(addrs, host.now())
        if not targets:
            return
        limit = asyncio.Semaphore(CRAWL_CONCURRENCY)

        async def crawl_one(addr: NetAddress) -> None:
            async with limit:
                peer = await self._dialer.dial_peer(addr)
                if peer is not None:
                    host.request_addrs(peer)

        await asyncio.gather(*(crawl_one(addr) for addr in targets))

    def attempt_disconnects(self) -> None:
        """Let go of non-persistent peers held longer than the wait period."""
        host = self._host
        switch = host._switch()
        now = time.monotonic()
        for peer in switch.peers.list():
            if peer.is_persistent or now - peer.created_at < host.config.seed_disconnect_wait_s:
                continue
            host._spawn(switch.stop_peer_gracefully(peer), f"pex-release-{peer.id[:8]}")
