"""Micro-benchmark of the sans-IO MConnection core, in one process (wire.md §8).

Queues N messages on one MConnection, drains ``data_to_send`` and feeds the bytes to a
second MConnection, collecting the MessageReceived events: the pure-Python cost of
chunking, scheduling, encoding, parsing and reassembly, without encryption or sockets.
Rates are unlimited. Prints msg/s and MB/s per message size, the send and receive
halves separately, and a ceiling measured in the same run (``b"".join`` + slicing of
the same bytes, i.e. the memory-copy floor Python cannot beat).

Run: ``.venv/bin/python bench/mconnection_core.py [--seconds 1.0]``
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

from cometp2p.sansio.mconnection import (
    ChannelDescriptor,
    MConnection,
    MConnectionConfig,
    MessageReceived,
)

CHANNEL = 0x30
SIZES = (100, 1024, 1024 * 1024)
CONFIG = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0)


def _pair(queue: int) -> tuple[MConnection, MConnection]:
    chans = [ChannelDescriptor(CHANNEL, priority=5, send_queue_capacity=queue)]
    return MConnection(chans, CONFIG, 0.0), MConnection(chans, CONFIG, 0.0)


def _round(size: int, count: int) -> tuple[float, float, int]:
    """Send `count` messages of `size` bytes; returns (send seconds, recv seconds, msgs)."""
    message = bytes(size)
    sender, receiver = _pair(count)
    send = sender.send
    t0 = time.perf_counter()
    for _ in range(count):
        send(CHANNEL, message)
    writes = []
    while data := sender.data_to_send(0.0):
        writes.append(data)
    t1 = time.perf_counter()
    received = 0
    for data in writes:
        receiver.receive_data(data)
        received += sum(1 for e in receiver.drain_events() if isinstance(e, MessageReceived))
    t2 = time.perf_counter()
    if received != count:
        raise RuntimeError(f"expected {count} messages, got {received}")
    return t1 - t0, t2 - t1, count


def _measure(
    fn: Callable[[], tuple[float, float, int]], seconds: float
) -> tuple[float, float, int]:
    send_s = recv_s = 0.0
    total = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        s, r, n = fn()
        send_s += s
        recv_s += r
        total += n
    return send_s, recv_s, total


def _ceiling(size: int, seconds: float) -> float:
    """MB/s of joining and re-slicing the same payload bytes: the copy floor."""
    message = bytes(size)
    chunk = 1024
    moved = 0
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        parts = [message] * max(1, 65536 // max(size, 1))
        blob = b"".join(parts)
        view = memoryview(blob)
        for i in range(0, len(blob), chunk):
            bytes(view[i : i + chunk])
        moved += len(blob)
    return moved / (time.perf_counter() - t0) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per size")
    args = parser.parse_args()
    header = (
        f"{'size':>9} {'msg/s':>11} {'MB/s':>8} {'send msg/s':>11} {'recv msg/s':>11} "
        f"{'ceiling MB/s':>13}"
    )
    print(header)
    for size in SIZES:
        count = max(1, min(20_000, (8 << 20) // size))
        send_s, recv_s, total = _measure(functools.partial(_round, size, count), args.seconds)
        both = send_s + recv_s
        print(
            f"{size:>9} {total / both:>11,.0f} {total * size / both / 1e6:>8.1f} "
            f"{total / send_s:>11,.0f} {total / recv_s:>11,.0f} "
            f"{_ceiling(size, args.seconds / 4):>13.0f}"
        )


if __name__ == "__main__":
    main()
