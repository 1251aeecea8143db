"""Ping/Pong liveness of one MConnection, as one small state machine (wire.md §8.5).

States, per direction:

* ours: ``IDLE --next_ping_at--> PING_DUE --frames()--> AWAIT_PONG --Pong--> IDLE``; in
  AWAIT_PONG, reaching ``pong_deadline`` (not counting time while *paused*) is a pong
  timeout. Pings tick every ``interval_s`` whatever the state (Go's ticker).
* theirs: a Ping makes a Pong due; however many Pings arrive before the next write, one
  Pong answers them.

Only real deadlines come out of :meth:`Liveness.deadline`: a due Ping or Pong is
reported by :attr:`Liveness.due` (the owner's ``has_pending_data``), never as a time in
the past. No IO, no clock: every method takes ``now`` (float seconds, monotonic).
"""

from __future__ import annotations

from typing import Final

from cometp2p.wire.packet import PING_FRAME, PONG_FRAME

__all__ = ["Liveness"]

_PONG_AND_PING: Final = PONG_FRAME + PING_FRAME


class Liveness:
    """Our Pings, the peer's Pongs and the Pongs we owe.

    Args:
        now: the creation time (s); the first Ping is due ``interval_s`` later.
        interval_s: seconds between our Pings.
        timeout_s: seconds a Pong may take after our Ping (< ``interval_s``).

    Attributes:
        next_ping_at: when the next Ping becomes due (s).
        ping_due: a Ping is to be sent.
        pong_due: the peer sent a Ping we have not answered yet.
        pong_deadline: the pong timeout of the Ping in flight, or ``None``.
    """

    __slots__ = (
        "interval_s",
        "next_ping_at",
        "paused_at",
        "ping_due",
        "ping_sent_at",
        "pong_deadline",
        "pong_due",
        "timeout_s",
    )

    def __init__(self, now: float, interval_s: float, timeout_s: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.next_ping_at = now + interval_s
        self.ping_due = False
        self.pong_due = False
        self.pong_deadline: float | None = None
        self.ping_sent_at = now
        self.paused_at: float | None = None

    @property
    def due(self) -> bool:
        """A Ping or a Pong waits to be written (ask :meth:`frames` now)."""
        return self.ping_due or self.pong_due

    def deadline(self) -> float | None:
        """The next real deadline: the next Ping, or an earlier running pong timeout."""
        deadline = self.next_ping_at
        pong = self.pong_deadline
        if pong is not None and pong < deadline and self.paused_at is None:
            return pong
        return deadline

    def on_timer(self, now: float) -> bool:
        """Advance to ``now``; True if the pong timeout has passed (the peer is dead)."""
        pong = self.pong_deadline
        if pong is not None and now >= pong and self.paused_at is None:
            return True
        if now >= self.next_ping_at:
            self.ping_due = True
            # A ticker: keep the cadence, skip ticks missed while we were not called.
            missed = int((now - self.next_ping_at) / self.interval_s)
            self.next_ping_at += (missed + 1) * self.interval_s
        return False

    def frames(self, now: float) -> bytes:
        """The due Pong and/or Ping as delimited frames (Pong first); starts the timeout."""
        if self.ping_due:
            self.ping_due = False
            self.pong_deadline = now + self.timeout_s
            self.ping_sent_at = now
            if self.pong_due:
                self.pong_due = False
                return _PONG_AND_PING
            return PING_FRAME
        if self.pong_due:
            self.pong_due = False
            return PONG_FRAME
        return b""

    def got_pong(self) -> None:
        """Any Pong proves the peer alive, whichever Ping it answers."""
        self.pong_deadline = None

    def pause(self, now: float) -> None:
        """Stop the pong-timeout clock (the owner does not read). Idempotent."""
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        """Restart the clock: the time paused since the Ping went out extends the deadline."""
        paused_at = self.paused_at
        if paused_at is None:
            return
        self.paused_at = None
        if self.pong_deadline is not None:
            self.pong_deadline += max(0.0, now - max(paused_at, self.ping_sent_at))

    def stop(self) -> None:
        """The connection is over: nothing is due and no timeout runs."""
        self.ping_due = self.pong_due = False
        self.pong_deadline = None
