"""The asyncio driver of one MConnection over one SecretConnection (wire.md §8).

All protocol logic lives in the sans-IO :class:`~cometp2p.sansio.mconnection.MConnection`;
this module only moves bytes and re-arms one timer. One connection runs three tasks:

* the **reader** reads decrypted bytes, feeds the core and hands each complete message to
  its channel's bounded inbound queue. It never waits for a consumer while a channel is
  under its backlog bound, so a slow consumer on one channel delays neither Ping/Pong nor
  any other channel (CometBFT issue #2685);
* the **writer** asks the core for bytes (many packets in one write), writes them and
  sleeps until woken by a ``send`` or until the core's next timer;
* the caller's consumers pull messages with :meth:`Connection.receive`.

A channel whose consumer falls behind by more than ``recv_backlog_bytes`` stops the
reader (TCP back-pressure) until the consumer catches up; while the reader is paused
by us, our pong timeout cannot be blamed on the peer, so it is not enforced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

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

__all__ = ["Connection"]

logger = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 256 * 1024
_DEFAULT_BACKLOG_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class _Inbox:
    """Messages received on one channel that its consumer has not taken yet."""

    messages: collections.deque[bytes]
    nbytes: int
    ready: asyncio.Event


class Connection:
    """An established MConnection driven by asyncio.

    Args:
        secret: an authenticated :class:`SecretConnection`.
        channels: the channels of this connection (the union of all local reactors').
        config: MConnection settings (rates in bytes/s, intervals in seconds).
        initial_plaintext: decrypted bytes that arrived after the NodeInfo exchange and
            before the driver started; they are fed to the core first.
        recv_backlog_bytes: per-channel bound on received-but-unconsumed message bytes
            before the reader pauses (at least one message is always admitted).

    Call :meth:`start` once, then :meth:`send` / :meth:`try_send` / :meth:`receive`.
    :meth:`wait_closed` returns the error that ended the connection (``None`` for a
    clean close by us).
    """

    def __init__(
        self,
        secret: SecretConnection,
        channels: Sequence[ChannelDescriptor],
        config: MConnectionConfig,
        *,
        initial_plaintext: bytes = b"",
        recv_backlog_bytes: int = _DEFAULT_BACKLOG_BYTES,
    ) -> None:
        self._secret = secret
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._core = MConnection(channels, config, now=loop.time())
        self._initial = initial_plaintext
        self._backlog_limit = recv_backlog_bytes
        self._inboxes = {ch.id: _Inbox(collections.deque(), 0, asyncio.Event()) for ch in channels}
        self._wake_writer = asyncio.Event()
        self._queue_ready: dict[int, asyncio.Event] = {ch.id: asyncio.Event() for ch in channels}
        self._room = asyncio.Event()  # set when a paused reader may continue
        self._room.set()
        self._closed = asyncio.Event()
        self._close_error: CometP2PError | None = None
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the reader and writer tasks.

        Raises:
            LocalProtocolError: if called twice.
        """
        if self._tasks:
            raise LocalProtocolError("Connection.start() called twice")
        name = self._secret.remote_node_id[:12]
        self._tasks = [
            asyncio.create_task(self._reader(), name=f"mconn-read-{name}"),
            asyncio.create_task(self._writer(), name=f"mconn-write-{name}"),
        ]

    @property
    def closed(self) -> bool:
        """True once the connection has ended, for any reason."""
        return self._closed.is_set()

    @property
    def secret_connection(self) -> SecretConnection:
        """The underlying SecretConnection (for addresses and the peer's identity)."""
        return self._secret

    async def wait_closed(self) -> CometP2PError | None:
        """Wait until the connection ends; return why (``None``: closed cleanly by us)."""
        await self._closed.wait()
        return self._close_error

    async def close(self, *, flush_timeout_s: float = 2.0) -> None:
        """Close gracefully: flush what is queued (bounded by ``flush_timeout_s``), then close.

        Safe to call more than once and from any task; cancellation leaves the connection
        closed.
        """
        if self._closed.is_set():
            return
        if not self._closing:
            self._closing = True
            with contextlib.suppress(TimeoutError, CometP2PError, OSError):
                async with asyncio.timeout(flush_timeout_s):
                    await self._flush_all()
        self._terminate(None)
        await self._shutdown()

    async def _flush_all(self) -> None:
        while self._core.has_pending_data() and not self._closed.is_set():
            self._wake_writer.set()
            await asyncio.sleep(0)  # let the writer run one round
            await self._secret.drain()

    def _terminate(self, error: CometP2PError | None) -> None:
        if self._closed.is_set():
            return
        self._close_error = error
        self._closed.set()
        self._room.set()
        self._wake_writer.set()
        for inbox in self._inboxes.values():
            inbox.ready.set()
        for ev in self._queue_ready.values():
            ev.set()
        if error is not None:
            logger.info("[%s] connection closed: %s", self._secret.remote_node_id, error)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self._secret.close()

    # ------------------------------------------------------------------ sending

    def try_send(self, channel_id: int, message: bytes) -> bool:
        """Queue ``message`` on ``channel_id`` if there is room now; never blocks.

        Returns:
            True if queued, False if the channel's send queue is full or the connection
            is closed.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection.
        """
        if self._closed.is_set() or self._closing:
            return False
        if not self._core.send(channel_id, message):
            return False
        self._wake_writer.set()
        return True

    async def send(self, channel_id: int, message: bytes, timeout_s: float = 10.0) -> bool:
        """Queue ``message`` on ``channel_id``, waiting up to ``timeout_s`` seconds for room.

        Returns:
            True once queued; False on timeout or if the connection closed meanwhile.

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection.
        """
        if self.try_send(channel_id, message):
            return True
        ready = self._queue_ready[channel_id]
        try:
            async with asyncio.timeout(timeout_s):
                while not self._closed.is_set() and not self._closing:
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

        Raises:
            LocalProtocolError: ``channel_id`` is not a channel of this connection.
            ConnectionClosedError / ConnectionBrokenError / RemoteProtocolError: the
                connection ended and no message is left on this channel.
        """
        inbox = self._inboxes.get(channel_id)
        if inbox is None:
            raise LocalProtocolError(f"receive on undeclared channel {channel_id:#04x}")
        while not inbox.messages:
            if self._closed.is_set():
                raise self._closed_error()
            inbox.ready.clear()
            await inbox.ready.wait()
        message = inbox.messages.popleft()
        inbox.nbytes -= len(message)
        if inbox.nbytes <= self._backlog_limit and not self._room.is_set():
            self._room.set()
        return message

    def _closed_error(self) -> CometP2PError:
        err = self._close_error
        if err is None:
            return ConnectionClosedError("connection closed")
        return err

    # ------------------------------------------------------------------ status

    def status(self) -> MConnectionStatus:
        """Per-channel queue lengths (messages), byte counters and ``recently_sent``."""
        return self._core.status(self._loop.time())

    # ------------------------------------------------------------------ tasks

    def _drain_events(self) -> None:
        core = self._core
        while (event := core.next_event()) is not None:
            if isinstance(event, MessageReceived):
                inbox = self._inboxes[event.channel_id]
                inbox.messages.append(event.message)
                inbox.nbytes += len(event.message)
                inbox.ready.set()
                if inbox.nbytes > self._backlog_limit:
                    self._room.clear()
            elif isinstance(event, SendQueueReady):
                self._queue_ready[event.channel_id].set()
            elif isinstance(event, ConnectionTerminated):
                self._terminate(event.error)
        if core.has_pending_data():
            self._wake_writer.set()

    async def _reader(self) -> None:
        core = self._core
        try:
            if self._initial:
                core.receive_data(self._initial)
                self._initial = b""
                self._drain_events()
            while not self._closed.is_set():
                if not self._room.is_set():
                    core.pause_pong_timeout(self._loop.time())
                    await self._room.wait()
                    core.resume_pong_timeout(self._loop.time())
                    continue
                data = await self._secret.read_some(_READ_CHUNK_BYTES)
                if not data:
                    raise ConnectionBrokenError("peer closed the connection (EOF)")
                core.receive_data(data)
                self._drain_events()
        except asyncio.CancelledError:
            raise
        except CometP2PError as exc:
            self._terminate(exc)
        except OSError as exc:
            self._terminate(ConnectionBrokenError(f"read failed: {exc}"))
        finally:
            if self._closed.is_set() and not self._closing:
                self._schedule_shutdown()

    async def _writer(self) -> None:
        core = self._core
        loop = self._loop
        secret = self._secret
        try:
            while not self._closed.is_set():
                self._wake_writer.clear()
                now = loop.time()
                timer = core.get_timer()
                if timer is not None and timer <= now:
                    core.handle_timer(now)
                    self._drain_events()
                    if self._closed.is_set():
                        break
                data = core.data_to_send(now)
                self._drain_events()
                if data:
                    secret.write(data)
                    await secret.drain()
                    continue
                timer = core.get_timer()
                if timer is None:
                    await self._wake_writer.wait()
                else:
                    delay = timer - loop.time()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(delay):
                                await self._wake_writer.wait()
        except asyncio.CancelledError:
            raise
        except CometP2PError as exc:
            self._terminate(exc)
        except OSError as exc:
            self._terminate(ConnectionBrokenError(f"write failed: {exc}"))
        finally:
            if self._closed.is_set() and not self._closing:
                self._schedule_shutdown()

    def _schedule_shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        task = asyncio.create_task(self._shutdown(), name="mconn-shutdown")
        self._tasks.append(task)
