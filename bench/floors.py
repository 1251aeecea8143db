"""What no Python implementation can beat on this machine, next to Go, from one run.

Issue #17 asks for handshakes/s over TCP and the idle-link echo RTT to match CometBFT's
Go code. This bench measures the floors under those two figures, without any cometp2p
code in the way, so the gap that is ours can be told from the gap that is the platform's:

* ``crypto_pair_us``: CPU microseconds of the public-key work of one handshake, both
  ends, through ``cryptography`` (OpenSSL), the library the project uses for primitives:
  2 X25519 key generations, 2 X25519 exchanges, 2 Ed25519 signs, 2 Ed25519 verifies.
* ``tcp_pair_us``: CPU microseconds of one loopback TCP connection with blocking
  sockets and no event loop: connect, accept, ``TCP_NODELAY`` on both, the handshake's
  four small writes and four reads, two closes (both ends in this process).
* ``handshake_ceiling_per_cpu_s``: ``1e6 / (crypto_pair_us + tcp_pair_us)``, the best a
  Python SecretConnection handshake over TCP could reach with zero protocol, framing,
  transcript and event-loop cost. Next to it, ``go_handshakes_per_cpu_s_tcp``: Go's
  whole handshake (``goharness bench-handshake --transport tcp``, GOMAXPROCS=1).
* ``echo_p50_us`` / ``echo_p99_us`` per event loop (``asyncio``, and ``uvloop`` where
  installed): round trip of 100 bytes between two processes over loopback through bare
  asyncio streams (one ``write``, one ``read``; no encryption, no MConnection), the floor
  under ``bench/mconnection.py``'s RTT. Next to it, Go's MConnection echo
  (``go_rtt_p50_us`` / ``go_rtt_p99_us``, from the same harness ``bench/mconnection.py``
  uses).

Run: ``.venv/bin/python bench/floors.py [--quick] [--json] [--no-go]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from cometp2p.aio.loop import run as run_event_loop

BENCH_DIR = Path(__file__).resolve().parent
SIZE = 100


def _cpu_us_per_call(fn: Callable[[], object], seconds: float) -> float:
    fn()
    calls = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            fn()
        calls += 50
    return (time.process_time() - start) / calls * 1e6


def crypto_pair_us(seconds: float) -> float:
    """CPU µs of both ends' public-key operations in one handshake (see the module doc)."""
    message = os.urandom(32)
    signer = ed25519.Ed25519PrivateKey.generate()
    signature = signer.sign(message)
    verifier = signer.public_key()
    ours = x25519.X25519PrivateKey.generate()
    theirs = x25519.X25519PrivateKey.generate().public_key()
    share = seconds / 4
    generate = _cpu_us_per_call(x25519.X25519PrivateKey.generate, share)
    exchange = _cpu_us_per_call(lambda: ours.exchange(theirs), share)
    sign = _cpu_us_per_call(lambda: signer.sign(message), share)
    verify = _cpu_us_per_call(lambda: verifier.verify(signature, message), share)
    return 2 * (generate + exchange + sign + verify)


def tcp_pair_us(seconds: float) -> float:
    """CPU µs of one blocking loopback TCP connection as a handshake uses it."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    address = listener.getsockname()
    small, frame = bytes(34), bytes(200)

    def one() -> None:
        a = socket.create_connection(address, timeout=5.0)
        b, _ = listener.accept()
        try:
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            a.sendall(small)
            b.sendall(small)
            b.recv(64)
            a.recv(64)
            a.sendall(frame)
            b.sendall(frame)
            b.recv(512)
            a.recv(512)
        finally:
            a.close()
            b.close()

    try:
        return _cpu_us_per_call(one, seconds)
    finally:
        listener.close()


async def _echo_server(ready: Connection, lifetime_s: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    ready.send(server.sockets[0].getsockname()[1])
    try:
        await asyncio.sleep(lifetime_s)
    finally:
        server.close()


def _echo_server_process(ready: Connection, loop: str, lifetime_s: float) -> None:
    run_event_loop(_echo_server(ready, lifetime_s), loop)


async def _echo_rtts_us(port: int, count: int, warmup: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = os.urandom(SIZE)
    samples: list[float] = []
    clock = time.perf_counter_ns
    try:
        for i in range(warmup + count):
            t0 = clock()
            writer.write(message)
            got = 0
            while got < SIZE:
                chunk = await asyncio.wait_for(reader.read(65536), 5.0)
                if not chunk:
                    raise RuntimeError("the echo server hung up")
                got += len(chunk)
            if i >= warmup:
                samples.append((clock() - t0) / 1000)
    finally:
        writer.close()
    samples.sort()
    return samples


def echo_floor_us(loop: str, count: int, warmup: int) -> tuple[float, float]:
    """(p50, p99) µs of a bare asyncio-streams echo between two processes on ``loop``."""
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(
        target=_echo_server_process, args=(child, loop, 120.0), daemon=True
    )
    server.start()
    try:
        if not parent.poll(30.0):
            raise RuntimeError("the echo server did not start")
        port = int(parent.recv())
        samples = run_event_loop(_echo_rtts_us(port, count, warmup), loop)
    finally:
        server.terminate()
        server.join(10.0)
    return _percentile(samples, 50), _percentile(samples, 99)


def _percentile(sorted_samples: list[float], p: float) -> float:
    rank = max(0, min(len(sorted_samples) - 1, -(-len(sorted_samples) * p // 100) - 1))
    return sorted_samples[int(rank)]


def _go_figures(quick: bool) -> dict[str, float]:
    """Go's TCP handshake rate per CPU second and its MConnection echo RTT, this run."""
    sys.path.insert(0, str(BENCH_DIR))
    import mconnection as mconnection_bench
    import secret_connection as secret_connection_bench

    sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
    from interop.goharness import ensure_goharness_binary

    binary = ensure_goharness_binary()
    _, per_cpu = secret_connection_bench.go_handshakes_per_s(binary, "tcp", 1.0 if quick else 2.0)
    plan = mconnection_bench.QUICK if quick else mconnection_bench.FULL
    rtts = asyncio.run(mconnection_bench.run_go(plan, rtt_only=True))
    return {
        "go_handshakes_per_cpu_s_tcp": per_cpu,
        "go_rtt_p50_us": rtts["go_rtt_p50_us"],
        "go_rtt_p99_us": rtts["go_rtt_p99_us"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (well under 30 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--no-go", action="store_true", help="skip the Go reference figures")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0
    count, warmup = (2000, 200) if args.quick else (10000, 1000)

    results: dict[str, float] = {}
    results["crypto_pair_us"] = crypto_pair_us(seconds)
    results["tcp_pair_us"] = tcp_pair_us(seconds)
    results["handshake_ceiling_per_cpu_s"] = 1e6 / (
        results["crypto_pair_us"] + results["tcp_pair_us"]
    )
    loops = ["asyncio"]
    if importlib.util.find_spec("uvloop") is not None:
        loops.append("uvloop")
    for loop in loops:
        p50, p99 = echo_floor_us(loop, count, warmup)
        results[f"echo_p50_us_{loop}"] = p50
        results[f"echo_p99_us_{loop}"] = p99
    if not args.no_go and shutil.which("go") is not None:
        results.update(_go_figures(args.quick))

    print(f"{'floor':58s} {'value':>12s}  {'Go, same run':>14s}")
    go = results.get
    rows = [
        ("public-key work of one handshake, both ends (CPU us)", "crypto_pair_us", None),
        ("one loopback TCP connection, no event loop (CPU us)", "tcp_pair_us", None),
        (
            "handshake ceiling over TCP (per CPU s)",
            "handshake_ceiling_per_cpu_s",
            "go_handshakes_per_cpu_s_tcp",
        ),
    ]
    for loop in loops:
        rows.append(
            (f"bare echo p50, 2 processes, {loop} (us)", f"echo_p50_us_{loop}", "go_rtt_p50_us")
        )
        rows.append(
            (f"bare echo p99, 2 processes, {loop} (us)", f"echo_p99_us_{loop}", "go_rtt_p99_us")
        )
    for label, key, go_key in rows:
        theirs = go(go_key) if go_key else None
        shown = f"{theirs:14,.0f}" if theirs is not None else f"{'-':>14s}"
        print(f"{label:58s} {results[key]:12,.1f}  {shown}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
