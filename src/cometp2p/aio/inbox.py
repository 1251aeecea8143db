"""Received messages a :class:`~cometp2p.aio.connection.Connection`'s consumers have not taken.

One job: hold each channel's complete received messages until its consumer takes them,
and count the bytes held, so that a channel whose consumer falls behind by more than
the backlog bound stops the reader (TCP back-pressure, through the ``room`` event) until
the consumer has taken half of it (wire.md §8; CometBFT issue #2685: a slow consumer on
one channel must delay neither Ping/Pong nor any other channel while under the bound).
"""

from __future__ import annotations

import asyncio
import collections
import operator
from collections.abc import Callable, Sequence
from typing import Final

from cometp2p.errors import LocalProtocolError
from cometp2p.sansio.mconnection import MessageReceived

__all__ = ["Inbox", "Inboxes"]

# C-level attribute getters: a batch of MessageReceived events is unpacked by map()
# rather than a Python loop (the receive hot path).
_channel_of: Final[Callable[[MessageReceived], int]] = operator.attrgetter("channel_id")
_message_of: Final[Callable[[MessageReceived], bytes]] = operator.attrgetter("message")


class Inbox:
    """Messages received on one channel that its consumer has not taken yet."""

    __slots__ = ("messages", "nbytes", "over", "ready")

    def __init__(self) -> None:
        self.messages: collections.deque[bytes] = collections.deque()
        self.nbytes = 0  # bytes of the messages held
        self.over = False  # counted in Inboxes.over
        self.ready = asyncio.Event()  # set when messages arrive or the connection ends


class Inboxes:
    """The inboxes of one connection and their backlog bound.

    Args:
        channel_ids: the declared channel ids (distinct).
        backlog_bytes: per-channel bound on held bytes before the reader pauses (>= 1; a
            message is always admitted whole, so a channel may hold one message more).

    ``room`` is set while the reader may read: no inbox is above the bound. A consumer
    that took messages from an inbox with ``over`` set calls :meth:`consumed`.
    """

    __slots__ = ("_all", "_by_channel", "_limit", "_over", "_resume", "room")

    def __init__(self, channel_ids: Sequence[int], backlog_bytes: int) -> None:
        self._by_channel = {channel_id: Inbox() for channel_id in channel_ids}
        self._all = tuple(self._by_channel.values())
        self._limit = backlog_bytes
        self._resume = backlog_bytes // 2
        self._over = 0  # inboxes above the bound: the reader is paused
        self.room = asyncio.Event()
        self.room.set()

    def get(self, channel_id: int) -> Inbox:
        """The inbox of ``channel_id``.

        Raises:
            LocalProtocolError: ``channel_id`` is not a declared channel.
        """
        inbox = self._by_channel.get(channel_id)
        if inbox is None:
            declared = ", ".join(f"{cid:#04x}" for cid in self._by_channel) or "none"
            raise LocalProtocolError(
                f"receive on channel {channel_id!r}, which is not declared on this "
                f"connection (declared: {declared})"
            )
        return inbox

    def deliver(self, received: Sequence[MessageReceived]) -> None:
        """Append received messages to their inboxes, wake consumers, pause at the bound."""
        inboxes = self._by_channel
        channel_ids = set(map(_channel_of, received))
        if len(channel_ids) == 1:
            inbox = inboxes[channel_ids.pop()]
            messages = list(map(_message_of, received))
            inbox.messages.extend(messages)
            inbox.nbytes += sum(map(len, messages))
        else:
            for event in received:
                inbox = inboxes[event.channel_id]
                inbox.messages.append(event.message)
                inbox.nbytes += len(event.message)
        limit = self._limit
        for inbox in self._all:
            if inbox.messages:
                inbox.ready.set()
                if inbox.nbytes > limit and not inbox.over:
                    inbox.over = True
                    self._over += 1
                    self.room.clear()

    def consumed(self, inbox: Inbox) -> None:
        """Messages were taken from ``inbox`` (which is ``over``): resume at half the bound."""
        if inbox.nbytes <= self._resume:
            inbox.over = False
            self._over -= 1
            if not self._over:
                self.room.set()

    def close(self) -> None:
        """The connection ended: wake every consumer and the reader."""
        self.room.set()
        for inbox in self._all:
            inbox.ready.set()
