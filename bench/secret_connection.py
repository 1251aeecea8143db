"""Benchmark of the SecretConnection (wire.md §3): handshake rate and stream throughput.

Measured in one run, on this machine:

* Merlin transcript: microseconds for one handshake transcript (3 appends + challenge).
* Handshakes on one core: two sans-IO ``SecretHandshake`` ends pumped in-process; one
  handshake = both sides' work (2 X25519 key pairs and exchanges, 2 transcripts, 2 signs,
  2 verifies, 4 frames). Compared with Go over ``net.Pipe``.
* Handshakes/s over TCP loopback, one core: both ends in this process and one event loop,
  a new loopback connection per handshake (accept and connect included), as Go's
  ``goharness bench-handshake --transport tcp`` counts them on GOMAXPROCS=1.
* Go (CometBFT ``p2p/conn``), same run: handshakes over ``net.Pipe`` and over TCP
  loopback with both ends in one process on one core (needs ``go``; ``--no-go`` skips).
  Ours and Go's alternate for 3 (``--quick``) or 5 rounds; the ratio compares handshakes
  per CPU second of each process (robust to other load on a shared machine), median with
  min and max over the rounds. Wall-clock rates are in the JSON too.
* Frames in-process: ``FrameSealer.seal`` and ``FrameOpener.receive_data`` on 1 MiB.
* Stream over loopback TCP: MB/s of payload from a sender process writing 1 MiB
  ``SecretConnection.write`` calls (each followed by ``drain``) to a receiver in this
  process reading with ``read_some`` (default asyncio stream buffer limits).
* Ceiling: raw ``ChaCha20Poly1305.encrypt`` of a 1028-byte frame in a loop, as MB/s of
  the 1024 payload bytes per frame; no framing, copying or IO.

Run: ``.venv/bin/python bench/secret_connection.py [--quick] [--json]``. ``--json``
prints one JSON object on the last line. ``--quick`` finishes in well under 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from cometp2p.aio.loop import event_loop_name
from cometp2p.aio.loop import run as run_event_loop
from cometp2p.aio.secret_connection import secret_handshake
from cometp2p.crypto.frames import FrameOpener, FrameSealer
from cometp2p.crypto.keys import NodeKey
from cometp2p.crypto.merlin import Transcript
from cometp2p.sansio.secret_connection import HandshakeComplete, SecretHandshake

MIB = 1024 * 1024
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
KEY_A = NodeKey.from_seed(bytes(range(32)))
KEY_B = NodeKey.from_seed(bytes(range(32, 64)))


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Call ``fn`` (returning units of work done) for ``seconds``; return units/s."""
    fn()  # warm-up
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += fn()
    return done / (time.perf_counter() - start)


def merlin_transcript_us(seconds: float) -> float:
    lo, hi, dh = bytes(32), bytes(range(32)), b"\x07" * 32

    def one() -> int:
        for _ in range(20):
            t = Transcript(b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH")
            t.append_message(b"EPHEMERAL_LOWER_PUBLIC_KEY", lo)
            t.append_message(b"EPHEMERAL_UPPER_PUBLIC_KEY", hi)
            t.append_message(b"DH_SECRET", dh)
            t.challenge_bytes(b"SECRET_CONNECTION_MAC", 32)
        return 20

    return 1e6 / _rate(one, seconds)


def _pumped_handshake() -> tuple[HandshakeComplete, HandshakeComplete]:
    a, b = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    b.receive_data(a.data_to_send())
    event_a, event_b = a.next_event(), b.next_event()
    if event_a is None or event_b is None:
        raise RuntimeError("pumped handshake did not complete")
    return event_a, event_b


def handshakes_per_s(seconds: float) -> tuple[float, float]:
    """Pumped sans-IO handshakes: (per wall second, per CPU second of this process)."""
    _pumped_handshake()  # warm-up
    done = 0
    cpu, start = time.process_time(), time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        _pumped_handshake()
        done += 1
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


async def _tcp_handshakes_per_s(seconds: float) -> tuple[float, float]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def one() -> None:
        reader_a, writer_a = await asyncio.open_connection("127.0.0.1", port)
        reader_b, writer_b = await asyncio.wait_for(accepted.get(), 5.0)
        await asyncio.gather(
            secret_handshake(reader_a, writer_a, KEY_A), secret_handshake(reader_b, writer_b, KEY_B)
        )
        writer_a.close()
        writer_b.close()

    try:
        await one()  # warm-up
        done = 0
        cpu, start = time.process_time(), time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            await one()
            done += 1
        return done / (time.perf_counter() - start), done / (time.process_time() - cpu)
    finally:
        server.close()
        await server.wait_closed()


def tcp_handshakes_per_s(seconds: float, loop: str = "asyncio") -> tuple[float, float]:
    """Handshakes over TCP loopback: (per wall second, per CPU second of this process)."""
    return run_event_loop(_tcp_handshakes_per_s(seconds), loop)


def go_handshakes_per_s(binary: Path, transport: str, seconds: float) -> tuple[float, float]:
    """Go's handshakes (goharness ``bench-handshake``): (per wall second, per CPU second)."""
    done = subprocess.run(
        [str(binary), "bench-handshake", "--transport", transport, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    event = json.loads(done.stdout.strip().splitlines()[-1])
    return float(event["handshakes_per_s"]), float(event["handshakes_per_cpu_s"])


def handshake_rounds(
    seconds: float, rounds: int, loop: str, go_binary: Path | None
) -> dict[str, float]:
    """Ours and Go's handshake rates, alternating, ``rounds`` times; ratios per round.

    Per-CPU-second rates are compared (each process's own CPU time), so the other load
    on a shared machine does not decide the ratio; wall-clock rates are kept too.
    """
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(rounds):
        for transport in ("pipe", "tcp"):
            if transport == "pipe":
                wall, cpu = handshakes_per_s(seconds)
            else:
                wall, cpu = tcp_handshakes_per_s(seconds, loop)
            add(f"handshakes_per_s_{transport}", wall)
            add(f"handshakes_per_cpu_s_{transport}", cpu)
            if go_binary is not None:
                go_wall, go_cpu = go_handshakes_per_s(go_binary, transport, seconds)
                add(f"go_handshakes_per_s_{transport}", go_wall)
                add(f"go_handshakes_per_cpu_s_{transport}", go_cpu)
                add(f"handshake_ratio_{transport}", cpu / go_cpu)
    results = {key: statistics.median(values) for key, values in samples.items()}
    for transport in ("pipe", "tcp"):
        ratios = samples.get(f"handshake_ratio_{transport}")
        if ratios:
            results[f"handshake_ratio_{transport}_min"] = min(ratios)
            results[f"handshake_ratio_{transport}_max"] = max(ratios)
    results["handshake_rounds"] = rounds
    return results


def frames_mb_per_s(seconds: float) -> tuple[float, float]:
    key = os.urandom(32)
    payload = os.urandom(MIB)
    sealer = FrameSealer(key)

    def seal() -> int:
        sealer.seal(payload)
        return MIB

    seal_rate = _rate(seal, seconds)
    sealed = FrameSealer(key).seal(payload)

    def open_() -> int:
        # A fresh opener per round, so the same sealed MiB (counters 0..1023) opens again.
        FrameOpener(key).receive_data(sealed)
        return MIB

    open_rate = _rate(open_, seconds)
    return seal_rate / 1e6, open_rate / 1e6


def aead_ceiling_mb_per_s(seconds: float) -> float:
    aead = ChaCha20Poly1305(os.urandom(32))
    frame = os.urandom(1028)
    pack = struct.Struct("<4xQ").pack
    counter = [0]

    def batch() -> int:
        encrypt = aead.encrypt
        start = counter[0]
        for c in range(start, start + 1024):
            encrypt(pack(c), frame, None)
        counter[0] = start + 1024
        return 1024 * 1024

    return _rate(batch, seconds) / 1e6


def _sender_process(port: int, total_bytes: int, ready: Connection, loop: str) -> None:
    async def run() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = await secret_handshake(reader, writer, KEY_A, timeout_s=10.0)
        chunk = os.urandom(MIB)
        sent = 0
        while sent < total_bytes:
            conn.write(chunk)
            await conn.drain()
            sent += len(chunk)
        # Wait for the receiver to confirm, then close.
        await conn.read_exactly(1)
        await conn.close()

    run_event_loop(run(), loop)
    ready.send("done")


async def _receive(total_bytes: int, loop: str = "asyncio") -> tuple[float, float]:
    """Receive ``total_bytes`` from a child process; return (seconds, MB/s of payload)."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_sender_process, args=(port, total_bytes, child_end, loop))
    child.start()
    try:
        async with asyncio.timeout(120):
            reader, writer = await accepted
            conn = await secret_handshake(reader, writer, KEY_B, timeout_s=10.0)
            received = 0
            first = await conn.read_some(MIB)
            start = time.perf_counter()
            received = len(first)
            while received < total_bytes:
                data = await conn.read_some(MIB)
                if not data:
                    raise RuntimeError(f"sender closed after {received} of {total_bytes} bytes")
                received += len(data)
            elapsed = time.perf_counter() - start
            conn.write(b"k")
            await conn.drain()
            await conn.read_some()  # the sender's close
            await conn.close()
    finally:
        server.close()
        await server.wait_closed()
        child.join(30)
        if child.is_alive():
            child.kill()
    if not parent_end.poll(1):
        raise RuntimeError("sender process did not finish")
    return elapsed, (total_bytes - len(first)) / elapsed / 1e6


def _vs_go(results: dict[str, float], transport: str) -> str:
    ours = results[f"handshakes_per_cpu_s_{transport}"]
    key = f"go_handshakes_per_cpu_s_{transport}"
    if key not in results:
        return f"{ours:.0f}"
    ratio = f"handshake_ratio_{transport}"
    return (
        f"{ours:.0f} vs Go {results[key]:.0f}: {results[ratio]:.2f}x "
        f"(min {results[ratio + '_min']:.2f}, max {results[ratio + '_max']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (well under 20 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--no-go", action="store_true", help="skip the Go reference figures")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of the Python ends (default auto, as the node: uvloop where installed)",
    )
    args = parser.parse_args()
    loop = event_loop_name(args.loop)
    seconds = 0.5 if args.quick else 2.0
    stream_bytes = (128 if args.quick else 1024) * MIB

    results: dict[str, float] = {}
    results["merlin_transcript_us"] = merlin_transcript_us(seconds)
    go_binary: Path | None = None
    if not args.no_go and shutil.which("go") is not None:
        sys.path.insert(0, str(TESTS_DIR))
        from interop.goharness import ensure_goharness_binary

        go_binary = ensure_goharness_binary()
    results.update(handshake_rounds(seconds / 2, 3 if args.quick else 5, loop, go_binary))
    results["handshakes_per_s"] = results["handshakes_per_s_pipe"]
    seal_rate, open_rate = frames_mb_per_s(seconds)
    results["frames_seal_mb_per_s"] = seal_rate
    results["frames_open_mb_per_s"] = open_rate
    _, stream_rate = run_event_loop(_receive(stream_bytes, loop), loop)
    results["stream_tcp_mb_per_s"] = stream_rate
    results["aead_ceiling_mb_per_s"] = aead_ceiling_mb_per_s(seconds)
    results["stream_mib"] = stream_bytes / MIB

    rows = [
        ("Merlin handshake transcript", f"{results['merlin_transcript_us']:.0f} us"),
        ("handshakes per CPU s, sans-IO vs Go net.Pipe", _vs_go(results, "pipe")),
        ("handshakes per CPU s, TCP loopback, both ends", _vs_go(results, "tcp")),
        ("FrameSealer.seal, 1 MiB", f"{seal_rate:.0f} MB/s"),
        ("FrameOpener.receive_data, 1 MiB", f"{open_rate:.0f} MB/s"),
        (
            f"SecretConnection over TCP, 1 MiB writes ({stream_bytes // MIB} MiB)",
            f"{stream_rate:.0f} MB/s",
        ),
        (
            "ceiling: ChaCha20Poly1305.encrypt, 1028 B",
            f"{results['aead_ceiling_mb_per_s']:.0f} MB/s",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  result")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(
        f"(event loop: {loop}; MB = 10^6 bytes of payload; one process per stream end, "
        "two cores used)"
    )
    if args.json:
        print(json.dumps({**results, "loop": loop}))


if __name__ == "__main__":
    main()
