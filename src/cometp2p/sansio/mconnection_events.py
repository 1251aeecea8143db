"""What an MConnection reports: its events, its lifecycle state and its status snapshot.

:data:`Event` is everything :meth:`MConnection.next_event
<cometp2p.sansio.mconnection.MConnection.next_event>` returns (wire.md §8);
:class:`MConnectionState` and :class:`MConnectionStatus` describe the connection.
Re-exported by :mod:`cometp2p.sansio.mconnection`, where callers import them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cometp2p.errors import CometP2PError

__all__ = [
    "ChannelStatus",
    "ConnectionTerminated",
    "Event",
    "MConnectionState",
    "MConnectionStatus",
    "MessageReceived",
    "SendQueueReady",
]


@dataclass(frozen=True, slots=True, init=False)
class MessageReceived:
    """A whole message arrived on a channel (all its PacketMsgs, eof on the last).

    Attributes:
        channel_id: the channel byte.
        message: the reassembled message bytes (possibly empty).
    """

    channel_id: int
    message: bytes

    def __init__(self, channel_id: int, message: bytes) -> None:
        # One of these per message on the receive hot path: the slot setters are
        # about a third cheaper than the generated frozen __init__'s object.__setattr__.
        _set_channel_id(self, channel_id)
        _set_message(self, message)


_set_channel_id: Final[Callable[[MessageReceived, int], None]] = MessageReceived.__dict__[
    "channel_id"
].__set__
_set_message: Final[Callable[[MessageReceived, bytes], None]] = MessageReceived.__dict__[
    "message"
].__set__


@dataclass(frozen=True, slots=True)
class SendQueueReady:
    """A channel whose :meth:`MConnection.send` returned ``False`` has room again.

    Attributes:
        channel_id: the channel byte.
    """

    channel_id: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over; always the last event.

    Attributes:
        error: why the connection failed: a :class:`RemoteProtocolError` when the peer
            is at fault (malformed bytes, unknown channel, oversize packet or message,
            pong timeout), a :class:`LocalProtocolError` for an unexpected internal
            error (see :mod:`cometp2p.sansio.failure`), or ``None`` for a clean end.
        by_peer: ``False`` when we called :meth:`MConnection.close` or failed
            internally.
    """

    error: CometP2PError | None
    by_peer: bool


Event = MessageReceived | SendQueueReady | ConnectionTerminated
"""Everything :meth:`MConnection.next_event` can return."""


class MConnectionState(enum.Enum):
    """Lifecycle of an MConnection: OPEN, then exactly one of the three ends."""

    OPEN = "open"
    CLOSED = "closed"  # we called close()
    PEER_CLOSED = "peer closed"  # EOF at a packet boundary
    FAILED = "failed"  # the peer broke the protocol or stopped answering pings


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """Counters of one channel (Go's ``ChannelStatus`` plus byte counts).

    Attributes:
        id: the channel byte.
        priority: its priority.
        send_queue_capacity: whole messages its queue holds.
        send_queue_size: messages queued, counting one partly sent.
        recently_sent: the decayed count of delimited packet bytes that drives scheduling.
        bytes_sent: message payload bytes sent on it (chunk data, excluding framing).
        bytes_received: message payload bytes received on it.
    """

    id: int
    priority: int
    send_queue_capacity: int
    send_queue_size: int
    recently_sent: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True, slots=True)
class MConnectionStatus:
    """A snapshot of an MConnection.

    Attributes:
        state: the lifecycle state.
        duration_s: seconds since the connection was created.
        bytes_sent: all bytes handed out by ``data_to_send`` (framing included).
        bytes_received: all bytes passed to ``receive_data``.
        channels: one entry per channel, in declaration order.
    """

    state: MConnectionState
    duration_s: float
    bytes_sent: int
    bytes_received: int
    channels: tuple[ChannelStatus, ...]
