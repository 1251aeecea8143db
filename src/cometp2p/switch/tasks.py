"""Background tasks owned by an :class:`asyncio.TaskGroup` (structured concurrency).

One job: a :class:`TaskSupervisor` runs one ``async with asyncio.TaskGroup()`` in a
supervisor task from :meth:`~TaskSupervisor.open` until :meth:`~TaskSupervisor.close`;
every task it spawns is a child of that group, so closing cancels and awaits them all.
A child's unexpected exception is logged and swallowed, so it never cancels its
siblings. The Switch owns three of them (dials and reconnect loops, the peers' tasks,
the peer removals), closed in that order when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from cometp2p.errors import LocalProtocolError

__all__ = ["TaskSupervisor"]

logger = logging.getLogger("cometp2p.switch.switch")  # the Switch's log, as before the split


class TaskSupervisor:
    """A TaskGroup that lives from :meth:`open` to :meth:`close`.

    Args:
        name: what the tasks are for (in the supervisor's task name and in logs).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._children: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close` (new tasks are accepted)."""
        return self._group is not None and not self._closing

    async def open(self) -> None:
        """Start the supervisor task and wait until its TaskGroup is entered.

        Raises:
            LocalProtocolError: already open.
        """
        if self._supervisor is not None:
            raise LocalProtocolError(f"{self.name} tasks are already open")
        entered = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise(entered), name=f"{self.name}-tg")
        await entered.wait()  # the group is entered on the supervisor's first step

    async def _supervise(self, entered: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                entered.set()
                await asyncio.get_running_loop().create_future()  # until close() cancels
        finally:
            self._group = None

    def spawn(
        self, coro: Coroutine[object, object, None], name: str, *, guarded: bool = True
    ) -> asyncio.Task[None] | None:
        """Run ``coro`` as a child of the group, named ``name``.

        Args:
            coro: the child's coroutine.
            name: the task's name.
            guarded: wrap ``coro`` so an exception escaping it is logged instead of
                cancelling the group. Pass ``False`` only for a coroutine that catches
                every ``Exception`` itself (it saves a coroutine frame per task, which
                matters for the tasks every peer runs).

        Returns:
            The task, or ``None`` when the group is not open (``coro`` is closed unrun).
        """
        group = self._group
        if group is None or self._closing:
            coro.close()
            logger.debug("not starting %s: the %s tasks are not open", name, self.name)
            return None
        task = group.create_task(self._guarded(coro, name) if guarded else coro, name=name)
        self._children.add(task)
        task.add_done_callback(self._children.discard)
        return task

    async def _guarded(self, coro: Coroutine[object, object, None], name: str) -> None:
        try:
            await coro
        except Exception:
            logger.exception("%s task %s failed (the Switch goes on)", self.name, name)

    async def wait_idle(self) -> None:
        """Wait until no child runs (including children started meanwhile)."""
        while pending := [t for t in self._children if not t.done()]:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Cancel the group: every child is cancelled and awaited. Idempotent."""
        supervisor = self._supervisor
        if supervisor is None:
            return
        self._closing = True
        supervisor.cancel()
        try:
            await asyncio.wait({supervisor})
        finally:
            if supervisor.done():
                self._supervisor = None
                self._closing = False
