"""The asyncio driver of one MConnection over one SecretConnection (wire.md §8).

All protocol logic lives in the sans-IO :class:`~cometp2p.sansio.mconnection.MConnection`;
this module only moves bytes and re-arms one timer. One connection runs two tasks:

* the **reader** reads decrypted bytes (within the receive rate), feeds the core and
  appends each complete message to its channel's inbox. It never waits for a consumer
  while every channel is under its backlog bound, so a slow consumer on one channel
  delays neither Ping/Pong nor any other channel (CometBFT issue #2685);
* the **writer** asks the core for bytes (many packets in one write), seals and writes
  them, and sleeps on one event, woken by a send, by the reader (a Pong is due, or it
  waits for the receive rate) or by the single ``loop.call_at`` timer armed at the
  core's next deadline (``get_timer()``, which includes the end of a receive-rate wait;
  its firing also wakes a waiting reader). Whether to write again, and when, is the
  core's answer (``has_pending_data``, ``more_to_send``), never the driver's.

Consumers pull messages with :meth:`Connection.receive` or, cheaper per message,
:meth:`Connection.receive_many`; both return at once when messages are buffered.

A channel whose consumer falls behind by more than ``recv_backlog_bytes`` stops the
reader (TCP back-pressure) until the consumer has taken half of it; while the reader is
paused by us, our pong timeout cannot be blamed on the peer, so it is not enforced (the
peer's Pings go unanswered meanwhile, exactly as with a Go node whose reactor blocks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import operator
from collections.abc import Callable, Sequence
from typing import Final

from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.errors import (
    CometP2PError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LocalProtocolError,
)
from cometp2p.sansio.mconnection import (
    ChannelDescriptor,
    ConnectionTerminated,
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

_READ_CHUNK_BYTES: Final = 256 * 1024

# C-level attribute getters: a batch of MessageReceived events is unpacked by map()
# rather than a Python loop (the receive hot path).
_channel_of: Final[Callable[[MessageReceived], int]] = operator.attrgetter("channel_id")
_message_of: Final[Callable[[MessageReceived], bytes]] = operator.attrgetter("message")


class _Inbox:
    """Messages received on one channel that its consumer has not taken yet."""

    __slots__ = ("messages", "nbytes", "over", "ready")

    def __init__(self) -> None:
        self.messages: collections.deque[bytes] = collections.deque()
        self.nbytes = 0  # bytes of the messages held
        self.over = False  # counted in Connection._inboxes_over
        self.ready = asyncio.Event()  # set when messages arrive or the connection ends


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
        self._core = MConnection(channels, config, now=loop.time())
        self._core_send = self._core.send
        self._recv_limited = config.recv_rate_bytes_per_s > 0
        # A message sent while the writer sleeps and the socket is idle is written on the
        # sender's own turn (_write_now): one event-loop wakeup fewer per message on an
        # idle link. At most once per loop turn, so that a burst of sends is still
        # batched by the writer into few socket writes.
        self._wrote_this_turn = False
        self._initial = initial_plaintext
        self._backlog_limit = recv_backlog_bytes
        self._backlog_resume = recv_backlog_bytes // 2
        self._inboxes = {ch.id: _Inbox() for ch in channels}
        self._inbox_list = tuple(self._inboxes.values())
        self._inboxes_over = 0  # inboxes above the backlog bound: the reader is paused
        self._room = asyncio.Event()  # set while the reader may read
        self._room.set()
        self._queue_ready = {ch.id: asyncio.Event() for ch in channels}
        self._wake_writer = asyncio.Event()
        self._recv_wake = asyncio.Event()  # the timer fired: the reader may look again
        self._writer_asleep = False  # try_send sets _wake_writer only when this is True
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._closed_event = asyncio.Event()
        self._closed = False
        self._closing = False  # close() began: no new sends
        self._close_error: CometP2PError | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown_task: asyncio.Task[None] | None = None

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
            asyncio.create_task(self._reader(), name=f"mconn-read-{name}"),
            asyncio.create_task(self._writer(), name=f"mconn-write-{name}"),
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
            it: :class:`~cometp2p.errors.ConnectionBrokenError` for end of stream or an
            OS error, a :class:`~cometp2p.errors.RemoteProtocolError` for a peer that
            broke the protocol or stopped answering Pings.
        """
        await self._closed_event.wait()
        if self._shutdown_task is not None:
            await asyncio.shield(self._shutdown_task)
        return self._close_error

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
                            await self._flushed()
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
        await self._flushed()

    async def _flushed(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._flush_waiters.append(waiter)
        self._wake_writer.set()
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._flush_waiters.remove(waiter)

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._room.set()
        self._wake_writer.set()
        self._recv_wake.set()
        for inbox in self._inbox_list:
            inbox.ready.set()
        for event in self._queue_ready.values():
            event.set()
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_exception(self._closed_error())
        self._flush_waiters.clear()
        self._closed_event.set()
        self._shutdown_task = asyncio.create_task(self._shutdown(), name="mconn-shutdown")

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._secret.close()

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
        if self._writer_asleep:
            if not self._wrote_this_turn and self._write_now():
                return True
            self._writer_asleep = False
            self._wake_writer.set()
        return True

    def _write_now(self) -> bool:
        """Do one writer turn on the caller's turn: due timer, data to send, events.

        Only while the writer sleeps and the transport holds nothing unsent (so there is
        no back-pressure to wait for); waiting flushes, leftovers and held data stay the
        writer's. Returns False when the writer must still be woken.
        """
        secret = self._secret
        core = self._core
        if self._flush_waiters or secret.write_buffer_size():
            return False
        now = self._loop.time()
        try:
            deadline = core.get_timer()
            if deadline is not None and deadline <= now:
                # As the writer's turn starts (the send itself may have set a deadline).
                core.handle_timer(now)
                self._recv_wake.set()
            data = core.data_to_send(now)
            if data:
                secret.write(data)
        except CometP2PError as exc:
            self._terminate(exc)
            return True
        except OSError as exc:
            error = ConnectionBrokenError(f"write failed: {exc!r}")
            error.__cause__ = exc
            self._terminate(error)
            return True
        self._wrote_this_turn = True
        self._loop.call_soon(self._next_turn)
        self._dispatch()
        if self._closed or core.more_to_send() or core.has_pending_data():
            return False
        self._arm_timer(core.get_timer())
        return True

    def _next_turn(self) -> None:
        self._wrote_this_turn = False

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
        if inbox.over and inbox.nbytes <= self._backlog_resume:
            self._inbox_drained(inbox)
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
        if inbox.over and inbox.nbytes <= self._backlog_resume:
            self._inbox_drained(inbox)
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
        if inbox.over and inbox.nbytes <= self._backlog_resume:
            self._inbox_drained(inbox)
        return message

    def _inbox(self, channel_id: int) -> _Inbox:
        inbox = self._inboxes.get(channel_id)
        if inbox is None:
            declared = ", ".join(f"{cid:#04x}" for cid in self._inboxes) or "none"
            raise LocalProtocolError(
                f"receive on channel {channel_id!r}, which is not declared on this "
                f"connection (declared: {declared})"
            )
        return inbox

    async def _wait_inbox(self, inbox: _Inbox) -> None:
        if self._closed:
            raise self._closed_error()
        inbox.ready.clear()
        await inbox.ready.wait()

    def _inbox_drained(self, inbox: _Inbox) -> None:
        inbox.over = False
        self._inboxes_over -= 1
        if not self._inboxes_over:
            self._room.set()

    def _closed_error(self) -> CometP2PError:
        err = self._close_error
        if err is None:
            return ConnectionClosedError("connection closed by us")
        return err

    # ------------------------------------------------------------------ status

    def status(self) -> MConnectionStatus:
        """Per-channel queue lengths (messages), byte counters and ``recently_sent``."""
        return self._core.status(self._loop.time())

    # ------------------------------------------------------------------ tasks

    def _dispatch(self) -> None:
        """Hand the core's events to inboxes, waiting senders and the writer."""
        events = self._core.drain_events()
        if events:
            inboxes = self._inboxes
            delivered = False
            if set(map(type, events)) == {MessageReceived}:
                # The common case, a read that completed messages and nothing else.
                received: list[MessageReceived] = events  # type: ignore[assignment]
                delivered = True
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
            else:
                for any_event in events:
                    if isinstance(any_event, MessageReceived):
                        inbox = inboxes[any_event.channel_id]
                        inbox.messages.append(any_event.message)
                        inbox.nbytes += len(any_event.message)
                        delivered = True
                    elif isinstance(any_event, SendQueueReady):
                        self._queue_ready[any_event.channel_id].set()
                    elif isinstance(any_event, ConnectionTerminated):
                        if any_event.error is not None:
                            self._terminate(any_event.error)
                        elif any_event.by_peer:
                            self._terminate(ConnectionBrokenError("the peer closed the connection"))
            if delivered:
                limit = self._backlog_limit
                for inbox in self._inbox_list:
                    if inbox.messages:
                        inbox.ready.set()
                        if inbox.nbytes > limit and not inbox.over:
                            inbox.over = True
                            self._inboxes_over += 1
                            self._room.clear()
        if self._core.has_pending_data():
            self._wake_writer.set()  # e.g. a Pong is due

    async def _reader(self) -> None:
        core = self._core
        loop = self._loop
        secret = self._secret
        room = self._room
        try:
            if self._initial:
                initial, self._initial = self._initial, b""
                core.receive_data(initial)
                self._dispatch()
            while not self._closed:
                if not room.is_set():
                    core.pause_pong_timeout(loop.time())
                    await room.wait()
                    core.resume_pong_timeout(loop.time())
                    self._wake_writer.set()  # re-arm the timer with the pong deadline
                    continue
                want = _READ_CHUNK_BYTES
                if self._recv_limited:
                    allowance = core.recv_allowance(loop.time())
                    if allowance <= 0:
                        # The core's timer now includes when we may read: the writer
                        # re-arms the one timer, whose firing wakes us.
                        self._recv_wake.clear()
                        self._wake_writer.set()
                        await self._recv_wake.wait()
                        continue
                    want = min(want, allowance)
                data = await secret.read_some(want)
                if not data:
                    core.receive_data(b"")  # raises if the stream ended inside a Packet
                    self._dispatch()
                    self._terminate(ConnectionBrokenError("the peer closed the connection"))
                    return
                core.receive_data(data)
                self._dispatch()
        except asyncio.CancelledError:
            raise
        except CometP2PError as exc:
            self._deliver_then_terminate(exc)
        except OSError as exc:
            error = ConnectionBrokenError(f"read failed: {exc!r}")
            error.__cause__ = exc
            self._terminate(error)

    def _deliver_then_terminate(self, exc: CometP2PError) -> None:
        # Messages completed before a bad packet are still delivered (the core keeps
        # them queued ahead of its ConnectionTerminated event).
        with contextlib.suppress(CometP2PError):
            self._dispatch()
        self._terminate(exc)

    async def _writer(self) -> None:
        core = self._core
        loop = self._loop
        secret = self._secret
        wake = self._wake_writer
        try:
            while not self._closed:
                now = loop.time()
                deadline = core.get_timer()
                if deadline is not None and deadline <= now:
                    core.handle_timer(now)
                    self._recv_wake.set()  # a reader waiting for the receive rate looks again
                data = core.data_to_send(now)
                self._dispatch()
                if self._closed:
                    break
                if data:
                    secret.write(data)
                    await secret.drain()
                    if core.more_to_send():
                        # Let the reader and the producers run first (one loop turn).
                        await asyncio.sleep(0)
                        continue
                wake.clear()
                if core.has_pending_data():
                    continue
                if self._flush_waiters and not core.has_queued_messages():
                    await secret.drain()
                    for waiter in self._flush_waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                    self._flush_waiters.clear()
                    continue  # sends during the drain did not wake us: look again
                self._arm_timer(core.get_timer())
                self._writer_asleep = True
                try:
                    await wake.wait()
                finally:
                    self._writer_asleep = False
        except asyncio.CancelledError:
            raise
        except CometP2PError as exc:
            self._terminate(exc)
        except OSError as exc:
            error = ConnectionBrokenError(f"write failed: {exc!r}")
            error.__cause__ = exc
            self._terminate(error)

    def _arm_timer(self, deadline: float | None) -> None:
        """Keep one loop timer at the core's next deadline; it wakes the writer."""
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._wake_writer.set()
        self._recv_wake.set()
