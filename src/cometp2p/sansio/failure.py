"""The one failure rule of every sans-IO object (``style.md``: sans-IO cores).

After *any* exception escapes one of its input methods (``receive_data``,
``handle_timer``, ``data_to_send``), a sans-IO object is FAILED for good, and every later
input call raises that same error again (same type, same message). An exception that is
not a :class:`~cometp2p.errors.CometP2PError` (a bug, say) is first wrapped in a
:class:`~cometp2p.errors.LocalProtocolError` whose ``__cause__`` is the original, so
callers only ever see the one error hierarchy. Argument checks of commands (an
undeclared channel, a message that is not bytes) are refused before any state changes
and do not fail the object.
"""

from __future__ import annotations

from typing import NoReturn

from cometp2p.errors import CometP2PError, LocalProtocolError

__all__ = ["as_failure", "raise_again"]


def as_failure(exc: Exception) -> CometP2PError:
    """The error a sans-IO object fails with for ``exc``: ``exc`` itself when it is typed.

    Args:
        exc: the exception that escaped the object's code.

    Returns:
        ``exc`` if it is a :class:`CometP2PError`, else a :class:`LocalProtocolError`
        ("internal error: ...") chained to it.
    """
    if isinstance(exc, CometP2PError):
        return exc
    error = LocalProtocolError(f"internal error: {exc!r}")
    error.__cause__ = exc
    return error


def raise_again(error: CometP2PError) -> NoReturn:
    """Raise the stored failure of an object once more (its traceback starts afresh)."""
    raise error.with_traceback(None)
