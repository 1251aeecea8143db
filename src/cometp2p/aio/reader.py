"""The read side of a :class:`~cometp2p.aio.connection.Connection`: one task.

One job: read decrypted bytes from the SecretConnection, within the receive rate the
core allows (``recv_allowance``), feed them to the sans-IO core and let the connection
dispatch the events. It never waits for a consumer while every channel is under its
backlog bound (the inboxes' ``room``); while ``room`` is clear it pauses the core's pong
timeout, since our own pause cannot be blamed on the peer (wire.md §8).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from cometp2p.aio.iotask import run_io_task
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.errors import CometP2PError, PeerClosedError
from cometp2p.sansio.mconnection import MConnection

__all__ = ["Reader"]

_READ_CHUNK_BYTES: Final = 256 * 1024


class Reader:
    """Feeds what the peer sends to the core.

    Args:
        core: the connection's sans-IO MConnection.
        secret: the SecretConnection read from.
        loop: the running event loop (its clock is the core's clock).
        room: set while the reader may read (cleared by the inboxes at their bound).
        wake_writer: set to make the writer re-arm the timer (at the pong deadline, or
            at the end of a receive-rate wait).
        timer_fired: set when the core's timer fired; a rate wait waits on it.
        dispatch: hands the core's events on; called after each ``receive_data``.
        terminate: ends the connection with an error; it must call :meth:`stop`.
        recv_limited: whether the core limits the receive rate (ask it before reads).
        initial_plaintext: bytes read before the reader started; fed first.
    """

    __slots__ = (
        "_core",
        "_dispatch",
        "_initial",
        "_loop",
        "_recv_limited",
        "_room",
        "_secret",
        "_terminate",
        "_timer_fired",
        "_wake_writer",
        "stopped",
    )

    def __init__(
        self,
        core: MConnection,
        secret: SecretConnection,
        loop: asyncio.AbstractEventLoop,
        *,
        room: asyncio.Event,
        wake_writer: asyncio.Event,
        timer_fired: asyncio.Event,
        dispatch: Callable[[], None],
        terminate: Callable[[CometP2PError], None],
        recv_limited: bool,
        initial_plaintext: bytes = b"",
    ) -> None:
        self._core = core
        self._secret = secret
        self._loop = loop
        self._room = room
        self._wake_writer = wake_writer
        self._timer_fired = timer_fired
        self._dispatch = dispatch
        self._terminate = terminate
        self._recv_limited = recv_limited
        self._initial = initial_plaintext
        self.stopped = False

    def stop(self) -> None:
        """Read no more (the task itself is cancelled by the connection)."""
        self.stopped = True

    async def run(self) -> None:
        """The reader task: read and feed until the stream ends or the connection does."""
        await run_io_task(self._run, "read", self._deliver_then_terminate)

    def _deliver_then_terminate(self, error: CometP2PError) -> None:
        # Messages completed before a bad packet are still delivered (the core keeps
        # them queued ahead of its ConnectionTerminated event).
        with contextlib.suppress(CometP2PError):
            self._dispatch()
        self._terminate(error)

    async def _run(self) -> None:
        core = self._core
        loop = self._loop
        secret = self._secret
        room = self._room
        dispatch = self._dispatch
        if self._initial:
            initial, self._initial = self._initial, b""
            core.receive_data(initial)
            dispatch()
        while not self.stopped:
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
                    await self._wait_for_rate()
                    continue
                want = min(want, allowance)
            data = await secret.read_some(want)
            if not data:
                core.receive_data(b"")  # raises if the stream ended inside a Packet
                dispatch()
                self._terminate(PeerClosedError("the peer closed the connection"))
                return
            core.receive_data(data)
            dispatch()

    async def _wait_for_rate(self) -> None:
        # The core's timer now includes when we may read: the writer re-arms the one
        # timer, whose firing wakes us.
        self._timer_fired.clear()
        self._wake_writer.set()
        await self._timer_fired.wait()
