"""Which asyncio event loop the node runs on: uvloop where it is installed, else the stdlib's.

One responsibility: :func:`run`, a drop-in for :func:`asyncio.run` used by the CLI
commands that run a node (``start``, ``crawl``, ``seed``, ``localnet``; ``localnet``
starts its many nodes with ``asyncio`` unless the variable is set, for memory). uvloop comes
with the ``cometp2p[fast]`` extra (``make localnet`` and ``make check`` install it); the
plain install stays light and runs the stdlib loop. ``COMETP2P_EVENT_LOOP`` picks one
explicitly: ``auto`` (the default: uvloop when importable), ``uvloop`` or ``asyncio``.

Why uvloop by default where it is installed (issue #17; ``bench/*.py --loop``, five runs
side by side with Go, README "Performance"): TCP handshakes per CPU second 0.64x Go
against 0.48x on the stdlib loop, idle-link echo RTT p50 1.55x Go against 1.84x,
throughput at least as high, and an idle peer still within 40 KiB.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Coroutine
from typing import Final, TypeVar

__all__ = ["EVENT_LOOP_ENV", "event_loop_name", "run"]

_T = TypeVar("_T")

EVENT_LOOP_ENV: Final = "COMETP2P_EVENT_LOOP"
"""Environment variable: ``auto`` (also when unset), ``uvloop`` or ``asyncio``."""


def event_loop_name(requested: str | None = None) -> str:
    """The loop :func:`run` will use: ``"uvloop"`` or ``"asyncio"``.

    Args:
        requested: ``"uvloop"``, ``"asyncio"``, ``"auto"`` or ``None`` (then the
            :data:`EVENT_LOOP_ENV` variable, else ``"auto"``). ``"auto"`` picks
            uvloop when it is importable, the stdlib loop otherwise.

    Raises:
        ValueError: an unknown name, or ``"uvloop"`` when it is not installed.
    """
    name = requested or os.environ.get(EVENT_LOOP_ENV) or "auto"
    if name not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event loop must be auto, uvloop or asyncio, got {name!r}")
    available = importlib.util.find_spec("uvloop") is not None
    if name == "uvloop" and not available:
        raise ValueError("uvloop is not installed (pip install 'cometp2p[fast]')")
    if name == "auto":
        return "uvloop" if available else "asyncio"
    return name


def run(main: Coroutine[object, object, _T], loop: str | None = None) -> _T:
    """Run ``main`` to completion like :func:`asyncio.run`, on :func:`event_loop_name`'s loop.

    Raises:
        ValueError: see :func:`event_loop_name` (``main`` is closed unawaited then).
        Whatever ``main`` raises.
    """
    try:
        name = event_loop_name(loop)
    except ValueError:
        main.close()
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
