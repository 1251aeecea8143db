"""Switch API without peers: reactor registration, IDs, schedules, lifecycle (behaviour.md §1)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    ConnectionBrokenError,
    LocalProtocolError,
    NetAddressError,
)
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch.lifecycle import SwitchHandle
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.switch import ReconnectPolicy, ReconnectSchedule, Switch
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address
from cometp2p.wire.netaddress import NetAddress


class ChannelsReactor(Reactor):
    """Owns the given channels and records its lifecycle calls in a shared log."""

    def __init__(self, *channel_ids: int, log: list[str] | None = None) -> None:
        super().__init__()
        self.channel_ids = channel_ids
        self.log = log if log is not None else []

    def get_channels(self) -> list[ChannelDescriptor]:
        return [ChannelDescriptor(id=ch, priority=1) for ch in self.channel_ids]

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


# -- add_reactor (§1.3) --------------------------------------------------------------------


def test_add_reactor_routes_channels_in_registration_order() -> None:
    switch = make_switch([])
    first, second = ChannelsReactor(0x20, 0x21), ChannelsReactor(0x30)
    assert switch.add_reactor("consensus", first) is first
    switch.add_reactor("mempool", second)
    assert [d.id for d in switch.channels] == [0x20, 0x21, 0x30]
    assert first.switch is switch
    assert first.name == "consensus"
    assert switch.reactor("mempool") is second
    assert switch.reactor("nope") is None
    assert list(switch.reactors) == ["consensus", "mempool"]


def test_add_reactor_refuses_a_channel_owned_by_another_reactor() -> None:
    switch = make_switch([])
    switch.add_reactor("consensus", ChannelsReactor(0x20, 0x21))
    with pytest.raises(LocalProtocolError, match=r"channel 0x21 .*'thief'.*'consensus'"):
        switch.add_reactor("thief", ChannelsReactor(0x30, 0x21))
    # Nothing of the refused reactor was registered.
    assert [d.id for d in switch.channels] == [0x20, 0x21]
    assert switch.reactor("thief") is None


def test_add_reactor_refuses_a_channel_declared_twice_and_a_taken_name() -> None:
    switch = make_switch([])
    with pytest.raises(LocalProtocolError, match="declares channel 0x40 twice"):
        switch.add_reactor("blocksync", ChannelsReactor(0x40, 0x40))
    switch.add_reactor("a", ChannelsReactor(0x01))
    with pytest.raises(LocalProtocolError, match="already registered"):
        switch.add_reactor("a", ChannelsReactor(0x02))
    assert [d.id for d in switch.channels] == [0x01]


async def test_add_reactor_after_start_is_refused() -> None:
    switch = make_switch([])
    async with switch:
        with pytest.raises(LocalProtocolError, match="before the Switch starts"):
            switch.add_reactor("late", ChannelsReactor(0x05))


# -- lifecycle (§1.4) ----------------------------------------------------------------------


async def test_lifecycle_starts_and_stops_reactors_in_registration_order() -> None:
    log: list[str] = []
    switch = make_switch(
        [("one", ChannelsReactor(0x01, log=log)), ("two", ChannelsReactor(0x02, log=log))]
    )
    assert not switch.is_running
    async with switch as running:
        assert running is switch
        assert switch.is_running
        assert switch.listen_address is not None
        host, port = switch.listen_address
        assert host == "127.0.0.1"
        assert port > 0
        # The ephemeral port is advertised in our NodeInfo, to peers and in the transport.
        assert switch.node_info.listen_addr == f"tcp://127.0.0.1:{port}"
        assert switch.transport.node_info == switch.node_info
        with pytest.raises(LocalProtocolError, match="already started"):
            await switch.start()
    assert not switch.is_running
    await switch.stop()  # idempotent
    assert log == ["start one", "start two", "stop one", "stop two"]


async def test_failed_listen_stops_the_reactors_it_started() -> None:
    log: list[str] = []
    holder = make_switch([])
    async with holder:
        assert holder.listen_address is not None
        taken = loopback_p2p_config(laddr=f"tcp://127.0.0.1:{holder.listen_address[1]}")
        switch = make_switch([("one", ChannelsReactor(0x01, log=log))], p2p=taken)
        with pytest.raises(OSError):
            await switch.start()
    assert log == ["start one", "stop one"]
    assert not switch.is_running


async def test_malformed_laddr_is_refused() -> None:
    switch = make_switch([])
    switch.config = dataclasses.replace(switch.config, laddr="tcp://127.0.0.1")
    with pytest.raises(NetAddressError, match="host:port"):
        await switch.start()


async def test_config_replaced_before_start_is_honoured() -> None:
    # The node's CLI flags replace switch.config after construction (node.with_p2p).
    vip = NodeKey.generate().node_id
    switch = make_switch([])
    switch.mconnection_config = None
    switch.config = dataclasses.replace(
        switch.config,
        handshake_timeout_s=1.5,
        dial_timeout_s=0.5,
        max_num_inbound_peers=3,
        allow_duplicate_ip=False,
        unconditional_peer_ids=(vip,),
        private_peer_ids=(vip,),
        send_rate_bytes_per_s=1234,
    )
    async with switch:
        transport = switch.transport
        assert transport.handshake_timeout_s == 1.5
        assert transport.dial_timeout_s == 0.5
        assert transport.allow_duplicate_ip is False
        assert transport.max_incoming_handshakes == 4
        assert switch.is_peer_unconditional(vip)
        assert switch.is_peer_private(vip)
        assert switch.mconnection_config.send_rate_bytes_per_s == 1234


async def test_mconnection_override_wins_over_config() -> None:
    fast = MConnectionConfig(ping_interval_s=0.5, pong_timeout_s=0.4)
    switch = make_switch([], mconnection_config=fast)
    switch.config = dataclasses.replace(switch.config, send_rate_bytes_per_s=1)
    assert switch.mconnection_config is fast


# -- peer IDs (§1.10, §1.11) ---------------------------------------------------------------


def test_unconditional_and_private_ids_are_validated_and_lowercased() -> None:
    node_id = NodeKey.generate().node_id
    switch = make_switch([])
    switch.add_unconditional_peer_ids([node_id.upper()])
    switch.add_private_peer_ids([node_id.upper()])
    assert switch.unconditional_peer_ids == {node_id}
    assert switch.private_peer_ids == {node_id}
    assert switch.is_peer_unconditional(node_id.upper())
    assert switch.is_peer_private(node_id)
    assert not switch.is_peer_private("00" * 20)
    with pytest.raises(NetAddressError):
        switch.add_private_peer_ids(["not-an-id"])
    with pytest.raises(NetAddressError):
        switch.add_unconditional_peer_ids(["ab" * 19])


def test_private_ids_from_config_are_exposed() -> None:
    ids = (NodeKey.generate().node_id, NodeKey.generate().node_id)
    switch = make_switch([], p2p=loopback_p2p_config(private_peer_ids=ids))
    assert switch.private_peer_ids == set(ids)


def test_persistent_peers_match_on_the_full_address() -> None:
    node_id = NodeKey.generate().node_id
    switch = make_switch(
        [], p2p=loopback_p2p_config(persistent_peers=(f"{node_id}@127.0.0.1:26656",))
    )
    assert switch.persistent_peers == [NetAddress.parse(f"{node_id}@127.0.0.1:26656")]
    switch.add_persistent_peers([f"{node_id.upper()}@127.0.0.1:26656"])
    assert switch.is_peer_persistent(NetAddress.parse(f"{node_id}@127.0.0.1:26656"))
    assert not switch.is_peer_persistent(NetAddress.parse(f"{node_id}@127.0.0.1:26657"))
    with pytest.raises(NetAddressError):
        switch.add_persistent_peers(["127.0.0.1:26656"])  # no ID


def test_outbound_budget_and_counts_start_empty() -> None:
    switch = make_switch([], p2p=loopback_p2p_config(max_num_outbound_peers=7))
    assert switch.max_num_outbound_peers == 7
    assert switch.num_peers() == (0, 0, 0)


# -- dialing without peers -----------------------------------------------------------------


async def test_dial_peers_async_refuses_a_malformed_list_before_dialing() -> None:
    target = make_switch([("echo", EchoReactor())])
    dialer = make_switch([("echo", EchoReactor())])
    async with target, dialer:
        good = str(switch_address(target))
        with pytest.raises(NetAddressError):
            dialer.dial_peers_async([good, "nonsense"])
        assert dialer.num_peers() == (0, 0, 0)
        assert len(dialer.peers) == 0


async def test_dial_before_start_is_a_local_error() -> None:
    switch = make_switch([])
    address = NetAddress.parse(f"{NodeKey.generate().node_id}@127.0.0.1:1")
    with pytest.raises(LocalProtocolError, match="not running"):
        await switch.dial_peer_with_address(address)


async def test_tcp_connect_is_bounded_by_dial_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_connects(
        host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    # The transport looks asyncio.open_connection up at each dial.
    monkeypatch.setattr(asyncio, "open_connection", never_connects)
    switch = make_switch([], p2p=loopback_p2p_config(dial_timeout_s=0.05))
    async with switch, asyncio.timeout(5):
        address = NetAddress.parse(f"{NodeKey.generate().node_id}@127.0.0.1:9")
        with pytest.raises(ConnectionBrokenError, match=r"timed out after 0\.05 s"):
            await switch.dial_peer_with_address(address)
        assert switch.num_peers() == (0, 0, 0)  # not left in the dialing set


# -- reconnect schedule (§1.10) ------------------------------------------------------------


def test_reconnect_schedule_matches_cometbft() -> None:
    delays = ReconnectPolicy().delays()
    assert len(delays) == 30
    assert delays[:3] == [0.0, 5.0, 5.0]
    assert sum(delays[:20]) == 95.0  # ~2 minutes of fast redials (+ jitter)
    assert delays[20:] == [3.0**i for i in range(1, 11)]
    assert sum(delays[20:]) == 88572.0  # ~24.6 h of back-off


def test_cooled_down_schedule_skips_the_fast_phase() -> None:
    policy = ReconnectPolicy()
    assert policy.delays(cooled_down=True) == [3.0**i for i in range(1, 11)]


def test_incompatible_cooldown_starts_short_and_doubles_up_to_its_cap() -> None:
    """Issue #12: 5 s, 10 s, 20 s, ... at most 300 s (Go: 300 s from the first refusal)."""
    policy = ReconnectPolicy()
    got = [policy.incompatible_cooldown(n) for n in range(1, 10)]
    assert got == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert policy.incompatible_cooldown(10_000) == 300.0
    assert ReconnectPolicy(incompatible_cooldown_s=0.0).incompatible_cooldown(3) == 0.0


# -- mark_peer_as_good (§1.13) -------------------------------------------------------------


def test_mark_peer_as_good_is_forwarded_to_reactors_that_keep_a_book() -> None:
    class BookKeeper(ChannelsReactor):
        def __init__(self) -> None:
            super().__init__(0x00)
            self.good: list[object] = []

        def mark_peer_as_good(self, peer: Peer) -> None:
            self.good.append(peer)

    keeper = BookKeeper()
    switch = make_switch([("pex", keeper), ("other", ChannelsReactor(0x01))])
    peer = cast(Peer, object())
    switch.mark_peer_as_good(peer)
    assert keeper.good == [peer]


def test_switch_without_reactors_has_no_channels() -> None:
    switch = make_switch([])
    assert switch.channels == []
    assert isinstance(switch, Switch)


# -- ReconnectSchedule (pure) --------------------------------------------------------------


def drain(schedule: ReconnectSchedule, cooldowns: list[float] | None = None) -> list[float]:
    waits: list[float] = []
    for i in range(1000):
        wait = schedule.next_wait(cooldowns[i] if cooldowns and i < len(cooldowns) else 0.0)
        if wait is None:
            return waits
        waits.append(wait)
    raise AssertionError("the schedule never gives up")


def test_schedule_without_jitter_is_the_policy() -> None:
    policy = ReconnectPolicy(jitter_s=0.0)
    assert drain(ReconnectSchedule(policy, random.Random(1))) == policy.delays()
    # Started by a failed dial: that was attempt one, the next waits the interval.
    after_dial = drain(ReconnectSchedule(policy, random.Random(1), first_attempt_done=True))
    assert after_dial[:2] == [5.0, 5.0]
    assert len(after_dial) == 29
    cooled = drain(ReconnectSchedule(policy, random.Random(1), cooled_down=True))
    assert cooled == policy.delays(cooled_down=True)


@settings(max_examples=200, deadline=None)
@given(
    fast=st.integers(0, 6),
    backoff=st.integers(0, 6),
    jitter=st.floats(0.0, 2.0),
    first_done=st.booleans(),
    cool_at=st.integers(0, 12),
    cooldowns=st.lists(st.floats(0.0, 100.0), max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_schedule_properties(
    fast: int,
    backoff: int,
    jitter: float,
    first_done: bool,
    cool_at: int,
    cooldowns: list[float],
    seed: int,
) -> None:
    policy = ReconnectPolicy(
        fast_attempts=fast, fast_interval_s=1.0, backoff_attempts=backoff, jitter_s=jitter
    )
    schedule = ReconnectSchedule(policy, random.Random(seed), first_attempt_done=first_done)
    waits: list[float] = []
    cooled_from: int | None = None
    for i in range(100):
        if i == cool_at:
            schedule.cool_down()  # an incompatible refusal at attempt i
            cooled_from = i
        cooldown = cooldowns[i] if i < len(cooldowns) else 0.0
        wait = schedule.next_wait(cooldown)
        if wait is None:
            break
        waits.append(wait)
        assert wait >= cooldown  # never before the cooldown ends
    else:
        pytest.fail("the schedule never gives up")
    # Bounded: never more attempts than both phases allow, and all of phase 2 is used.
    assert schedule.attempts == len(waits) <= fast + backoff
    assert len(waits) >= backoff
    # Only the very first fast attempt is immediate; jitter stays below jitter_s.
    for i, wait in enumerate(waits):
        cooldown = cooldowns[i] if i < len(cooldowns) else 0.0
        if wait == 0.0:
            assert i == 0
            assert not first_done
        assert wait <= max(cooldown, 3.0**backoff + jitter, 1.0 + jitter)
    # Once cooled down, only back-off waits follow (each >= 3 s; a fast one is < 3 s).
    if cooled_from is not None:
        tail = waits[cooled_from:]
        assert len(tail) <= backoff
        assert all(wait >= 3.0 for wait in tail)


async def test_persistent_peer_names_are_resolved_at_start_without_blocking_dns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node_id = NodeKey.generate().node_id
    resolved: list[str] = []

    async def getaddrinfo(_loop: object, host: str, *_: object, **__: object) -> list[object]:
        resolved.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    switch = make_switch(
        [], p2p=loopback_p2p_config(persistent_peers=(f"{node_id}@peer.example:1",))
    )
    assert switch.persistent_peers == []  # a name: nothing resolved before start
    async with switch:
        assert resolved == ["peer.example"]
        assert switch.persistent_peers == [NetAddress.parse(f"{node_id}@127.0.0.1:1")]


async def test_switch_lifecycle_events_follow_start_and_stop() -> None:
    switch = make_switch([])
    handle: SwitchHandle = switch  # the concrete Switch satisfies the reactors' protocol
    assert handle.lifecycle.stopped.is_set()
    assert not handle.lifecycle.started.is_set()
    async with switch:
        assert switch.lifecycle.started.is_set()
        assert not switch.lifecycle.stopped.is_set()
    assert switch.lifecycle.stopped.is_set()
    assert not switch.lifecycle.started.is_set()
