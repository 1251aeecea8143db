"""Which asyncio event loop the node runs on: the stdlib's, or uvloop on request.

One responsibility: :func:`run`, a drop-in for :func:`asyncio.run` used by the CLI
commands that run a node (``start``, ``crawl``, ``localnet``). uvloop comes with the
``cometp2p[fast]`` extra and is used when ``COMETP2P_EVENT_LOOP`` is ``uvloop`` (or
``auto``: uvloop where installed). It is not the default: measured side by side with
``bench/mconnection.py --loop`` and ``bench/secret_connection.py --loop`` (README,
Performance), it raises the handshake rate over TCP but does not win every figure of the
MConnection pipeline in every run on the loaded 2-core development machine.
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
"""Environment variable: ``asyncio`` (also when unset), ``uvloop`` or ``auto``."""


def event_loop_name(requested: str | None = None) -> str:
    """The loop :func:`run` will use: ``"uvloop"`` or ``"asyncio"``.

    Args:
        requested: ``"uvloop"``, ``"asyncio"``, ``"auto"`` or ``None`` (then the
            :data:`EVENT_LOOP_ENV` variable, else ``"asyncio"``). ``"auto"`` picks
            uvloop when it is importable.

    Raises:
        ValueError: an unknown name, or ``"uvloop"`` when it is not installed.
    """
    name = requested or os.environ.get(EVENT_LOOP_ENV) or "asyncio"
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
