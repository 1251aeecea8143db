"""Build one of our small Go modules (a test harness) into the shared cache, once.

One responsibility, shared by ``goharness``, ``trustharness`` and ``upnpharness``: the
binary for a module directory lives at ``<cache>/<name>/<hash>/<name>``, keyed by a hash
of the module's ``go.mod``, ``go.sum`` and ``*.go`` files, so an edited harness is rebuilt
and an unchanged one never is. ``go build`` runs under a file lock (parallel sessions build
once), is bounded, writes a temporary name and renames it into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from interop.cometbft import cache_root, file_lock

__all__ = ["build_go_module", "module_hash"]


def module_hash(module_dir: Path) -> str:
    """SHA-256 (hex) over the names and contents of go.mod, go.sum and every ``*.go`` file."""
    digest = hashlib.sha256()
    for path in sorted(module_dir.iterdir()):
        if path.is_file() and path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_go_module(
    module_dir: Path,
    name: str,
    error: type[Exception],
    *,
    timeout_s: float,
    build_flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    copy_tree: bool = False,
) -> Path:
    """Return the cached binary of ``module_dir``, building it first if it is missing.

    Args:
        module_dir: the Go module's directory.
        name: the binary's name (and its cache folder).
        error: the exception type raised on failure (the caller's own).
        timeout_s: bound on waiting for the lock and on ``go build`` each (seconds).
        build_flags: extra ``go build`` flags, e.g. ``-ldflags=...``.
        env: extra environment variables of the build, e.g. ``GOFLAGS``.
        copy_tree: build from a temporary copy, so ``-mod=mod`` never writes the tree.

    Raises:
        error: ``go`` is not on PATH, or the build fails or times out.
    """
    key = module_hash(module_dir)[:16]
    out_dir = cache_root() / name / key
    binary = out_dir / name
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise error(f"go is not on PATH: cannot build {name}")
    with file_lock(out_dir.parent / f"{key}.lock", timeout_s):
        if binary.is_file():
            return binary
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f"{name}.{os.getpid()}.partial"
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
            src = module_dir
            if copy_tree:
                src = Path(tmp) / "src"
                shutil.copytree(module_dir, src)
            try:
                done = subprocess.run(
                    [go, "build", *build_flags, "-o", str(partial), "."],
                    cwd=src,
                    env={**os.environ, **(env or {})},
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                partial.unlink(missing_ok=True)
                raise error(f"go build of {name} exceeded {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise error(f"go build of {name} failed:\n{done.stderr[-4000:]}")
        os.replace(partial, binary)
    return binary
