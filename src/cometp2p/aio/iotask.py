"""How the connection's reader and writer tasks end: one failure rule for both.

One job: :func:`run_io_task` runs a task's body and turns whatever ends it, other than
cancellation, into one call of ``fail`` with a :class:`~cometp2p.errors.CometP2PError`:
the library's own errors as they are, an ``OSError`` of the socket as a
:class:`~cometp2p.errors.ConnectionBrokenError` that chains it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

from cometp2p.errors import CometP2PError, ConnectionBrokenError

__all__ = ["run_io_task"]


async def run_io_task(
    body: Callable[[], Coroutine[object, object, None]],
    verb: str,
    fail: Callable[[CometP2PError], None],
) -> None:
    """Await ``body()``; on a failure call ``fail(error)`` once and return.

    Args:
        body: the task's loop.
        verb: what the task does to the socket (``"read"``, ``"write"``), for the
            message of a ``ConnectionBrokenError``.
        fail: ends the connection with the error.

    Raises:
        asyncio.CancelledError: the task was cancelled (it is not a failure).
    """
    try:
        await body()
    except asyncio.CancelledError:
        raise
    except CometP2PError as exc:
        fail(exc)
    except OSError as exc:
        error = ConnectionBrokenError(f"{verb} failed: {exc!r}")
        error.__cause__ = exc
        fail(error)
