"""Atomic file writes, so a crash never leaves a half-written key or address book.

Used for ``node_key.json``, ``config.toml`` and ``addrbook.json``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "remove_stale_temp_files"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically with permission bits ``mode``.

    The bytes go to a temporary file in the same directory, which is fsynced and then
    renamed over ``path``; readers see either the old file or the new one, never a mix.
    Parent directories are created as needed.

    Raises:
        OSError: if the directory cannot be created or the file cannot be written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    with contextlib.suppress(OSError):  # directory fsync makes the rename durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_write_bytes` left next to ``path``.

    A crash between the temporary file's creation and its rename leaves a
    ``.<name>.<random>.tmp`` behind forever; call this at start, before anything writes
    ``path``. Files that cannot be removed are skipped.

    Returns:
        The files removed.
    """
    target = Path(path)
    removed: list[Path] = []
    try:
        candidates = list(target.parent.glob(f".{target.name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        with contextlib.suppress(OSError):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
    return removed
