"""The write side of a :class:`~cometp2p.aio.connection.Connection`: one task, one timer.

One job: move the sans-IO core's outgoing bytes to the SecretConnection, on the writer
task or, on an idle link, on the sender's own turn, and keep the one ``loop.call_at``
timer at the core's next deadline (``get_timer()``, which includes the end of a
receive-rate wait; its firing also wakes a reader waiting for the rate). Whether to
write again, and when, is the core's answer (``has_pending_data``, ``more_to_send``),
never the writer's. It also settles :meth:`Connection.flush` waits (wire.md §8).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cometp2p.aio.iotask import run_io_task
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.errors import CometP2PError, ConnectionBrokenError
from cometp2p.sansio.mconnection import MConnection

__all__ = ["Writer"]


class Writer:
    """Writes what the core has to send and re-arms the one timer.

    Args:
        core: the connection's sans-IO MConnection.
        secret: the SecretConnection written to.
        loop: the running event loop (its clock is the core's clock).
        dispatch: hands the core's events on; called after each ``data_to_send``.
        terminate: ends the connection with an error; called when a write fails or the
            core raises. It must call :meth:`stop` before it returns.

    ``wake`` is set to make a sleeping writer look at the core again; ``timer_fired`` is
    set whenever the timer fired or ``handle_timer`` ran (a reader waiting for the
    receive rate waits on it). ``asleep`` is True while :meth:`run` waits on ``wake``.
    """

    __slots__ = (
        "_core",
        "_dispatch",
        "_flush_waiters",
        "_loop",
        "_secret",
        "_terminate",
        "_timer",
        "_timer_at",
        "_wrote_this_turn",
        "asleep",
        "stopped",
        "timer_fired",
        "wake",
    )

    def __init__(
        self,
        core: MConnection,
        secret: SecretConnection,
        loop: asyncio.AbstractEventLoop,
        dispatch: Callable[[], None],
        terminate: Callable[[CometP2PError], None],
    ) -> None:
        self._core = core
        self._secret = secret
        self._loop = loop
        self._dispatch = dispatch
        self._terminate = terminate
        self.wake = asyncio.Event()
        self.timer_fired = asyncio.Event()
        self.asleep = False  # the sender sets ``wake`` only when this is True
        self.stopped = False
        # A message sent while the writer sleeps and the socket is idle is written on the
        # sender's own turn (send_turn): one event-loop wakeup fewer per message on an
        # idle link. At most once per loop turn, so that a burst of sends is still
        # batched by the writer into few socket writes.
        self._wrote_this_turn = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []

    def stop(self, error: Callable[[], CometP2PError]) -> None:
        """Stop writing: cancel the timer, wake every waiter, fail pending flushes.

        Args:
            error: makes the error each pending :meth:`flushed` raises.
        """
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wake.set()
        self.timer_fired.set()
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_exception(error())
        self._flush_waiters.clear()

    async def flushed(self) -> None:
        """Wait until every message queued so far has been handed to the socket.

        Raises:
            CometP2PError: the error :meth:`stop` makes, if the connection ends first.
        """
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._flush_waiters.append(waiter)
        self.wake.set()
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._flush_waiters.remove(waiter)

    def sent(self) -> None:
        """A message was queued while the writer sleeps: write it now or wake the writer."""
        if not self._wrote_this_turn and self._write_now():
            return
        self.asleep = False
        self.wake.set()

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
                self.timer_fired.set()
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
        if self.stopped or core.more_to_send() or core.has_pending_data():
            return False
        self._arm_timer(core.get_timer())
        return True

    def _next_turn(self) -> None:
        self._wrote_this_turn = False

    async def run(self) -> None:
        """The writer task: write, then sleep on ``wake`` until the core has more."""
        await run_io_task(self._run, "write", self._terminate)

    async def _run(self) -> None:
        core = self._core
        loop = self._loop
        secret = self._secret
        dispatch = self._dispatch
        wake = self.wake
        while not self.stopped:
            now = loop.time()
            deadline = core.get_timer()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
                self.timer_fired.set()  # a reader waiting for the receive rate looks again
            data = core.data_to_send(now)
            dispatch()
            if self.stopped:
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
                await self._settle_flushes()
                continue  # sends during the drain did not wake us: look again
            self._arm_timer(core.get_timer())
            self.asleep = True
            try:
                await wake.wait()
            finally:
                self.asleep = False

    async def _settle_flushes(self) -> None:
        await self._secret.drain()
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._flush_waiters.clear()

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
        self.wake.set()
        self.timer_fired.set()
