"""Who owns the Switch's tasks: TaskGroups, closed by stop() (issue #11, switch/tasks.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from cometp2p.aio.resolve import resolve_address
from cometp2p.crypto.keys import NodeKey
from cometp2p.switch.reactor import Envelope
from cometp2p.switch.tasks import TaskSupervisor
from cometp2p.testing.echo import ECHO_CHANNEL, EchoReactor
from cometp2p.testing.network import (
    free_loopback_port,
    loopback_p2p_config,
    make_switch,
    switch_address,
)
from cometp2p.wire.netaddress import NetAddress


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - task sets and logs have no event
            await asyncio.sleep(0.01)


def _running(tasks: set[asyncio.Task[object]]) -> list[str]:
    return sorted(t.get_name() for t in tasks if not t.done())


class SelfStoppingReactor(EchoReactor):
    """Stops the sender of every message from inside its own ``receive``."""

    def __init__(self) -> None:
        super().__init__()
        self.returned = asyncio.Event()

    async def receive(self, envelope: Envelope) -> None:
        assert self.switch is not None
        await self.switch.stop_peer_for_error(envelope.src, ValueError("bad message"))
        self.returned.set()


async def test_stop_leaves_no_task_of_the_switch_running() -> None:
    before = asyncio.all_tasks()
    unreachable = f"{NodeKey.generate().node_id}@127.0.0.1:{free_loopback_port()}"
    ra, rb = EchoReactor(), EchoReactor()
    a = make_switch([("echo", ra)], p2p=loopback_p2p_config(persistent_peers=(unreachable,)))
    b = make_switch([("echo", rb)])
    async with asyncio.timeout(20):
        await a.start()
        await b.start()
        await a.dial_peer_with_address(switch_address(b))
        await rb.peers_added.get()
        dead = NetAddress.parse(unreachable)
        await _until(lambda: dead.id in a._reconnecting)
        names = _running(asyncio.all_tasks() - before)
        # Peer consumers, the shared gauge ticker and a reconnect loop are running now.
        for prefix in ("recv-", "peer-metrics", "reconnect-", "switch-tg", "peer-tg"):
            assert any(n.startswith(prefix) for n in names), (prefix, names)
        await a.stop()
        await b.stop()
    after = asyncio.all_tasks() - before
    after.discard(asyncio.current_task())
    assert _running(after) == []


async def test_a_reactor_that_stops_its_own_peer_in_receive_does_not_deadlock() -> None:
    rb = SelfStoppingReactor()
    ra = EchoReactor()
    a = make_switch([("echo", ra)])
    b = make_switch([("echo", rb)])
    async with a, b, asyncio.timeout(10):
        peer = await a.dial_peer_with_address(switch_address(b))
        b_side = await rb.peers_added.get()
        assert await peer.send(ECHO_CHANNEL, b"hello")
        removed, reason = await rb.peers_removed.get()
        assert removed is b_side
        assert isinstance(reason, ValueError)
        await rb.returned.wait()  # stop_peer_for_error returned inside receive
        assert len(b.peers) == 0
        short = b_side.id[:8]
        await _until(
            lambda: not any(n.startswith(f"recv-{short}") for n in _running(asyncio.all_tasks()))
        )


async def test_an_exception_escaping_a_background_task_is_logged_and_the_switch_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ra, rb, rc, rd = (EchoReactor() for _ in range(4))
    a = make_switch([("echo", ra)], moniker="a")
    b, c, d = (make_switch([("echo", r)]) for r in (rb, rc, rd))
    broken: set[str] = set()

    async def flaky_resolve(item: str | NetAddress) -> NetAddress:
        if str(item) in broken:
            raise RuntimeError("unexpected bug in a dial task")
        return await resolve_address(item)

    monkeypatch.setattr("cometp2p.switch.dialer.resolve_address", flaky_resolve)
    caplog.set_level(logging.ERROR, logger="cometp2p.switch.switch")
    async with a, b, c, d, asyncio.timeout(15):
        first = await a.dial_peer_with_address(switch_address(b))
        broken.add(str(switch_address(c)))
        a.dial_peers_async([switch_address(c)])
        await _until(
            lambda: any("unexpected bug" in r.getMessage() or r.exc_info for r in caplog.records)
        )
        record = next(r for r in caplog.records if r.exc_info)
        assert "failed" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
        # The group was not cancelled: a still dials, accepts, and its peers still work.
        broken.clear()
        a.dial_peers_async([switch_address(c)])
        assert (await rc.peers_added.get()).id == a.node_id
        await d.dial_peer_with_address(switch_address(a))
        assert [(await ra.peers_added.get()).id for _ in range(3)] == [
            b.node_id,
            c.node_id,
            d.node_id,
        ]
        assert {p.id for p in a.peers} == {b.node_id, c.node_id, d.node_id}
        assert await first.send(ECHO_CHANNEL, b"ping:still")
        assert await ra.received.get() == (b.node_id, b"pong:still")


async def test_a_closed_supervisor_refuses_new_tasks_and_can_reopen() -> None:
    group = TaskSupervisor("test")
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    assert group.spawn(job("early"), "early") is None  # not open: closed unrun
    await group.open()
    task = group.spawn(job("inside"), "inside")
    assert task is not None
    await group.wait_idle()
    blocked = group.spawn(asyncio.sleep(3600), "forever")
    await group.close()
    assert blocked is not None
    assert blocked.cancelled()
    assert group.spawn(job("late"), "late") is None
    await group.open()
    await group.close()
    assert ran == ["inside"]
