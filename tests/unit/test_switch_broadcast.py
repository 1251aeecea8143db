"""Switch.broadcast: peers with room get the message at once, only full queues wait."""

from __future__ import annotations

import asyncio
from typing import cast

from cometp2p.switch.peer import Peer
from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import make_switch
from cometp2p.types import NodeID


class _Peer:
    """The part of Peer that broadcast uses; ``room`` messages fit before it blocks."""

    def __init__(self, name: str, *, room: int, channel: bool = True, running: bool = True):
        self.id = NodeID(name * 40)
        self.room = room
        self.channel = channel
        self.is_running = running
        self.got: list[bytes] = []
        self.waits = 0
        self.freed = asyncio.Event()

    def has_channel(self, channel_id: int) -> bool:
        return self.channel and channel_id == ECHO_CHANNEL

    def try_send(self, channel_id: int, message: bytes) -> bool:
        if not self.has_channel(channel_id) or not self.is_running or self.room <= 0:
            return False
        self.room -= 1
        self.got.append(message)
        return True

    async def send(self, channel_id: int, message: bytes, timeout_s: float = 10.0) -> bool:
        self.waits += 1
        try:
            async with asyncio.timeout(timeout_s):
                await self.freed.wait()
        except TimeoutError:
            return False
        self.room += 1
        return self.try_send(channel_id, message)


async def test_peers_with_room_get_the_message_without_waiting() -> None:
    peers = [_Peer(c, room=1) for c in "abc"]
    hub = make_switch([("echo", EchoReactor())], moniker="hub")
    for peer in peers:
        hub.peers.add(cast(Peer, peer))
    tasks_before = len(asyncio.all_tasks())
    coro = hub.broadcast(ECHO_CHANNEL, b"m")
    # With room everywhere, broadcast finishes on its first step: no task, no wait.
    try:
        coro.send(None)
    except StopIteration as done:
        results = done.value
    else:  # pragma: no cover - the assertion below explains the failure
        coro.close()
        raise AssertionError("broadcast yielded although every queue had room")
    assert len(asyncio.all_tasks()) == tasks_before
    assert results == {peer.id: True for peer in peers}
    assert [peer.got for peer in peers] == [[b"m"]] * 3
    assert [peer.waits for peer in peers] == [0, 0, 0]


async def test_only_full_queues_wait_and_results_keep_snapshot_order() -> None:
    roomy = _Peer("a", room=1)
    full = _Peer("b", room=0)
    stuck = _Peer("c", room=0)
    no_channel = _Peer("d", room=5, channel=False)
    stopped = _Peer("e", room=5, running=False)
    hub = make_switch([("echo", EchoReactor())], moniker="hub")
    for peer in (roomy, full, stuck, no_channel, stopped):
        hub.peers.add(cast(Peer, peer))
    async with asyncio.timeout(10):
        full.freed.set()  # its queue frees up once it waits; "stuck"'s never does
        results = await hub.broadcast(ECHO_CHANNEL, b"m", timeout_s=0.2)
    assert list(results) == [roomy.id, full.id, stuck.id, no_channel.id, stopped.id]
    assert results == {
        roomy.id: True,
        full.id: True,
        stuck.id: False,  # its queue stayed full past timeout_s
        no_channel.id: False,
        stopped.id: False,
    }
    assert (roomy.waits, full.waits, stuck.waits, no_channel.waits, stopped.waits) == (
        0,
        1,
        1,
        0,
        0,
    )
    assert full.got == [b"m"]
    assert not no_channel.got
    assert not stopped.got
