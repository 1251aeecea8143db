"""Pump two sans-IO endpoints against each other in memory, with a fake clock.

For tests and benchmarks of :class:`~cometp2p.sansio.mconnection.MConnection` (or any
object with the same vocabulary, see ``style.md``): bytes produced by one side's
``data_to_send(now)`` are fed to the other's ``receive_data``, optionally cut into
arbitrary pieces, until neither has anything to send; timers are run by advancing a
fake clock to the earliest ``get_timer()``. Nothing sleeps and nothing reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["Endpoint", "Pumped", "pump", "run_until"]


class Endpoint(Protocol):
    """The sans-IO vocabulary :func:`pump` drives (events are kept as they come)."""

    def receive_data(self, data: bytes) -> None: ...

    def data_to_send(self, now: float) -> bytes: ...

    def next_event(self) -> object | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


Splitter = Callable[[bytes], Iterable[bytes]]
"""Cuts one write into the pieces the reader sees (simulates TCP segmentation)."""


class Pumped:
    """What :func:`pump` and :func:`run_until` observed.

    Attributes:
        a_events: events drained from ``a``, in order.
        b_events: events drained from ``b``, in order.
        a_to_b: every byte string ``a`` produced, in order (before splitting).
        b_to_a: every byte string ``b`` produced, in order (before splitting).
        now: the fake clock when the helper returned, in seconds.
    """

    __slots__ = ("a_events", "a_to_b", "b_events", "b_to_a", "now")

    def __init__(self, now: float) -> None:
        self.a_events: list[object] = []
        self.b_events: list[object] = []
        self.a_to_b: list[bytes] = []
        self.b_to_a: list[bytes] = []
        self.now = now

    @property
    def bytes_a_to_b(self) -> int:
        """Total bytes ``a`` sent."""
        return sum(map(len, self.a_to_b))

    @property
    def bytes_b_to_a(self) -> int:
        """Total bytes ``b`` sent."""
        return sum(map(len, self.b_to_a))


def _drain(endpoint: Endpoint, into: list[object]) -> None:
    while (event := endpoint.next_event()) is not None:
        into.append(event)


def _deliver(data: bytes, to: Endpoint, split: Splitter | None) -> None:
    if split is None:
        to.receive_data(data)
        return
    for piece in split(data):
        if piece:
            to.receive_data(piece)


def pump(
    a: Endpoint,
    b: Endpoint,
    now: float,
    *,
    split: Splitter | None = None,
    max_rounds: int = 100_000,
    result: Pumped | None = None,
) -> Pumped:
    """Exchange bytes between ``a`` and ``b`` at a fixed ``now`` until both are quiet.

    Errors raised by ``receive_data`` propagate (the events drained so far are in
    ``result`` when one is passed in).

    Args:
        a: one endpoint.
        b: the other endpoint.
        now: the fake time in seconds passed to ``data_to_send``.
        split: optional cutter of each write into the pieces the reader receives.
        max_rounds: bound on the exchange; exceeding it raises ``RuntimeError``.
        result: an accumulator to extend instead of a fresh one.

    Returns:
        The events each side produced and the bytes each side sent.

    Raises:
        RuntimeError: still exchanging bytes after ``max_rounds`` rounds.
    """
    out = result if result is not None else Pumped(now)
    out.now = now
    for _ in range(max_rounds):
        moved = False
        data = a.data_to_send(now)
        _drain(a, out.a_events)
        if data:
            moved = True
            out.a_to_b.append(data)
            _deliver(data, b, split)
            _drain(b, out.b_events)
        data = b.data_to_send(now)
        _drain(b, out.b_events)
        if data:
            moved = True
            out.b_to_a.append(data)
            _deliver(data, a, split)
            _drain(a, out.a_events)
        if not moved:
            return out
    raise RuntimeError(f"endpoints still exchanging bytes after {max_rounds} rounds")


def run_until(
    a: Endpoint,
    b: Endpoint,
    now: float,
    until: float,
    *,
    split: Splitter | None = None,
    stop: Callable[[Pumped], bool] | None = None,
    max_steps: int = 1_000_000,
) -> Pumped:
    """Pump, then jump the fake clock from timer to timer, up to time ``until``.

    Args:
        a: one endpoint.
        b: the other endpoint.
        now: the fake start time in seconds.
        until: the last time (seconds) to reach; the clock ends at ``until`` unless
            ``stop`` returned true earlier.
        split: as for :func:`pump`.
        stop: called after each step with the accumulated result; true ends the run.
        max_steps: bound on timer steps; exceeding it raises ``RuntimeError``.

    Returns:
        The accumulated events and bytes; ``now`` is the fake time reached.

    Raises:
        RuntimeError: more than ``max_steps`` timer steps (a timer that never advances).
    """
    out = Pumped(now)
    pump(a, b, now, split=split, result=out)
    for _ in range(max_steps):
        if stop is not None and stop(out):
            return out
        timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
        nxt = min(timers, default=until)
        if nxt > until:
            out.now = until
            return out
        now = max(now, nxt)
        a.handle_timer(now)
        b.handle_timer(now)
        pump(a, b, now, split=split, result=out)
        if not timers and now >= until:
            return out
    raise RuntimeError(f"timers still firing after {max_steps} steps")
