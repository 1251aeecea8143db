"""AddrBookSaver: atomic saves of addrbook.json, periodic and on stop (behaviour.md §5.12)."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import dump_addrbook, load_addrbook
from cometp2p.pex.service import AddrBookSaver
from cometp2p.wire.netaddress import NetAddress

NOW = datetime(2024, 5, 1, tzinfo=UTC)


def book_with(n: int) -> AddrBook:
    book = AddrBook(strict=False, rng=random.Random(n))
    for i in range(1, n + 1):
        a = NetAddress.parse(f"{i:040x}@127.0.{i}.1:26656")
        book.add_address(a, a, NOW)
    return book


async def test_save_writes_the_book_atomically(tmp_path: Path) -> None:
    path = tmp_path / "config" / "addrbook.json"
    book = book_with(3)
    saver = AddrBookSaver(book, path, interval_s=3600.0)
    await saver.save()
    assert path.read_bytes() == dump_addrbook(book)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["addrbook.json"]
    loaded = load_addrbook(path, strict=False, rng=random.Random(0))
    assert {ka.id for ka in loaded} == {ka.id for ka in book}


async def test_periodic_saves_then_a_final_save_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "addrbook.json"
    book = book_with(1)
    saver = AddrBookSaver(book, path, interval_s=0.01)
    saver.start()
    async with asyncio.timeout(5.0):
        await saver.wait_for_saves(2)
    late = NetAddress.parse(f"{'ab' * 20}@127.9.9.9:1")
    book.add_address(late, late, NOW)
    await saver.stop()
    assert path.read_bytes() == dump_addrbook(book)


async def test_stop_logs_a_write_error_and_save_raises_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    saver = AddrBookSaver(book_with(1), blocker / "addrbook.json", interval_s=3600.0)
    with pytest.raises(OSError):
        await saver.save()
    with caplog.at_level(logging.ERROR, logger="cometp2p.pex.service"):
        await saver.stop()
    assert "could not save the address book" in caplog.text
    assert saver.saves == 0
