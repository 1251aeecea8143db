"""Build and run ``upnpharness``: tendermint v0.34.24's ``p2p/upnp`` in a small Go program.

The module ``cometp2p/upnpharness`` (``tests/gateway/upnpharness/``) is built with
``GOFLAGS=-mod=mod`` from a temporary copy (the tree is never written), into
``<cache>/upnpharness/<hash>/upnpharness`` under a file lock, keyed by a hash of its
sources, as ``interop/goharness.py`` does. See ``main.go`` for what it prints.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Final

from interop.gobuild import build_go_module

__all__ = ["BUILD_TIMEOUT_S", "HARNESS_DIR", "ensure_upnpharness_binary", "run_upnpharness"]

HARNESS_DIR: Final = Path(__file__).resolve().parent / "upnpharness"
BUILD_TIMEOUT_S: Final = 600.0
"""Upper bound of ``go build`` (module download included) on a fresh machine."""


class UpnpHarnessError(Exception):
    """The harness could not be built, or printed no result."""


def ensure_upnpharness_binary(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """The harness binary for the current sources, built once into the user cache.

    Raises:
        UpnpHarnessError: ``go`` is missing, or the build fails or times out.
    """
    return build_go_module(
        HARNESS_DIR,
        "upnpharness",
        UpnpHarnessError,
        timeout_s=timeout_s,
        # -checklinkname=0: main.go reaches two unexported functions of tendermint's
        # upnp package with go:linkname (Go >= 1.23 checks).
        build_flags=("-ldflags=-checklinkname=0",),
        env={"GOFLAGS": "-mod=mod"},
        copy_tree=True,
    )


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
