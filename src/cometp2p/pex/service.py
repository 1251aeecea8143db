"""Keeps ``addrbook.json`` up to date: saved periodically and on stop (behaviour.md §5.1, §5.12).

The book is serialised on the event loop (it is not thread-safe) and the bytes are written
atomically (temporary file in the same directory, fsync, rename) in a worker thread, so a
crash leaves either the previous file or the new one. CometBFT saves every 2 minutes and
when the book stops; :class:`~cometp2p.pex.reactor.PEXReactor` runs one saver from its
``start`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from cometp2p.fileio import atomic_write_bytes
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import dump_addrbook

__all__ = ["AddrBookSaver"]

logger = logging.getLogger(__name__)


class AddrBookSaver:
    """Saves one AddrBook to one file, every ``interval_s`` seconds and on :meth:`stop`.

    Args:
        book: the book to save.
        path: the ``addrbook.json`` file.
        interval_s: seconds between periodic saves (CometBFT: 120).

    Attributes:
        saves: number of completed saves.
    """

    def __init__(self, book: AddrBook, path: str | os.PathLike[str], *, interval_s: float) -> None:
        self.book = book
        self.path = Path(path)
        self.interval_s = interval_s
        self.saves = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._saved = asyncio.Event()

    async def save(self) -> None:
        """Save now (one save at a time).

        Raises:
            OSError: if the file cannot be written; the previous file stays intact.
        """
        async with self._lock:
            data = dump_addrbook(self.book)
            await asyncio.to_thread(atomic_write_bytes, self.path, data, 0o644)
            self.saves += 1
            self._saved.set()
            self._saved = asyncio.Event()

    async def wait_for_saves(self, count: int) -> None:
        """Return once :attr:`saves` reaches ``count``. Unbounded: wrap it in
        ``asyncio.timeout``."""
        while self.saves < count:
            saved = self._saved
            await saved.wait()

    async def _save_logged(self) -> None:
        try:
            await self.save()
        except OSError as exc:
            logger.error("could not save the address book to %s: %s", self.path, exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            # Shielded: a stop() during a write lets it finish (holding the lock), so the
            # final save cannot be overtaken by an older one.
            await asyncio.shield(self._save_logged())

    def start(self) -> None:
        """Start the periodic saves (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="addrbook-saver")

    async def stop(self) -> None:
        """Stop the periodic saves and save one last time; a write error is logged."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._save_logged()
