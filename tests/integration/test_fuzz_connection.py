"""The fuzzed connection over real loopback sockets, and ``test_fuzz`` in a Switch (§8)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator

import pytest

from cometp2p.aio.fuzz import fuzz_streams
from cometp2p.config import FuzzConnConfig
from cometp2p.errors import ConfigError
from cometp2p.sansio.mconnection import MConnectionConfig
from cometp2p.switch.switch import Switch
from cometp2p.testing.echo import EchoReactor
from cometp2p.testing.fuzz import DELAY, DROP, fuzz_connection, fuzz_switch
from cometp2p.testing.network import loopback_p2p_config, make_switch, switch_address

STEP_TIMEOUT_S = 20.0
PINGING = MConnectionConfig(ping_interval_s=0.1, pong_timeout_s=0.09, flush_throttle_s=0.0)


@contextlib.asynccontextmanager
async def tcp_pair() -> AsyncIterator[
    tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter]
]:
    """A connected loopback (client reader, client writer, server reader, server writer)."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.put_nowait((r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cr, cw = await asyncio.open_connection("127.0.0.1", port)
    sr, sw = await accepted.get()
    try:
        yield cr, cw, sr, sw
    finally:
        for w in (cw, sw):
            w.close()
        server.close()
        await server.wait_closed()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while chunk := await reader.read(65536):
        parts.append(chunk)
    return b"".join(parts)


async def test_delay_mode_delivers_every_byte_in_order_and_stalls_the_writer() -> None:
    cfg = FuzzConnConfig(mode=DELAY, max_delay_s=0.01)
    chunks = [i.to_bytes(4, "big") * 16 for i in range(200)]
    async with tcp_pair() as (cr, cw, sr, sw), asyncio.timeout(STEP_TIMEOUT_S):
        _, fw = fuzz_connection(cr, cw, cfg, seed=1)
        fr, _ = fuzz_connection(sr, sw, cfg, seed=2)
        for i, chunk in enumerate(chunks):
            fw.write(chunk)
            if i % 10 == 0:
                await fw.drain()
        await fw.drain()
        assert fw.core.stats.slept == 200
        cw.write_eof()
        assert await read_all(fr) == b"".join(chunks)
        assert fr.at_eof()


async def run_drops(seed: int) -> tuple[bytes, int]:
    cfg = FuzzConnConfig(mode=DROP, prob_drop_rw=0.3)
    async with tcp_pair() as (cr, cw, sr, _sw), asyncio.timeout(STEP_TIMEOUT_S):
        _, fw = fuzz_connection(cr, cw, cfg, seed=seed)
        for i in range(100):
            fw.write(bytes([i]))
        await fw.drain()
        cw.write_eof()
        return await read_all(sr), fw.core.stats.dropped


async def test_dropped_writes_lose_their_bytes_and_a_seed_replays_the_losses() -> None:
    got, dropped = await run_drops(seed=11)
    assert 10 < dropped < 50
    assert len(got) == 100 - dropped
    assert list(got) == sorted(set(got))  # what arrives keeps its order, once
    assert await run_drops(seed=11) == (got, dropped)
    assert (await run_drops(seed=12))[0] != got


async def test_dropped_reads_lose_nothing_and_close_closes() -> None:
    async with tcp_pair() as (cr, cw, sr, sw), asyncio.timeout(STEP_TIMEOUT_S):
        fr, _ = fuzz_connection(sr, sw, FuzzConnConfig(mode=DROP, prob_drop_rw=1.0), seed=3)
        cw.write(b"all of it")
        cw.write_eof()
        assert await read_all(fr) == b"all of it"
    async with tcp_pair() as (cr, cw, sr, sw), asyncio.timeout(STEP_TIMEOUT_S):
        _, fw = fuzz_connection(
            cr, cw, FuzzConnConfig(mode=DROP, prob_drop_conn=1.0, prob_drop_rw=0.0)
        )
        fw.write(b"never sent")
        assert await read_all(sr) == b""  # the peer sees the socket close
        assert fw.core.stats.closed == 1


async def test_fuzzing_starts_after_the_activation_delay() -> None:
    cfg = FuzzConnConfig(mode=DROP, prob_drop_rw=1.0)
    now = [100.0]  # an injected clock: no waiting
    async with tcp_pair() as (cr, cw, sr, _sw), asyncio.timeout(STEP_TIMEOUT_S):
        _, fw = fuzz_streams(
            cr, cw, cfg, random.Random(0), activate_after_s=10.0, clock=lambda: now[0]
        )
        fw.write(b"early")
        assert await sr.readexactly(5) == b"early"
        now[0] = 110.0
        fw.write(b"late")
        cw.write_eof()
        assert await read_all(sr) == b""
        assert (fw.core.stats.inactive, fw.core.stats.dropped) == (1, 1)


# -- test_fuzz in a Switch ------------------------------------------------------------------


def fuzzed_switch(name: str, *, inbound: bool) -> tuple[Switch, EchoReactor]:
    reactor = EchoReactor()
    p2p = loopback_p2p_config(
        test_fuzz=True,
        test_fuzz_inbound=inbound,
        test_fuzz_activate_after_s=0.3,
        test_fuzz_config=FuzzConnConfig(mode=DROP, prob_drop_rw=0.0, prob_drop_conn=1.0),
    )
    switch = make_switch([("echo", reactor)], moniker=name, p2p=p2p, mconnection_config=PINGING)
    return switch, reactor


def plain_switch(name: str) -> tuple[Switch, EchoReactor]:
    reactor = EchoReactor()
    return make_switch([("echo", reactor)], moniker=name, mconnection_config=PINGING), reactor


async def test_test_fuzz_breaks_dialed_links_only_unless_inbound_is_asked() -> None:
    """``test_fuzz = true`` takes effect: dialed sockets are fuzzed after the activation
    delay (here 0.3 s: ``test_fuzz_activate_after``), accepted ones only with
    ``test_fuzz_inbound``."""
    for inbound in (False, True):
        a, ra = fuzzed_switch("a", inbound=inbound)
        b, _ = plain_switch("b")
        c, _ = plain_switch("c")
        async with a, b, c, asyncio.timeout(STEP_TIMEOUT_S):
            await a.dial_peer_with_address(switch_address(b))  # a dials: fuzzed
            await c.dial_peer_with_address(switch_address(a))  # a accepts
            assert {(await ra.peers_added.get()).id for _ in range(2)} == {b.node_id, c.node_id}
            gone, _ = await ra.peers_removed.get()  # the first to break
            assert gone.id == b.node_id
            if inbound:
                gone, _ = await ra.peers_removed.get()
                assert gone.id == c.node_id
            else:
                # The accepted link saw the same pings for as long, and is still up.
                assert a.peers.has(c.node_id)
                peer = a.peers.get(c.node_id)
                assert peer is not None
                assert peer.is_running


async def test_a_fuzz_config_that_makes_no_sense_refuses_to_start() -> None:
    p2p = dataclasses.replace(
        loopback_p2p_config(), test_fuzz=True, test_fuzz_config=FuzzConnConfig(mode=7)
    )
    switch = make_switch([("echo", EchoReactor())], p2p=p2p)
    with pytest.raises(ConfigError, match=r"test_fuzz_config\.mode"):
        await switch.start()
    assert not switch.is_running


async def test_fuzz_switch_helper_records_every_socket() -> None:
    a, ra = plain_switch("a")
    b, rb = plain_switch("b")
    recorder = fuzz_switch(a, FuzzConnConfig(mode=DELAY, max_delay_s=0.005), seed=5)
    async with a, b, asyncio.timeout(STEP_TIMEOUT_S):
        peer = await a.dial_peer_with_address(switch_address(b))
        await rb.peers_added.get()
        for i in range(20):
            assert await peer.send(0x42, f"m{i}".encode())
        assert [(await rb.received.get())[1] for _ in range(20)] == [
            f"m{i}".encode() for i in range(20)
        ]
        assert len(recorder.cores) == 1
        assert recorder.totals().slept > 0
        assert ra.peers_removed.empty()
