"""Benchmark of the pure AddrBook (behaviour.md §5) and its addrbook.json store (§5.12).

Measures, on this machine, the per-call cost of what a crawler or a 30-node simulation does
most: ``add_address`` (fresh IDs from many sources, buckets filling and evicting),
``mark_good`` (promotion, with demotions once old buckets fill), ``pick_address``,
``get_selection``, ``get_selection_with_bias`` on a full-ish book, and a save + load of
the book. Ceiling, measured in the same run: two keyed BLAKE2b-64 hashes plus one dict
insert, the least work one placement can cost in Python.

Run: ``.venv/bin/python bench/addrbook.py [--addresses 20000]``
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import load_addrbook, save_addrbook
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _addresses(rng: random.Random, n: int) -> list[NetAddress]:
    out: list[NetAddress] = []
    while len(out) < n:
        ip = ipaddress.IPv4Address(rng.randrange(1 << 24, 223 << 24))
        if not ip.is_global:
            continue
        out.append(NetAddress(NodeID(f"{rng.getrandbits(160):040x}"), ip, 26656))
    return out


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(1)
    addrs = _addresses(rng, args.addresses)
    sources = _addresses(rng, 200)
    book = AddrBook(strict=True, rng=random.Random(2))

    rows: list[tuple[str, float]] = []
    start = time.perf_counter()
    for i, a in enumerate(addrs):
        book.add_address(a, sources[i % len(sources)], NOW + timedelta(microseconds=i))
    rows.append(("add_address (fresh ID)", (time.perf_counter() - start) / len(addrs) * 1e6))

    known = [ka.id for ka in book][:5000]
    start = time.perf_counter()
    for i, node_id in enumerate(known):
        book.mark_good(node_id, NOW + timedelta(seconds=i))
    rows.append(("mark_good (new -> old)", (time.perf_counter() - start) / len(known) * 1e6))

    rows.append(("pick_address(50)", _per_call_us(lambda: book.pick_address(50), 20000)))
    rows.append(("get_selection()", _per_call_us(book.get_selection, 500)))
    rows.append(
        ("get_selection_with_bias(30)", _per_call_us(lambda: book.get_selection_with_bias(30), 200))
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "addrbook.json"
        start = time.perf_counter()
        save_addrbook(book, path)
        rows.append(("save_addrbook (whole book)", (time.perf_counter() - start) * 1e6))
        start = time.perf_counter()
        load_addrbook(path, strict=True, rng=random.Random(3))
        rows.append(("load_addrbook (whole book)", (time.perf_counter() - start) * 1e6))

    key = bytes(32)
    seen: dict[bytes, None] = {}

    def ceiling() -> None:
        h = hashlib.blake2b(b"abcdefabcdefabcdefabcdef1.2.0.05.6.0.0", digest_size=8, key=key)
        h2 = hashlib.blake2b(h.digest(), digest_size=8, key=key).digest()
        seen[h2] = None

    rows.append(("ceiling: 2 keyed hashes + dict insert", _per_call_us(ceiling, 100000)))

    print(f"book: {book.size()} addresses ({book.n_new} new, {book.n_old} old)")
    print(f"{'operation':<40} {'µs per call':>12}")
    for name, us in rows:
        print(f"{name:<40} {us:>12.1f}")


if __name__ == "__main__":
    main()
