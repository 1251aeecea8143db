"""Build and run ``trustharness``: tendermint v0.34.24's real ``p2p/trust`` replaying scripts.

One responsibility: turn ``tests/interop/trustharness/`` (module ``cometp2p/trustharness``)
into a cached binary, keyed by a hash of its sources, and run one of its modes with a JSON
document on stdin (see ``main.go``). The build is bounded and runs under a file lock, so
parallel sessions build it once.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Final

from interop.gobuild import build_go_module

__all__ = ["TRUSTHARNESS_DIR", "TrustHarnessError", "ensure_trustharness_binary", "run_mode"]

TRUSTHARNESS_DIR: Final = Path(__file__).resolve().parent / "trustharness"
BUILD_TIMEOUT_S: Final = 600.0
"""Upper bound for ``go build`` (module download included) on a fresh machine."""
RUN_TIMEOUT_S: Final = 120.0


class TrustHarnessError(Exception):
    """The trust harness could not be built, or failed on its input."""


def ensure_trustharness_binary(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Return a trustharness binary built from the current sources.

    Cached as ``<cache>/trustharness/<hash>/trustharness`` and built with
    ``GOFLAGS=-mod=mod`` (:func:`interop.gobuild.build_go_module`).

    Raises:
        TrustHarnessError: if ``go`` is missing or the build fails or times out.
    """
    return build_go_module(
        TRUSTHARNESS_DIR,
        "trustharness",
        TrustHarnessError,
        timeout_s=timeout_s,
        env={"GOFLAGS": "-mod=mod", "GOWORK": "off"},
    )


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
