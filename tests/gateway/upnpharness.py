"""Build and run ``upnpharness``: tendermint v0.34.24's ``p2p/upnp`` in a small Go program.

The module ``cometp2p/upnpharness`` (``tests/gateway/upnpharness/``) is built with
``GOFLAGS=-mod=mod`` from a temporary copy (the tree is never written), into
``<cache>/upnpharness/<hash>/upnpharness`` under a file lock, keyed by a hash of its
sources, as ``interop/goharness.py`` does. See ``main.go`` for what it prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Final

from interop.cometbft import cache_root, file_lock

__all__ = ["BUILD_TIMEOUT_S", "HARNESS_DIR", "ensure_upnpharness_binary", "run_upnpharness"]

HARNESS_DIR: Final = Path(__file__).resolve().parent / "upnpharness"
BUILD_TIMEOUT_S: Final = 600.0
"""Upper bound of ``go build`` (module download included) on a fresh machine."""


class UpnpHarnessError(Exception):
    """The harness could not be built, or printed no result."""


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(HARNESS_DIR.iterdir()):
        if path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_upnpharness_binary(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """The harness binary for the current sources, built once into the user cache.

    Raises:
        UpnpHarnessError: ``go`` is missing, or the build fails or times out.
    """
    key = _source_hash()
    out_dir = cache_root() / "upnpharness" / key
    binary = out_dir / "upnpharness"
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise UpnpHarnessError("go is not on PATH: cannot build the UPnP harness")
    with file_lock(out_dir.parent / f"{key}.lock", timeout_s):
        if binary.is_file():
            return binary
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f"upnpharness.{os.getpid()}.partial"
        with tempfile.TemporaryDirectory(prefix="upnpharness-") as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(HARNESS_DIR, src)
            try:
                done = subprocess.run(
                    # -checklinkname=0: main.go reaches two unexported functions of
                    # tendermint's upnp package with go:linkname (Go >= 1.23 checks).
                    [go, "build", "-ldflags=-checklinkname=0", "-o", str(partial), "."],
                    cwd=src,
                    env={**os.environ, "GOFLAGS": "-mod=mod"},
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise UpnpHarnessError(f"go build exceeded {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise UpnpHarnessError(f"go build of the UPnP harness failed:\n{done.stderr[-4000:]}")
        os.replace(partial, binary)
    return binary


def run_upnpharness(argv_prefix: list[str], binary: Path, timeout_s: float = 30.0) -> Any:
    """Run the harness as ``argv_prefix + [binary]``; its JSON result.

    Raises:
        UpnpHarnessError: it printed no JSON line.
    """
    done = subprocess.run(
        [*argv_prefix, str(binary)], capture_output=True, text=True, timeout=timeout_s
    )
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise UpnpHarnessError(
            f"upnpharness printed nothing (exit {done.returncode}): {done.stderr}"
        )
    return json.loads(lines[-1])
