"""Reconnect storm (issue #12 weakness 5): links that die at once back off exponentially."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

from cometp2p.switch.peer import Peer
from cometp2p.switch.switch import ReconnectPolicy, Switch
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.network import FAST_RECONNECT, make_switch, switch_address

FIRST_WAIT_S = 0.1


class HangUpReactor(EchoReactor):
    """Takes every peer, then drops it at once (as a peer that cannot read our packets)."""

    def __init__(self) -> None:
        super().__init__()
        self.switch: Switch | None = None
        self.added_at: asyncio.Queue[float] = asyncio.Queue()

    async def add_peer(self, peer: Peer) -> None:
        self.added_at.put_nowait(asyncio.get_running_loop().time())
        assert self.switch is not None
        switch = self.switch
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(
                switch.stop_peer_for_error(peer, ConnectionError("hang up"))
            )
        )


def test_short_lived_waits_double_up_to_the_cap() -> None:
    policy = ReconnectPolicy()
    assert [policy.short_lived_wait(n) for n in range(11)] == [
        0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0,
    ]  # fmt: skip


async def test_a_persistent_peer_that_hangs_up_at_once_is_redialed_ever_more_slowly() -> None:
    policy = dataclasses.replace(
        FAST_RECONNECT, short_lived_s=5.0, short_lived_backoff_s=FIRST_WAIT_S
    )
    hub_reactor = HangUpReactor()
    hub = make_switch([("echo", hub_reactor)], moniker="hub")
    hub_reactor.switch = hub
    dialer = make_switch([("echo", EchoReactor())], moniker="dialer", reconnect_policy=policy)
    async with hub, asyncio.timeout(30):
        dialer.add_persistent_peers([switch_address(hub)])
        async with dialer:
            times = [await hub_reactor.added_at.get() for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Without the back-off each redial follows the hang-up at once (FAST_RECONNECT: the
    # first redial has no wait); with it the k-th gap is at least 0.1 * 2**k s.
    for k, gap in enumerate(gaps):
        assert gap >= FIRST_WAIT_S * 2**k * 0.9, gaps
