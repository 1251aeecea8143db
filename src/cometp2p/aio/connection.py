"""The asyncio driver of one MConnection over one SecretConnection (wire.md §8).

All protocol logic lives in the sans-IO :class:`~cometp2p.sansio.mconnection.MConnection`;
the driver only moves bytes and re-arms one timer. :class:`Connection` is the facade:
the public send/receive API, the lifecycle (start, flush, close, the one termination)
and the routing of the core's events. One connection runs two tasks:

* the **reader** (:mod:`cometp2p.aio.reader`) reads decrypted bytes (within the receive
  rate), feeds the core and lets :class:`Connection` append each complete message to its
  channel's inbox (:mod:`cometp2p.aio.inbox`). It never waits for a consumer while every
  channel is under its backlog bound, so a slow consumer on one channel delays neither
  Ping/Pong nor any other channel (CometBFT issue #2685);
* the **writer** (:mod:`cometp2p.aio.writer`) asks the core for bytes (many packets in
  one write), seals and writes them, and sleeps on one event, woken by a send, by the
  reader (a Pong is due, or it waits for the receive rate) or by the single
  ``loop.call_at`` timer armed at the core's next deadline (``get_timer()``, which
  includes the end of a receive-rate wait; its firing also wakes a waiting reader).
  Whether to write again, and when, is the core's answer (``has_pending_data``,
  ``more_to_send``), never the driver's.

Consumers pull messages with :meth:`Connection.receive` or, cheaper per message,
:meth:`Connection.receive_many`; both return at once when messages are buffered.

A channel whose consumer falls behind by more than ``recv_backlog_bytes`` stops the
reader (TCP back-pressure) until the consumer has taken half of it; while the reader is
paused by us, our pong timeout cannot be blamed on the peer, so it is not enforced (the
peer's Pings go unanswered meanwhile, exactly as with a Go node whose reactor blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final

from cometp2p.aio.inbox import Inbox, Inboxes
from cometp2p.aio.reader import Reader
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.aio.writer import Writer
from cometp2p.errors import (
    CometP2PError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LocalProtocolError,
    PeerClosedError,
)
from cometp2p.sansio.mconnection import (
    ChannelDescriptor,
    ConnectionTerminated,
    Event,
    MConnection,
    MConnectionConfig,
    MConnectionStatus,
    MessageReceived,
    SendQueueReady,
)

__all__ = ["DEFAULT_RECV_BACKLOG_BYTES", "DEFAULT_SEND_TIMEOUT_S", "Connection"]

logger = logging.getLogger(__name__)

DEFAULT_RECV_BACKLOG_BYTES: Final = 4 * 1024 * 1024
"""Per-channel received-but-unconsumed bytes before the reader pauses (4 MiB)."""

DEFAULT_SEND_TIMEOUT_S: Final = 10.0
"""How long :meth:`Connection.send` waits for room by default (Go's ``defaultSendTimeout``)."""


class Connection:
    """An established MConnection driven by asyncio.

    Args:
        secret: an authenticated :class:`SecretConnection`.
        channels: the channels of this connection (the union of all local reactors').
        config: MConnection settings (rates in bytes/s, intervals in seconds).
        initial_plaintext: decrypted bytes that arrived after the NodeInfo exchange and
            before the driver started; they are fed to the core first.
        recv_backlog_bytes: per-channel bound on received-but-unconsumed message bytes
            before the reader pauses (a message is always admitted whole, so a channel
            may hold one message more than this).

    Raises:
        LocalProtocolError: two channels share an id, or ``recv_backlog_bytes`` < 1.

    Call :meth:`start` once, then :meth:`send` / :meth:`try_send` / :meth:`receive`.
    :meth:`wait_closed` returns the error that ended the connection (``None`` for a
    clean close by us). Must be created inside a running event loop.
    """

    def __init__(
        self,
        secret: SecretConnection,
        channels: Sequence[ChannelDescriptor],
        config: MConnectionConfig,
        *,
        initial_plaintext: bytes = b"",
        recv_backlog_bytes: int = DEFAULT_RECV_BACKLOG_BYTES,
    ) -> None:
        if recv_backlog_bytes < 1:
            raise LocalProtocolError(f"recv_backlog_bytes must be >= 1, got {recv_backlog_bytes}")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._secret = secret
        self._core = core = MConnection(channels, config, now=loop.time())
        self._core_send = core.send
        self._inboxes = inboxes = Inboxes([ch.id for ch in channels], recv_backlog_bytes)
        self._inbox = inboxes.get
        self._writer = writer = Writer(core, secret, loop, self._dispatch, self._terminate)
        self._wake_writer = writer.wake
        self._reader = Reader(
            core,
            secret,
            loop,
            room=inboxes.room,
            wake_writer=writer.wake,
            timer_fired=writer.timer_fired,
            dispatch=self._dispatch,
            terminate=self._terminate,
            recv_limited=config.recv_rate_bytes_per_s > 0,
            initial_plaintext=initial_plaintext,
        )
        self._queue_ready = {ch.id: asyncio.Event() for ch in channels}
        self._closed_event = asyncio.Event()
        self._closed = False
        self._closing = False  # close() began: no new sends
        self._close_error: CometP2PError | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown_task: asyncio.Task[None] | None = None
        self._done_callbacks: list[Callable[[CometP2PError | None], None]] = []
        self._done = False  # ended and the socket closed: what wait_closed waits for

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the reader and writer tasks.

        Raises:
            LocalProtocolError: if called twice, or after the connection ended.
        """
        if self._tasks or self._closed:
            raise LocalProtocolError("Connection.start() called twice or after close")
        name = self._secret.remote_node_id[:12]
        self._tasks = [
            asyncio.create_task(self._reader.run(), name=f"mconn-read-{name}"),
            asyncio.create_task(self._writer.run(), name=f"mconn-write-{name}"),
        ]

    @property
    def closed(self) -> bool:
        """True once the connection has ended, for any reason."""
        return self._closed

    @property
    def secret_connection(self) -> SecretConnection:
        """The underlying SecretConnection (for addresses and the peer's identity)."""
        return self._secret

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """The declared channel ids, in declaration order."""
        return self._core.channel_ids

    async def wait_closed(self) -> CometP2PError | None:
        """Wait until the connection has ended and its socket is closed; return why.

        Returns:
            ``None`` when we closed it (:meth:`close`); otherwise the error that ended
            it: :class:`~cometp2p.errors.ConnectionBrokenError` for an OS error or end of
            stream (:class:`~cometp2p.errors.PeerClosedError` when it ended between two
            Packets), a :class:`~cometp2p.errors.RemoteProtocolError` for a peer that
            broke the protocol or stopped answering Pings.
        """
        await self._closed_event.wait()
        if self._shutdown_task is not None:
            await asyncio.shield(self._shutdown_task)
        return self._close_error

    def add_done_callback(self, callback: Callable[[CometP2PError | None], None]) -> None:
        """Call ``callback(error)`` once the connection has ended and its socket is closed.

        ``error`` is what :meth:`wait_closed` returns. The callback runs from the event
        loop (``call_soon``), at once if the connection is already done; it costs no
        task while the connection is open, so it is the cheap way to watch many.
        """
        if self._done:
            asyncio.get_running_loop().call_soon(callback, self._close_error)
        else:
            self._done_callbacks.append(callback)

    async def close(self, *, flush_timeout_s: float = 2.0) -> None:
        """Close gracefully: stop accepting sends, flush what is queued, then close.

        The flush waits until every queued message has been handed to the socket (the
        socket itself flushes its buffer on close), for at most ``flush_timeout_s``
        seconds; what is still queued after that is dropped. Safe to call more than
        once and from any task. Cancelling it leaves the connection closed (the socket
        is closed in the background).

        Args:
            flush_timeout_s: the longest wait for the flush, in seconds (0: no flush).
        """
        if not self._closing and not self._closed:
            self._closing = True
            for event in self._queue_ready.values():
                event.set()  # senders waiting for room give up
            try:
                if self._tasks and flush_timeout_s > 0:
                    try:
                        async with asyncio.timeout(flush_timeout_s):
                            await self._writer.flushed()
                    except TimeoutError:
                        logger.info(
                            "[%s] close: flush did not finish within %s s; dropping the rest",
                            self._secret.remote_node_id,
                            flush_timeout_s,
                        )
                    except CometP2PError:
                        pass  # the connection ended meanwhile: nothing left to flush
            finally:
                self._terminate(None)
        await self._closed_event.wait()
        if self._shutdown_task is not None:
            await asyncio.shield(self._shutdown_task)

    async def flush(self) -> None:
        """Wait until every message queued so far has been handed to the socket.

        Raises:
            ConnectionClosedError / ConnectionBrokenError / RemoteProtocolError: the
                connection ended first (or had already ended).
            LocalProtocolError: :meth:`start` was not called.
        """
        if self._closed:
            raise self._closed_error()
        if not self._tasks:
            raise LocalProtocolError("flush() before start(): nothing would be written")
        await self._writer.flushed()

    def _terminate(self, error: CometP2PError | None) -> None:
        """End the connection (idempotent) and start closing the socket."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._close_error = error
        if error is None:
            self._core.close()
        else:
            logger.info("[%s] connection ended: %s", self._secret.remote_node_id, error)
        self._reader.stop()
        self._writer.stop(self._closed_error)
        self._inboxes.close()
        for event in self._queue_ready.values():
            event.set()
        self._closed_event.set()
        self._shutdown_task = asyncio.create_task(self._shutdown(), name="mconn-shutdown")

    async def _shutdown(self) -> None:
        try:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await self._secret.close()
        finally:
            self._done = True
            callbacks, self._done_callbacks = self._done_callbacks, []
            loop = asyncio.get_running_loop()
            for callback in callbacks:
                loop.call_soon(callback, self._close_error)

    # ------------------------------------------------------------------ sending

    def try_send(self, channel_id: int, message: bytes) -> bool:
        """Queue ``message`` on ``channel_id`` if there is room now; never blocks.

        Args:
            channel_id: a declared channel byte.
            message: the whole message (any length; bytearray/memoryview are copied).

        Returns:
            True if queued; False if the channel's send queue is full or the connection
            is closing or closed.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection, or
                ``message`` is not bytes-like.
        """
        if self._closing:
            return False
        try:
            if not self._core_send(channel_id, message):
                return False
        except (ConnectionClosedError, ConnectionBrokenError):
            return False
        writer = self._writer
        if writer.asleep:
            writer.sent()
        return True

    async def send(
        self, channel_id: int, message: bytes, timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    ) -> bool:
        """Queue ``message`` on ``channel_id``, waiting up to ``timeout_s`` seconds for room.

        Cancelling a waiting ``send`` leaves nothing queued and the connection usable.

        Returns:
            True once queued; False on timeout or if the connection is closing or ended.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection, or
                ``message`` is not bytes-like.
        """
        if self.try_send(channel_id, message):
            return True
        if self._closing:
            return False
        ready = self._queue_ready[channel_id]
        try:
            async with asyncio.timeout(timeout_s):
                while not self._closing:
                    ready.clear()
                    if self.try_send(channel_id, message):
                        return True
                    await ready.wait()
        except TimeoutError:
            return False
        return False

    # ------------------------------------------------------------------ receiving

    async def receive(self, channel_id: int) -> bytes:
        """Return the next whole message received on ``channel_id``.

        Returns at once, without yielding to the event loop, when one is buffered.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection.
            ConnectionClosedError / ConnectionBrokenError / RemoteProtocolError: the
                connection ended and no message is left on this channel.
        """
        inbox = self._inbox(channel_id)
        messages = inbox.messages
        while not messages:
            await self._wait_inbox(inbox)
        message = messages.popleft()
        inbox.nbytes -= len(message)
        if inbox.over:
            self._inboxes.consumed(inbox)
        return message

    async def receive_many(self, channel_id: int, max_messages: int = 0) -> list[bytes]:
        """Return every message buffered on ``channel_id`` (waiting for at least one).

        Args:
            channel_id: a declared channel byte.
            max_messages: the most messages to return; 0 means no limit.

        Returns:
            One or more whole messages, oldest first.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection, or
                ``max_messages`` < 0.
            ConnectionClosedError / ConnectionBrokenError / RemoteProtocolError: the
                connection ended and no message is left on this channel.
        """
        if max_messages < 0:
            raise LocalProtocolError(f"max_messages must be >= 0, got {max_messages}")
        inbox = self._inbox(channel_id)
        messages = inbox.messages
        while not messages:
            await self._wait_inbox(inbox)
        if not max_messages or len(messages) <= max_messages:
            batch = list(messages)
            messages.clear()
            inbox.nbytes = 0
        else:
            popleft = messages.popleft
            batch = [popleft() for _ in range(max_messages)]
            inbox.nbytes -= sum(map(len, batch))
        if inbox.over:
            self._inboxes.consumed(inbox)
        return batch

    def receive_nowait(self, channel_id: int) -> bytes | None:
        """Return the next buffered message on ``channel_id``, or ``None`` if there is none.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection.
            ConnectionClosedError / ConnectionBrokenError / RemoteProtocolError: the
                connection ended and no message is left on this channel.
        """
        inbox = self._inbox(channel_id)
        if not inbox.messages:
            if self._closed:
                raise self._closed_error()
            return None
        message = inbox.messages.popleft()
        inbox.nbytes -= len(message)
        if inbox.over:
            self._inboxes.consumed(inbox)
        return message

    async def _wait_inbox(self, inbox: Inbox) -> None:
        if self._closed:
            raise self._closed_error()
        inbox.ready.clear()
        await inbox.ready.wait()

    def _closed_error(self) -> CometP2PError:
        err = self._close_error
        if err is None:
            return ConnectionClosedError("connection closed by us")
        return err

    # ------------------------------------------------------------------ status

    def status(self) -> MConnectionStatus:
        """Per-channel queue lengths (messages), byte counters and ``recently_sent``."""
        return self._core.status(self._loop.time())

    # ------------------------------------------------------------------ events

    def _dispatch(self) -> None:
        """Hand the core's events to inboxes, waiting senders and the writer."""
        events = self._core.drain_events()
        if events:
            if set(map(type, events)) == {MessageReceived}:
                # The common case, a read that completed messages and nothing else.
                self._inboxes.deliver(events)  # type: ignore[arg-type]
            else:
                self._dispatch_mixed(events)
        if self._core.has_pending_data():
            self._wake_writer.set()  # e.g. a Pong is due

    def _dispatch_mixed(self, events: list[Event]) -> None:
        # Messages first: the rest only wakes waiters (no await in between), so their
        # relative order does not matter.
        received = [event for event in events if isinstance(event, MessageReceived)]
        if received:
            self._inboxes.deliver(received)
        for event in events:
            if isinstance(event, SendQueueReady):
                self._queue_ready[event.channel_id].set()
            elif isinstance(event, ConnectionTerminated):
                if event.error is not None:
                    self._terminate(event.error)
                elif event.by_peer:
                    self._terminate(PeerClosedError("the peer closed the connection"))
