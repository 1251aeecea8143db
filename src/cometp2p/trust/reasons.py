"""Which stop-for-error reasons count against a peer's trust (behaviour.md §6, wiring).

A reason the peer is to blame for is one bad event; one the network is to blame for
(end of stream, an OS error, a graceful stop) is none. Pure: no IO.
"""

from __future__ import annotations

import enum

from google.protobuf.message import DecodeError

from cometp2p.errors import CometP2PError, RemoteProtocolError
from cometp2p.pex.core import Offence, PexMisbehaviourError

__all__ = ["BadReason", "classify_stop_reason"]


class BadReason(enum.Enum):
    """Why a peer's disconnect is a bad event."""

    PROTOCOL_ERROR = "protocol error"
    PONG_TIMEOUT = "pong timeout"
    PEX_VIOLATION = "PEX violation"
    OVERSIZED_OR_UNDECODABLE = "oversized or undecodable message"


def classify_stop_reason(reason: BaseException | None) -> BadReason | None:
    """The :class:`BadReason` of a peer stopped with ``reason``, or None if it is not the
    peer's fault (graceful stop, end of stream, network failure, our own shutdown).

    A reactor that raised something other than a :class:`RemoteProtocolError` on a message
    (its ``receive`` or ``decode`` failed on what the peer sent) counts as a protocol error,
    a protobuf :class:`DecodeError` as undecodable.
    """
    if reason is None:
        return None
    if isinstance(reason, PexMisbehaviourError):
        if reason.offence in (Offence.UNDECODABLE, Offence.UNKNOWN_MESSAGE):
            return BadReason.OVERSIZED_OR_UNDECODABLE
        return BadReason.PEX_VIOLATION
    if isinstance(reason, DecodeError):
        return BadReason.OVERSIZED_OR_UNDECODABLE
    if isinstance(reason, RemoteProtocolError):
        text = str(reason)
        if text.startswith("pong timeout"):
            return BadReason.PONG_TIMEOUT
        if "exceeds" in text or "decod" in text:
            return BadReason.OVERSIZED_OR_UNDECODABLE
        return BadReason.PROTOCOL_ERROR
    if isinstance(reason, CometP2PError):
        return None  # ConnectionBrokenError / ConnectionClosedError and the like
    if isinstance(reason, Exception):
        return BadReason.PROTOCOL_ERROR
    return None
