"""What the PEX reactor's parts need of it (:class:`PexHost`), and the waits they share.

The :class:`~cometp2p.pex.reactor.PEXReactor` owns its dialer
(:mod:`cometp2p.pex.dialing`) and its seed-mode crawler (:mod:`cometp2p.pex.seed_mode`)
by composition; both reach the reactor only through this protocol, so neither imports
the reactor. Their tasks run in the reactor's task set (``_spawn``), which
:meth:`PEXReactor.stop` cancels and awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Final, Protocol

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.core import PexCore
from cometp2p.pex.counters import PexCounters
from cometp2p.pex.strategy import RoundRobinScheduler
from cometp2p.switch.peer import Peer
from cometp2p.switch.switch import Switch
from cometp2p.wire.netaddress import NetAddress

__all__ = ["START_WAIT_S", "PexHost", "guarded", "wait_for_event", "wait_switch_running"]

logger = logging.getLogger("cometp2p.pex.reactor")  # the reactor's log, as before the split

START_WAIT_S: Final = 60.0
"""How long a PEX routine waits for the Switch to start before giving up, in seconds."""


class PexHost(Protocol):
    """What the dialer and the crawler use of the reactor that owns them."""

    book: AddrBook
    config: PexConfig
    core: PexCore
    rng: random.Random
    counters: PexCounters
    scheduler: RoundRobinScheduler | None

    def now(self) -> datetime: ...

    def request_addrs(self, peer: Peer) -> bool: ...

    def _switch(self) -> Switch: ...

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    def _notify(self) -> None: ...

    async def _crawl(self, addrs: list[NetAddress]) -> None: ...


async def wait_for_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s`` seconds; True if it was set (and clear it)."""
    if timeout_s > 0 and not event.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
    fired = event.is_set()
    event.clear()
    return fired


async def wait_switch_running(switch: Switch) -> bool:
    """The Switch starts reactors before it listens and admits peers: wait (bounded by
    :data:`START_WAIT_S`); False, logged, if it never started."""
    try:
        async with asyncio.timeout(START_WAIT_S):
            await switch.lifecycle.started.wait()
    except TimeoutError:
        logger.error("the Switch did not start; PEX routine not running")
        return False
    return True


async def guarded(step: Callable[[bool], Coroutine[Any, Any, None]], arg: bool) -> None:
    """Run one round ``step(arg)``; a failure is logged and the routine goes on."""
    try:
        await step(arg)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("PEX round failed; continuing")
