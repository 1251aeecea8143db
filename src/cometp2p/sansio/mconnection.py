"""The sans-IO MConnection: channels, scheduling, chunking, ping/pong and rate limits.

Implements wire.md §8 (MConnection) over the decrypted byte stream of a
SecretConnection, with the Packet codec of §4.3 / §5.1. No IO and no clock: the driver
passes ``now`` (float seconds, monotonic) and moves bytes.

Vocabulary (see ``style.md``): :meth:`MConnection.receive_data` (``b""`` = EOF),
:meth:`MConnection.next_event`, :meth:`MConnection.data_to_send`,
:meth:`MConnection.get_timer`, :meth:`MConnection.handle_timer`; commands
:meth:`MConnection.send`, :meth:`MConnection.can_send`, :meth:`MConnection.close`.

A driver is expected to:

* read decrypted bytes (no more than :meth:`MConnection.recv_allowance` when it is
  finite; when it is 0, wait for the timer, which then covers the moment reading may
  resume) and pass them to ``receive_data``;
* call ``data_to_send(now)`` while :meth:`MConnection.has_pending_data` is true (after
  ``send``, ``receive_data`` and ``handle_timer``), writing each result in order; after
  a write, yield to its loop once and write again while
  :meth:`MConnection.more_to_send` is true;
* keep one timer armed at ``get_timer()`` (only real deadlines) and call
  ``handle_timer(now)`` then ``data_to_send(now)`` when it fires;
* drain ``next_event()`` (or :meth:`MConnection.drain_events`) after every call:
  :class:`MessageReceived` goes to the channel's reactor, :class:`SendQueueReady` wakes
  a sender that got ``False`` from ``send``, :class:`ConnectionTerminated` ends the
  connection;
* bracket any pause in reading (its own back-pressure) with
  :meth:`MConnection.pause_pong_timeout` / :meth:`MConnection.resume_pong_timeout`.

The work is split into parts with one job each, which this facade owns and wires
together: the settings (:mod:`~cometp2p.sansio.mconnection_config`), the events and
status types (:mod:`~cometp2p.sansio.mconnection_events`), the send side - queues,
scheduler, chunking, flush throttle, send rate (:mod:`~cometp2p.sansio.scheduler`) - the
receive side - Packet parsing, reassembly, receive limits
(:mod:`~cometp2p.sansio.receiver`) - and ping/pong liveness
(:mod:`~cometp2p.sansio.liveness`). Every public name is importable from here.

Behaviour follows CometBFT v0.38 ``p2p/conn/connection.go`` with these deliberate
choices (all invisible on the wire except the last):

* Scheduling is Go's rule (the pending channel with the smallest
  ``recently_sent / priority`` goes next, ties to the channel declared first), applied
  per *run* (see :mod:`~cometp2p.sansio.scheduler`).
* Flushing: ping and pong go out at once (with anything buffered); data goes out at
  once when the send queues run dry (an idle link sees no throttle latency) or a write
  batch (``write_batch_bytes``) is full. Otherwise (the send rate is exhausted, or the
  batch ended early so that a sender waiting on :class:`SendQueueReady` can refill
  before other channels take its share) packets are held and go out at the latest
  ``flush_throttle_s`` after they were produced, like Go's flush throttle.
* On channel ids >= 0x80 the chunk size is reduced by one byte where needed so every
  packet fits the receiver's limit (wire.md §8.3: a full 1024-byte chunk there would be
  1035 bytes and a Go peer would refuse it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from cometp2p.errors import (
    CometP2PError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LocalProtocolError,
    PeerClosedError,
    RemoteProtocolError,
)
from cometp2p.sansio.failure import as_failure, raise_again
from cometp2p.sansio.flowrate import UNLIMITED
from cometp2p.sansio.liveness import Liveness
from cometp2p.sansio.mconnection_config import (
    DEFAULT_RECV_MESSAGE_CAPACITY,
    ChannelDescriptor,
    MConnectionConfig,
    recv_payload_limit,
)
from cometp2p.sansio.mconnection_events import (
    ChannelStatus,
    ConnectionTerminated,
    Event,
    MConnectionState,
    MConnectionStatus,
    MessageReceived,
    SendQueueReady,
)
from cometp2p.sansio.receiver import PacketReceiver
from cometp2p.sansio.scheduler import SendScheduler

__all__ = [
    "DEFAULT_RECV_MESSAGE_CAPACITY",
    "UNLIMITED",
    "ChannelDescriptor",
    "ChannelStatus",
    "ConnectionTerminated",
    "Event",
    "MConnection",
    "MConnectionConfig",
    "MConnectionState",
    "MConnectionStatus",
    "MessageReceived",
    "SendQueueReady",
    "recv_payload_limit",
]

_OPEN: Final = MConnectionState.OPEN


def _ended_error(state: MConnectionState, error: CometP2PError | None) -> Exception:
    """The error for a command after the connection ended in ``state`` (fresh each time)."""
    if state is MConnectionState.CLOSED:
        return ConnectionClosedError("the MConnection was closed by us")
    if state is MConnectionState.PEER_CLOSED:
        return PeerClosedError("the peer closed the connection")
    broken = ConnectionBrokenError(f"the connection failed: {error}")
    broken.__cause__ = error
    return broken


class MConnection:
    """Multiplexes messages on prioritised channels over one decrypted byte stream.

    Args:
        channels: the channels we accept and send on, in priority tie-break order.
        config: the tunables.
        now: the creation time in seconds (monotonic); the first Ping is due
            ``ping_interval_s`` later.

    Raises:
        LocalProtocolError: two channels share an id.
    """

    send: Callable[[int, bytes | bytearray | memoryview], bool]
    """Queue a whole message on a channel if its queue has room (Go's ``TrySend``).

    ``send(channel_id, message) -> bool``: :meth:`SendScheduler.send
    <cometp2p.sansio.scheduler.SendScheduler.send>` of this connection, bound per
    instance so that the per-message command costs no extra call. Never blocks and
    never produces bytes by itself: call :meth:`data_to_send`. Returns ``False`` if the
    channel's queue is full (a :class:`SendQueueReady` follows once it has room).

    Raises:
        LocalProtocolError: the channel was not declared, or ``message`` is not
            bytes-like.
        ConnectionClosedError: we closed the connection.
        ConnectionBrokenError: the peer closed it or broke the protocol.
    """

    def __init__(
        self, channels: Sequence[ChannelDescriptor], config: MConnectionConfig, now: float
    ) -> None:
        seen: set[int] = set()
        for desc in channels:
            if desc.id in seen:
                raise LocalProtocolError(f"channel {desc.id:#04x} declared twice")
            seen.add(desc.id)
        self.config = config
        self._created = now
        self._state = _OPEN
        self._error: CometP2PError | None = None
        self._events: deque[Event] = deque()
        self._liveness = Liveness(now, config.ping_interval_s, config.pong_timeout_s)
        self._tx = SendScheduler(channels, config, now, self._events)
        self._rx = PacketReceiver(channels, config, now, self._events, self._liveness)
        self.send = self._tx.send

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> MConnectionState:
        """The lifecycle state."""
        return self._state

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """The declared channel ids, in declaration order."""
        return tuple(ch.id for ch in self._tx.channels)

    # ------------------------------------------------------------------ commands

    def can_send(self, channel_id: int) -> bool:
        """Whether :meth:`send` on this channel would queue the message now.

        Raises:
            LocalProtocolError: the channel was not declared.
        """
        tx = self._tx
        ch = tx.by_id.get(channel_id)
        if ch is None:
            raise tx.refusal(channel_id)
        return self._state is _OPEN and len(ch.queue) < ch.capacity

    def close(self) -> None:
        """Close the connection from our side: queued and unflushed data is dropped.

        Queues :class:`ConnectionTerminated` ``(None, by_peer=False)`` if the connection
        was open; idempotent. The driver then closes the transport.
        """
        if self._state is _OPEN:
            self._terminate(MConnectionState.CLOSED, None, by_peer=False)

    def _terminate(
        self, state: MConnectionState, error: CometP2PError | None, by_peer: bool
    ) -> None:
        self._state = state
        self._error = error
        self._events.append(ConnectionTerminated(error, by_peer))
        self._tx.stop(partial(_ended_error, state, error))
        self._rx.stop()
        self._liveness.stop()

    def _fail(self, error: CometP2PError) -> CometP2PError:
        by_peer = isinstance(error, RemoteProtocolError)
        self._terminate(MConnectionState.FAILED, error, by_peer=by_peer)
        return error

    def _crash(self, exc: Exception) -> CometP2PError:
        """Fail on an exception that escaped an input method (sansio.failure's rule)."""
        error = as_failure(exc)
        if self._state is _OPEN:
            self._fail(error)
        return error

    # ------------------------------------------------------------------ events

    def next_event(self) -> Event | None:
        """Pop the next event, or ``None`` when there is none."""
        events = self._events
        return events.popleft() if events else None

    def drain_events(self) -> list[Event]:
        """Pop every pending event at once (cheaper than looping on :meth:`next_event`)."""
        events = list(self._events)
        self._events.clear()
        return events

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The next absolute time (seconds) :meth:`handle_timer` must be called, or None.

        Only real deadlines: the next Ping, the pong timeout, the flush of held-back
        data, the moment the send rate lets queued data move again and, while the
        driver waits for the receive rate (:meth:`recv_allowance` returned 0), the
        moment it may read again. Work that is due already (a Ping or Pong to write) is
        reported by :meth:`has_pending_data`, never as a time in the past.
        """
        if self._state is not _OPEN:
            return None
        deadline = self._liveness.deadline()
        assert deadline is not None
        return self._rx.deadline(self._tx.deadline(deadline))

    def has_pending_data(self) -> bool:
        """Whether :meth:`data_to_send` should be called now rather than at the timer.

        True when a Ping or Pong is due, or messages are queued and the send rate had
        room at the last ``data_to_send`` - unless the last batch ended so that a
        sender waiting on :class:`SendQueueReady` can refill and no :meth:`send` came
        since. Packets held for the flush throttle and a send rate that is exhausted
        are covered by :meth:`get_timer` instead. Needs no clock.
        """
        if self._state is not _OPEN:
            return False
        if self._liveness.due:
            return True
        tx = self._tx
        return tx.pending > 0 and not tx.refill_wait and not tx.limiter.exhausted

    def more_to_send(self) -> bool:
        """Whether a driver that just wrote a batch should yield once, then write again.

        True when :meth:`has_pending_data` is, and also while messages stay queued
        after a batch that ended so that a sender woken by :class:`SendQueueReady` could
        refill: once the driver has let that sender run (one turn of its loop), the
        next :meth:`data_to_send` goes on even if it never refills (with no flush
        throttle and no send rate there is no timer to bring the driver back).
        Needs no clock.
        """
        return self._state is _OPEN and (self._tx.pending > 0 or self._liveness.due)

    def has_queued_messages(self) -> bool:
        """Whether any channel still holds a queued or partly sent message."""
        return self._state is _OPEN and self._tx.pending > 0

    def pause_pong_timeout(self, now: float) -> None:
        """Stop the pong-timeout clock while the driver does not read (back-pressure).

        A Pong we do not read cannot cancel the timeout, so our own slowness must not
        count against the peer. Pings keep going out. Idempotent.
        """
        self._liveness.pause(now)

    def resume_pong_timeout(self, now: float) -> None:
        """Restart the pong-timeout clock: the paused time is added to the deadline."""
        self._liveness.resume(now)

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``: schedule a Ping, or fail on a pong timeout.

        Follow with :meth:`data_to_send` ``(now)``. Calling it early is harmless.

        Raises:
            CometP2PError: the connection FAILED earlier: that same error again.
        """
        if self._state is not _OPEN:
            if self._error is not None:
                raise_again(self._error)
            return
        try:
            if self._liveness.on_timer(now):  # FAILED, but not raised: the peer is at fault
                timeout = self.config.pong_timeout_s
                self._fail(
                    RemoteProtocolError(f"pong timeout: no Pong within {timeout} s of our Ping")
                )
                return
            self._rx.on_timer(now)
        except Exception as exc:
            error = self._crash(exc)
            if error is exc:
                raise
            raise error from exc

    # ------------------------------------------------------------------ sending

    def data_to_send(self, now: float) -> bytes:
        """Bytes to write to the SecretConnection now (``b""`` when nothing is due).

        Produces Ping/Pong first, then PacketMsgs chosen by the scheduler, as one bytes
        object of many delimited packets, within the send rate and
        ``write_batch_bytes``. Call again until it returns ``b""`` (always, once the
        connection is over).
        """
        if self._state is not _OPEN:
            return b""
        try:
            liveness = self._liveness
            return self._tx.produce(now, liveness.frames(now) if liveness.due else b"")
        except Exception as exc:
            error = self._crash(exc)
            if error is exc:
                raise
            raise error from exc

    # ------------------------------------------------------------------ receiving

    def recv_allowance(self, now: float) -> int:
        """Bytes the driver may read and pass to :meth:`receive_data` now.

        :data:`UNLIMITED` when ``recv_rate`` is 0; 0 means wait until
        :meth:`recv_resume_at`. A read may return more than this (a whole
        SecretConnection frame, say): the excess is debt that delays the next read, so
        the long-run rate holds. 0 once the connection is over.
        """
        if self._state is not _OPEN:
            return 0
        return self._rx.allowance(now)

    def recv_resume_at(self) -> float:
        """The earliest time (seconds) at which :meth:`recv_allowance` is > 0 again.

        A driver need not arm a timer of its own for it: while it waits (after
        :meth:`recv_allowance` returned 0) :meth:`get_timer` includes this time.
        """
        return self._rx.limiter.ready_at(1)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed decrypted bytes from the SecretConnection; ``b""`` means EOF.

        Produces :class:`MessageReceived` events (and answers Pings) however the stream
        is split. Data arriving after the connection ended is ignored.

        Raises:
            RemoteProtocolError: the peer sent an oversize, malformed or empty Packet, a
                PacketMsg on an undeclared channel, a message beyond the channel's
                ``recv_message_capacity``, or closed the stream mid-packet. The
                connection is then FAILED: messages completed before the bad packet
                stay queued, followed by :class:`ConnectionTerminated` carrying the
                same error, and every later call raises it again.
            LocalProtocolError: an unexpected internal error (wrapped, see
                :mod:`cometp2p.sansio.failure`); the connection is FAILED likewise.
        """
        if self._state is not _OPEN:
            if self._error is not None:
                raise_again(self._error)
            return
        try:
            more = self._rx.receive(data)
        except Exception as exc:  # the failure rule of sansio.failure
            error = self._crash(exc)
            if error is exc:
                raise
            raise error from exc
        if not more:
            self._terminate(MConnectionState.PEER_CLOSED, None, by_peer=True)

    # ------------------------------------------------------------------ status

    def status(self, now: float) -> MConnectionStatus:
        """A snapshot of the connection and per-channel counters at ``now``."""
        tx = self._tx
        rx = self._rx
        if self._state is _OPEN and now >= tx.next_decay_at:
            tx.decay(now)
        return MConnectionStatus(
            state=self._state,
            duration_s=now - self._created,
            bytes_sent=tx.bytes_sent,
            bytes_received=rx.bytes_received,
            channels=tuple(
                ChannelStatus(
                    id=ch.id,
                    priority=ch.priority,
                    send_queue_capacity=ch.capacity,
                    send_queue_size=len(ch.queue) + (ch.sending is not None),
                    recently_sent=ch.recently_sent,
                    bytes_sent=ch.bytes_sent,
                    bytes_received=rx_ch.bytes_received,
                )
                for ch, rx_ch in zip(tx.channels, rx.channels, strict=True)
            ),
        )
