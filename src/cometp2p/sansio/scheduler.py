"""The send side of one MConnection: channel send queues, the scheduler, PacketMsg output.

Implements wire.md §8.3 (chunking) and §8.4 (scheduling) for
:class:`~cometp2p.sansio.mconnection.MConnection`, which owns one :class:`SendScheduler`
and re-exports its :meth:`SendScheduler.send` as ``MConnection.send``. No IO and no
clock: every method that needs the time takes ``now`` (float seconds, monotonic).

* Scheduling is Go's rule (the pending channel with the smallest
  ``recently_sent / priority`` goes next, ties to the channel declared first), applied
  per *run*: the chosen channel emits packets until its ratio passes the runner-up's,
  which yields exactly the packet order of per-packet selection at a fraction of the
  cost. ``recently_sent`` counts delimited packet bytes and decays every
  ``stats_decay_period_s`` to ``floor(x * 0.8)``.
* Each channel's sender refill is a three-state table (``_REFILL_IDLE`` /
  ``_REFILL_BLOCKED`` / ``_REFILL_ANNOUNCED``), the flush throttle a small machine
  (:class:`_FlushThrottle`), the send rate a
  :class:`~cometp2p.sansio.flowrate.RateLimiter`.
* On channel ids >= 0x80 the chunk size is reduced by one byte where needed so every
  packet fits the receiver's limit (wire.md §8.3).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from cometp2p.errors import LocalProtocolError
from cometp2p.sansio.flowrate import RateLimiter
from cometp2p.sansio.mconnection_config import ChannelDescriptor, MConnectionConfig
from cometp2p.sansio.mconnection_events import Event, SendQueueReady
from cometp2p.wire.packet import max_packet_msg_size, packet_msg_body_size, packet_msg_header

__all__ = ["SendScheduler"]

_DECAY_FACTOR: Final = 0.8
_MAX_DECAY_STEPS: Final = 200  # 0.8**200 * 2**63 < 1: more steps change nothing

# Refill state of one channel's sender (a small transition table, one int per channel):
#   IDLE      --send() refused: queue full-->              BLOCKED
#   BLOCKED   --a message leaves the queue (SendQueueReady)--> ANNOUNCED
#   ANNOUNCED --the scheduler's run of that channel ends-->    IDLE
# ANNOUNCED lives only inside one _schedule() call: if the channel then has nothing left,
# the batch ends and the scheduler's refill_wait is set (until the next send()) so
# that its sender can refill first.
_REFILL_IDLE: Final = 0
_REFILL_BLOCKED: Final = 1
_REFILL_ANNOUNCED: Final = 2

_Append = Callable[[bytes | memoryview], None]


class _FlushThrottle:
    """When held-back packets must go out (Go's flush throttle).

    States: NOTHING HELD (``deadline`` None) --packets held--> HELD (``deadline`` =
    first hold + ``throttle_s``) --flush--> NOTHING HELD.
    """

    __slots__ = ("deadline", "throttle_s")

    def __init__(self, throttle_s: float) -> None:
        self.throttle_s = throttle_s
        self.deadline: float | None = None

    def expired(self, now: float) -> bool:
        """Whether held packets must go out at ``now`` (no throttle, or its time came)."""
        return self.throttle_s <= 0 or (self.deadline is not None and now >= self.deadline)

    def hold(self, now: float) -> None:
        """Packets are held back; the first hold starts the throttle."""
        if self.deadline is None:
            self.deadline = now + self.throttle_s


class _SendChannel:
    """Send queue, chunker state and scheduling counters of one channel."""

    __slots__ = (
        "bytes_sent",
        "capacity",
        "chunk",
        "eof_headers",
        "full_header",
        "full_size",
        "id",
        "index",
        "offset",
        "priority",
        "queue",
        "recently_sent",
        "refill",
        "sending",
    )

    def __init__(self, desc: ChannelDescriptor, index: int, max_payload: int) -> None:
        self.id = desc.id
        self.index = index
        self.priority = desc.priority
        self.capacity = desc.send_queue_capacity
        self.queue: deque[bytes] = deque()
        self.sending: memoryview | None = None  # the message being chunked, if any
        self.offset = 0
        self.recently_sent = 0
        self.refill = _REFILL_IDLE  # see _REFILL_IDLE
        limit = max_packet_msg_size(max_payload)
        chunk = max_payload
        while packet_msg_body_size(desc.id, True, chunk) > limit:
            chunk -= 1
        self.chunk = chunk
        self.full_header = packet_msg_header(desc.id, False, chunk)
        self.full_size = len(self.full_header) + chunk
        self.eof_headers: dict[int, bytes] = {}
        self.bytes_sent = 0


def _not_stopped() -> Exception:  # pragma: no cover - the open table holds every channel
    return LocalProtocolError("internal error: send refused on an open connection")


class SendScheduler:
    """Queues whole messages per channel and turns them into batches of PacketMsgs.

    Args:
        channels: the channels, in priority tie-break order (ids already unique).
        config: the connection's tunables (payload size, batch size, throttle, rate).
        now: the creation time (s); the first decay of ``recently_sent`` is due
            ``stats_decay_period_s`` later.
        events: the connection's event queue; :class:`SendQueueReady` goes there.

    Attributes:
        channels: per-channel send state, in declaration order.
        by_id: channel byte -> its send state.
        pending: how many channels hold a queued or partly sent message.
        refill_wait: the last batch ended so that a refilling sender goes first (until
            the next :meth:`send`).
        flush: the flush throttle of held-back packets.
        limiter: the send rate limiter; ``limited`` is False when the rate is unlimited.
        batch_bytes: ``write_batch_bytes``; ``out_bytes`` is what is held back of it.
        bytes_sent: every byte handed out by :meth:`produce`, framing included.
        next_decay_at: when ``recently_sent`` decays next (s).
    """

    __slots__ = (
        "_decay_period",
        "_ended",
        "_events",
        "_open",
        "_out",
        "batch_bytes",
        "by_id",
        "bytes_sent",
        "channels",
        "flush",
        "limited",
        "limiter",
        "next_decay_at",
        "out_bytes",
        "pending",
        "refill_wait",
    )

    def __init__(
        self,
        channels: Sequence[ChannelDescriptor],
        config: MConnectionConfig,
        now: float,
        events: deque[Event],
    ) -> None:
        payload = config.max_packet_msg_payload_bytes
        self.channels: tuple[_SendChannel, ...] = tuple(
            _SendChannel(desc, i, payload) for i, desc in enumerate(channels)
        )
        self.by_id: dict[int, _SendChannel] = {ch.id: ch for ch in self.channels}
        self._open = dict(self.by_id)  # emptied by stop(): send() then refuses every id
        self._ended: Callable[[], Exception] = _not_stopped
        self._events = events
        self.pending = 0  # channels with a queued or partly sent message
        self._out: list[bytes | memoryview] = []
        self.out_bytes = 0
        self.batch_bytes = config.write_batch_bytes
        self.flush = _FlushThrottle(config.flush_throttle_s)
        self.refill_wait = False  # the last batch ended for a refilling sender (above)
        self.limiter = RateLimiter(
            config.send_rate_bytes_per_s,
            now,
            max(1, round(config.send_rate_bytes_per_s * config.rate_burst_s)),
        )
        self.limited = config.send_rate_bytes_per_s > 0
        self.bytes_sent = 0
        self.next_decay_at = now + config.stats_decay_period_s
        self._decay_period = config.stats_decay_period_s

    # ------------------------------------------------------------------ commands

    def send(self, channel_id: int, message: bytes | bytearray | memoryview) -> bool:
        """Queue a whole message on a channel if its queue has room (Go's ``TrySend``).

        Never blocks and never produces bytes by itself: call
        :meth:`MConnection.data_to_send <cometp2p.sansio.mconnection.MConnection.data_to_send>`.

        Args:
            channel_id: a declared channel byte.
            message: the message bytes (any length; chunked on the wire). A bytearray
                or memoryview is copied, so later changes to it are not sent.

        Returns:
            ``True`` if queued; ``False`` if the channel already holds
            ``send_queue_capacity`` messages, in which case a :class:`SendQueueReady`
            event follows once one leaves the queue.

        Raises:
            LocalProtocolError: the channel was not declared, or ``message`` is not
                bytes-like.
            ConnectionClosedError: we closed the connection.
            ConnectionBrokenError: the peer closed it or broke the protocol.
        """
        ch = self._open.get(channel_id)
        if ch is None:
            raise self.refusal(channel_id)
        queue = ch.queue
        if len(queue) >= ch.capacity:
            ch.refill = _REFILL_BLOCKED
            return False
        if message.__class__ is not bytes:
            message = _as_bytes(message)
        if not queue and ch.sending is None:
            self.pending += 1
        queue.append(message)
        self.refill_wait = False
        return True

    def refusal(self, channel_id: int) -> Exception:
        """The error for a command on an undeclared channel or after :meth:`stop`."""
        if channel_id not in self.by_id:
            declared = ", ".join(f"{ch.id:#04x}" for ch in self.channels) or "none"
            return LocalProtocolError(
                f"channel {channel_id!r} is not declared on this connection (declared: {declared})"
            )
        return self._ended()

    def stop(self, ended: Callable[[], Exception]) -> None:
        """The connection is over: drop all queued and held data; refuse sends with ``ended()``."""
        self._open = {}
        self._ended = ended
        for ch in self.channels:
            ch.queue.clear()
            ch.sending = None
        self._out.clear()
        self.out_bytes = 0
        self.pending = 0
        self.flush.deadline = None

    # ------------------------------------------------------------------ timers

    def deadline(self, deadline: float) -> float:
        """The earlier of ``deadline`` and this side's: the held-data flush, the send rate."""
        flush_at = self.flush.deadline
        if flush_at is not None and flush_at < deadline:
            deadline = flush_at
        if self.pending and self.limited:
            want = min(self.batch_bytes - self.out_bytes, self.limiter.burst_bytes)
            ready = self.limiter.ready_at(want)
            if ready < deadline:
                deadline = ready
        return deadline

    def decay(self, now: float) -> None:
        """Decay every channel's ``recently_sent`` for the periods passed by ``now``."""
        period = self._decay_period
        steps = int((now - self.next_decay_at) / period) + 1
        self.next_decay_at += steps * period
        for ch in self.channels:
            rs = ch.recently_sent
            for _ in range(min(steps, _MAX_DECAY_STEPS)):
                if not rs:
                    break
                rs = int(rs * _DECAY_FACTOR)  # Go: int64(float64(x) * 0.8)
            ch.recently_sent = rs

    # ------------------------------------------------------------------ output

    def produce(self, now: float, head: bytes) -> bytes:
        """The next write: ``head`` (due Pong/Ping frames), then scheduled PacketMsgs.

        Within the send rate and ``write_batch_bytes``; ``b""`` while packets are held
        for the flush throttle (then :meth:`deadline` says when they go).
        """
        if now >= self.next_decay_at:
            self.decay(now)
        out = self._out
        if self.pending:
            budget = self.batch_bytes - self.out_bytes
            if self.limited:
                allowed = self.limiter.available(now)
                if allowed < budget:
                    budget = allowed
            if budget > 0:
                emitted = self._schedule(out, budget)
                self.out_bytes += emitted
                if self.limited:
                    self.limiter.consume(emitted)
        if not out:
            if head:
                self.bytes_sent += len(head)
            return head
        flush = self.flush
        if not (
            head or not self.pending or self.out_bytes >= self.batch_bytes or flush.expired(now)
        ):
            # More to come (the rate is spent, or a waiting sender is about to refill):
            # hold the packets back for a bigger write, as Go's flush throttle does.
            flush.hold(now)
            return b""
        if head:
            out.insert(0, head)
        data = b"".join(out)
        out.clear()
        self.out_bytes = 0
        flush.deadline = None
        self.bytes_sent += len(data)
        return data

    def _schedule(self, out: list[bytes | memoryview], budget: int) -> int:
        """Append PacketMsgs to ``out`` until ``budget`` bytes or the queues run dry."""
        append = out.append
        channels = self.channels
        emitted = 0
        self.refill_wait = False
        while emitted < budget:
            # Go's selectChannelToGossipOn, plus the runner-up that bounds this run.
            best: _SendChannel | None = None
            second: _SendChannel | None = None
            for ch in channels:
                if ch.sending is None and not ch.queue:
                    continue
                if best is None:
                    best = ch
                elif ch.recently_sent * best.priority < best.recently_sent * ch.priority:
                    second = best
                    best = ch
                elif second is None or (
                    ch.recently_sent * second.priority < second.recently_sent * ch.priority
                ):
                    second = ch
            if best is None:
                break
            if second is None:
                max_rs = 1 << 62
            else:
                # best keeps the turn while rs/prio < second's (<= if declared first).
                bound = second.recently_sent * best.priority
                if best.index > second.index:
                    bound -= 1
                max_rs = bound // second.priority
            emitted += self._emit(best, append, budget - emitted, max_rs)
            if best.refill == _REFILL_ANNOUNCED:
                best.refill = _REFILL_IDLE
                if best.sending is None and not best.queue and self.pending:
                    # Its sender is waiting to refill: end the batch rather than hand
                    # its share to the other channels (fairness under saturation).
                    self.refill_wait = True
                    break
        return emitted

    def _emit(self, ch: _SendChannel, append: _Append, budget: int, max_rs: int) -> int:
        """Emit packets of one channel until it loses the turn, the budget or its data."""
        queue, sending, offset, chunk = ch.queue, ch.sending, ch.offset, ch.chunk
        headers = ch.eof_headers
        rs = ch.recently_sent
        emitted = data_bytes = 0
        while True:
            if sending is None:
                if not queue:
                    break
                message = queue.popleft()
                if ch.refill and ch.refill == _REFILL_BLOCKED:  # IDLE (0) costs one test
                    ch.refill = _REFILL_ANNOUNCED
                    self._events.append(SendQueueReady(ch.id))
                size = len(message)
                if size <= chunk:  # one packet: no memoryview, no slicing
                    header = headers.get(size)
                    if header is None:
                        header = headers[size] = packet_msg_header(ch.id, True, size)
                    append(header)
                    if size:
                        append(message)
                    data_bytes += size
                    size += len(header)
                    rs += size
                    emitted += size
                    if rs > max_rs or emitted >= budget:
                        break
                    continue
                sending = memoryview(message)
                offset = 0
            left = len(sending) - offset
            if left > chunk:
                end = offset + chunk
                append(ch.full_header)
                append(sending[offset:end])
                offset = end
                data_bytes += chunk
                size = ch.full_size
            else:
                header = headers.get(left)
                if header is None:
                    header = headers[left] = packet_msg_header(ch.id, True, left)
                append(header)
                append(sending[offset:])
                sending = None
                data_bytes += left
                size = len(header) + left
            rs += size
            emitted += size
            if rs > max_rs or emitted >= budget:
                break
        ch.sending, ch.offset, ch.recently_sent = sending, offset, rs
        ch.bytes_sent += data_bytes
        if sending is None and not queue:
            self.pending -= 1
        return emitted


def _as_bytes(message: object) -> bytes:
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise LocalProtocolError(f"a message must be bytes, got {type(message).__name__}")
