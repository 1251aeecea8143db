"""Build and run ``trustharness``: tendermint v0.34.24's real ``p2p/trust`` replaying scripts.

One responsibility: turn ``tests/interop/trustharness/`` (module ``cometp2p/trustharness``)
into a cached binary, keyed by a hash of its sources, and run one of its modes with a JSON
document on stdin (see ``main.go``). The build is bounded and runs under a file lock, so
parallel sessions build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from interop.cometbft import cache_root, file_lock

__all__ = ["TRUSTHARNESS_DIR", "TrustHarnessError", "ensure_trustharness_binary", "run_mode"]

TRUSTHARNESS_DIR: Final = Path(__file__).resolve().parent / "trustharness"
BUILD_TIMEOUT_S: Final = 600.0
"""Upper bound for ``go build`` (module download included) on a fresh machine."""
RUN_TIMEOUT_S: Final = 120.0


class TrustHarnessError(Exception):
    """The trust harness could not be built, or failed on its input."""


def _source_hash() -> str:
    digest = hashlib.sha256()
    files = [TRUSTHARNESS_DIR / "go.mod", TRUSTHARNESS_DIR / "go.sum"]
    for path in sorted([*files, *TRUSTHARNESS_DIR.glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_trustharness_binary(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Return a trustharness binary built from the current sources.

    Cached as ``<cache>/trustharness/<hash>/trustharness``; ``go build`` with
    ``GOFLAGS=-mod=mod`` runs under a file lock, writes a temporary name, then renames.

    Raises:
        TrustHarnessError: if ``go`` is missing or the build fails or times out.
    """
    key = _source_hash()[:16]
    out_dir = cache_root() / "trustharness" / key
    binary = out_dir / "trustharness"
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise TrustHarnessError("go is not on PATH: cannot build the trust harness")
    with file_lock(out_dir.parent / f"{key}.lock", timeout_s):
        if binary.is_file():
            return binary
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f"trustharness.{os.getpid()}.partial"
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"}
        try:
            done = subprocess.run(
                [go, "build", "-o", str(partial), "."],
                cwd=TRUSTHARNESS_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            msg = f"go build of the trust harness exceeded {timeout_s:.0f} s"
            raise TrustHarnessError(msg) from exc
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise TrustHarnessError(f"go build of the trust harness failed:\n{done.stderr[-4000:]}")
        os.replace(partial, binary)
    return binary


def run_mode(binary: Path, mode: str, document: object | bytes) -> object:
    """Run ``binary mode`` with ``document`` (JSON-encoded unless bytes) on stdin.

    Returns:
        the JSON document the harness printed, decoded.

    Raises:
        TrustHarnessError: if it exits non-zero or runs longer than ``RUN_TIMEOUT_S``.
    """
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    try:
        done = subprocess.run(
            [str(binary), mode],
            input=data,
            capture_output=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TrustHarnessError(f"trustharness {mode} ran over {RUN_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise TrustHarnessError(
            f"trustharness {mode} exited {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    return json.loads(done.stdout)
