"""Benchmark of the whole pipeline: MConnection over SecretConnection over loopback TCP.

Two processes (one core each on a 2-core machine): this one measures, a child process
runs the peer. Both ends are :class:`cometp2p.aio.connection.Connection` over
:func:`cometp2p.aio.secret_connection.secret_handshake`, with rate limits off (0) and
``flush_throttle_s = 0``. The peer echoes every message on the echo channel (0x01) and,
on the sink channel (0x03), answers every ``ACK_EVERY``-th message with an 8-byte
big-endian count of the messages it received there.

Measured in one run:

* ``throughput_mb_s``: one-way payload MB/s of back-to-back 1 MiB messages, from the
  first send until the peer's acknowledgement of the last one;
* ``msgs_per_s_1k`` / ``msgs_per_s_100b``: the same with 1024-byte / 100-byte messages,
  in messages per second;
* ``rtt_p50_us`` / ``rtt_p99_us``: round trip of one 100-byte message on the echo
  channel, one at a time (after a warm-up);
* ``rtt_flush100_p50_us`` / ``rtt_flush100_p99_us``: the same on a new connection at the
  default flush throttle (100 ms on both ends), 20 round trips;
* ``aead_ceiling_mb_s``: ChaCha20-Poly1305 sealing of 1028-byte frame plaintexts in a
  loop on one core, as MB/s of the 1024 payload bytes per frame: the sender's ceiling
  for payload bytes (no framing, copying or IO).

When ``go`` is on PATH (and unless ``--no-go``), the same figures for CometBFT's own Go
MConnection (our Go harness ``tests/interop/goharness``, ``bench-mconn`` against
``mconn-echo --ack 3:N``, rates 0, flush throttle 0) are added with a ``go_`` prefix.

MB = 10^6 bytes of message payload. Channel send queues hold 1024 messages (Go's
harness: 100).

Run: ``.venv/bin/python bench/mconnection.py [--quick] [--json] [--no-go]``. ``--json``
prints one JSON object on the last line; ``--quick`` stays well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from cometp2p.aio.connection import Connection
from cometp2p.aio.loop import event_loop_name
from cometp2p.aio.loop import run as run_event_loop
from cometp2p.aio.secret_connection import secret_handshake
from cometp2p.crypto.keys import NodeKey
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig

MIB = 1024 * 1024
ECHO = 0x01
SINK = 0x03
ACK_EVERY = 64
ACK = struct.Struct(">Q")
KEY_A = NodeKey.from_seed(bytes(range(32)))
KEY_B = NodeKey.from_seed(bytes(range(32, 64)))
CHANNELS = (
    ChannelDescriptor(ECHO, priority=1, send_queue_capacity=1024, recv_message_capacity=MIB),
    ChannelDescriptor(SINK, priority=10, send_queue_capacity=1024, recv_message_capacity=4 * MIB),
)
CONFIG = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0, flush_throttle_s=0.0)
PHASE_TIMEOUT_S = 120.0
DEFAULT_FLUSH_S = 0.1
"""The default ``flush_throttle_timeout`` of CometBFT v0.38 (and of MConnectionConfig)."""
DEFAULT_FLUSH_RTTS = 20
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"  # holds the ``interop`` helpers


@dataclass(frozen=True, slots=True)
class Plan:
    """How much each phase sends."""

    mib_messages: int
    k1_messages: int
    b100_messages: int
    rtt_count: int
    rtt_warmup: int
    ceiling_s: float

    def __post_init__(self) -> None:
        for count in (self.mib_messages, self.k1_messages, self.b100_messages):
            if count % ACK_EVERY:
                raise ValueError(f"message counts must be multiples of {ACK_EVERY}, got {count}")


QUICK = Plan(mib_messages=128, k1_messages=192 * 1024, b100_messages=512 * 1024,
             rtt_count=2000, rtt_warmup=200, ceiling_s=0.5)  # fmt: skip
FULL = Plan(mib_messages=1024, k1_messages=1024 * 1024, b100_messages=4 * 1024 * 1024,
            rtt_count=20000, rtt_warmup=1000, ceiling_s=2.0)  # fmt: skip


# --------------------------------------------------------------------------- the peer


def _peer_process(port: int, done: Pipe, loop: str, flush_s: float) -> None:
    run_event_loop(_peer(port, flush_s), loop)
    done.send("done")


async def _peer(port: int, flush_s: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    secret = await secret_handshake(reader, writer, KEY_A, timeout_s=10.0)
    conn = Connection(secret, CHANNELS, dataclasses.replace(CONFIG, flush_throttle_s=flush_s))
    conn.start()

    async def echo() -> None:
        while True:
            message = await conn.receive(ECHO)
            if not conn.try_send(ECHO, message):
                await conn.send(ECHO, message)

    async def sink() -> None:
        received = 0
        next_ack = ACK_EVERY
        while True:
            received += len(await conn.receive_many(SINK))
            while received >= next_ack:
                await conn.send(SINK, ACK.pack(next_ack))
                next_ack += ACK_EVERY

    tasks = [asyncio.create_task(echo()), asyncio.create_task(sink())]
    await conn.wait_closed()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- the measurer


async def _blast(conn: Connection, size: int, count: int, sent_before: int) -> float:
    """Send ``count`` messages of ``size`` bytes on SINK; seconds until the last ack."""
    message = os.urandom(size)
    target = sent_before + count
    try_send = conn.try_send
    send = conn.send
    start = time.perf_counter()
    for _ in range(count):
        if not try_send(SINK, message) and not await send(SINK, message, PHASE_TIMEOUT_S):
            raise RuntimeError("send timed out: the peer stopped reading")
    acked = 0
    while acked < target:
        acks = await conn.receive_many(SINK)
        acked = ACK.unpack(acks[-1])[0]
    return time.perf_counter() - start


async def _rtts_us(conn: Connection, count: int, warmup: int) -> list[float]:
    message = os.urandom(100)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for i in range(warmup + count):
        t0 = clock()
        conn.try_send(ECHO, message)
        echoed = await conn.receive(ECHO)
        t1 = clock()
        if echoed != message:
            raise RuntimeError("echo differs from the message sent")
        if i >= warmup:
            samples.append((t1 - t0) / 1000)
    samples.sort()
    return samples


def _percentile(sorted_samples: list[float], p: float) -> float:
    """Nearest-rank percentile, as the Go harness computes it."""
    rank = max(0, min(len(sorted_samples) - 1, -(-len(sorted_samples) * p // 100) - 1))
    return sorted_samples[int(rank)]


async def run_python(
    plan: Plan, loop: str = "asyncio", flush_s: float = 0.0, rtt_only: bool = False
) -> dict[str, float]:
    """Our figures; with ``rtt_only`` just the round trips (at flush throttle ``flush_s``)."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_peer_process, args=(port, child_end, loop, flush_s), daemon=True)
    child.start()
    results: dict[str, float] = {}
    try:
        async with asyncio.timeout(PHASE_TIMEOUT_S * 4):
            reader, writer = await accepted
            secret = await secret_handshake(reader, writer, KEY_B, timeout_s=10.0)
            conn = Connection(
                secret, CHANNELS, dataclasses.replace(CONFIG, flush_throttle_s=flush_s)
            )
            conn.start()
            if rtt_only:
                rtts = await _rtts_us(conn, plan.rtt_count, plan.rtt_warmup)
                results["rtt_p50_us"] = _percentile(rtts, 50)
                results["rtt_p99_us"] = _percentile(rtts, 99)
                await conn.close()
                return results
            sent = 0
            # Warm-up: imports, first allocations, TCP window growth.
            await _blast(conn, 1024, ACK_EVERY * 16, sent)
            sent += ACK_EVERY * 16
            elapsed = await _blast(conn, MIB, plan.mib_messages, sent)
            sent += plan.mib_messages
            results["throughput_mb_s"] = plan.mib_messages * MIB / elapsed / 1e6
            elapsed = await _blast(conn, 1024, plan.k1_messages, sent)
            sent += plan.k1_messages
            results["msgs_per_s_1k"] = plan.k1_messages / elapsed
            elapsed = await _blast(conn, 100, plan.b100_messages, sent)
            sent += plan.b100_messages
            results["msgs_per_s_100b"] = plan.b100_messages / elapsed
            rtts = await _rtts_us(conn, plan.rtt_count, plan.rtt_warmup)
            results["rtt_p50_us"] = _percentile(rtts, 50)
            results["rtt_p99_us"] = _percentile(rtts, 99)
            await conn.close()
    finally:
        server.close()
        await server.wait_closed()
        child.join(30)
        if child.is_alive():
            child.kill()
    if not parent_end.poll(1):
        raise RuntimeError("the peer process did not finish cleanly")
    return results


def aead_ceiling_mb_s(seconds: float) -> float:
    aead = ChaCha20Poly1305(os.urandom(32))
    frame = os.urandom(1028)
    pack = struct.Struct("<4xQ").pack
    encrypt = aead.encrypt
    counter = 0
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for c in range(counter, counter + 1024):
            encrypt(pack(c), frame, None)
        counter += 1024
        done += 1024 * 1024
    return done / (time.perf_counter() - start) / 1e6


# --------------------------------------------------------------------------- Go reference


async def run_go(plan: Plan, flush_ms: int = 0, rtt_only: bool = False) -> dict[str, float]:
    """The same phases with CometBFT's MConnection on both ends (our Go harness)."""
    sys.path.insert(0, str(TESTS_DIR))
    from interop.goharness import GoHarness, ensure_goharness_binary

    binary = await asyncio.to_thread(ensure_goharness_binary)
    fast = ("--send-rate", "0", "--recv-rate", "0", "--flush-throttle-ms", str(flush_ms))
    lifetime = ("--lifetime-s", str(PHASE_TIMEOUT_S * 4))
    log = Path(os.devnull)
    results: dict[str, float] = {}
    server = await GoHarness.start(
        binary, "mconn-echo", "--listen", "127.0.0.1:0", "--quiet",
        "--ack", f"{SINK}:{ACK_EVERY}", *fast, *lifetime, log_path=log,
    )  # fmt: skip
    try:
        address = str((await server.wait_for("listening"))["listen"])

        async def bench(*args: str) -> Mapping[str, object]:
            client = await GoHarness.start(
                binary, "bench-mconn", "--dial", address, *args, *fast, *lifetime, log_path=log
            )
            try:
                return await client.wait_for("bench", timeout_s=PHASE_TIMEOUT_S)
            finally:
                await client.aclose()

        def phase(size: int, count: int) -> tuple[str, ...]:
            return ("--channel", str(SINK), "--size", str(size), "--count", str(count),
                    "--ack-every", str(ACK_EVERY), "--rtt-count", "0")  # fmt: skip

        if not rtt_only:
            out = await bench(*phase(MIB, plan.mib_messages))
            results["go_throughput_mb_s"] = float(str(out["mb_per_s"]))
            out = await bench(*phase(1024, plan.k1_messages))
            results["go_msgs_per_s_1k"] = float(str(out["msgs_per_s"]))
            out = await bench(*phase(100, plan.b100_messages))
            results["go_msgs_per_s_100b"] = float(str(out["msgs_per_s"]))
        out = await bench(
            "--channel", str(ECHO), "--count", "0", "--rtt-size", "100",
            "--rtt-count", str(plan.rtt_count + plan.rtt_warmup),
            "--rtt-warmup", str(plan.rtt_warmup),
        )  # fmt: skip
        results["go_rtt_p50_us"] = float(str(out["rtt_p50_ms"])) * 1000
        results["go_rtt_p99_us"] = float(str(out["rtt_p99_ms"])) * 1000
    finally:
        await server.aclose()
    return results


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (well under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--no-go", action="store_true", help="skip the Go reference figures")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of both Python ends (default auto, as the node: uvloop where installed)",
    )
    args = parser.parse_args()
    args.loop = event_loop_name(args.loop)
    plan = QUICK if args.quick else FULL

    results = run_event_loop(run_python(plan, args.loop), args.loop)
    results["aead_ceiling_mb_s"] = aead_ceiling_mb_s(plan.ceiling_s)
    go = not args.no_go and shutil.which("go") is not None
    if go:
        results.update(asyncio.run(run_go(plan)))
    # Round trips at the default flush throttle (100 ms, both ends): few, they are slow.
    slow = dataclasses.replace(plan, rtt_count=DEFAULT_FLUSH_RTTS, rtt_warmup=2)
    flushed = run_event_loop(run_python(slow, args.loop, DEFAULT_FLUSH_S, True), args.loop)
    if go:
        flushed.update(asyncio.run(run_go(slow, int(DEFAULT_FLUSH_S * 1000), True)))
    results.update({key.replace("rtt_", "rtt_flush100_"): v for key, v in flushed.items()})

    def row(name: str, key: str, unit: str, target: str) -> tuple[str, str, str, str]:
        ours = f"{results[key]:,.0f} {unit}" if key in results else "-"
        go = f"{results['go_' + key]:,.0f} {unit}" if "go_" + key in results else "-"
        return name, ours, go, target

    rows = [
        ("1 MiB messages, one way", *row("", "throughput_mb_s", "MB/s", ">= 150 MB/s")[1:]),
        ("1 KiB messages, one way", *row("", "msgs_per_s_1k", "msg/s", ">= 150,000 msg/s")[1:]),
        ("100 B messages, one way", *row("", "msgs_per_s_100b", "msg/s", ">= 500,000 msg/s")[1:]),
        ("echo 100 B, p50", *row("", "rtt_p50_us", "us", "< 500 us")[1:]),
        ("echo 100 B, p99", *row("", "rtt_p99_us", "us", "")[1:]),
        ("echo 100 B, p50, flush throttle 100 ms", *row("", "rtt_flush100_p50_us", "us", "")[1:]),
        ("echo 100 B, p99, flush throttle 100 ms", *row("", "rtt_flush100_p99_us", "us", "")[1:]),
        ("ceiling: AEAD seal 1028 B frames", f"{results['aead_ceiling_mb_s']:,.0f} MB/s", "", ""),
    ]
    headers = ("measure", "cometp2p", "Go (CometBFT)", "target")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(4)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(
        f"(event loop: {args.loop}; two processes on loopback, SecretConnection + "
        "MConnection, rates 0, flush throttle 0; MB = 10^6 payload bytes)"
    )
    if args.json:
        print(json.dumps({**results, "loop": args.loop}))


if __name__ == "__main__":
    main()
