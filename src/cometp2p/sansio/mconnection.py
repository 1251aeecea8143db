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

Sub-states are explicit: ping/pong liveness is one small machine
(:class:`~cometp2p.sansio.liveness.Liveness`), the flush throttle another
(``_FlushThrottle``), and each channel's sender refill a three-state table
(``_REFILL_IDLE`` / ``_REFILL_BLOCKED`` / ``_REFILL_ANNOUNCED``).

Behaviour follows CometBFT v0.38 ``p2p/conn/connection.go`` with these deliberate
choices (all invisible on the wire except the last):

* Scheduling is Go's rule (the pending channel with the smallest
  ``recently_sent / priority`` goes next, ties to the channel declared first), applied
  per *run*: the chosen channel emits packets until its ratio passes the runner-up's,
  which yields exactly the packet order of per-packet selection at a fraction of the
  cost. ``recently_sent`` counts delimited packet bytes and decays every
  ``stats_decay_period_s`` to ``floor(x * 0.8)``.
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

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cometp2p.errors import (
    CometP2PError,
    ConfigError,
    ConnectionBrokenError,
    ConnectionClosedError,
    LocalProtocolError,
    RemoteProtocolError,
)
from cometp2p.sansio.failure import as_failure, raise_again
from cometp2p.sansio.flowrate import UNLIMITED, RateLimiter
from cometp2p.sansio.liveness import Liveness
from cometp2p.wire.packet import (
    KIND_MSG,
    KIND_PING,
    MAX_CHANNEL_ID,
    max_packet_msg_size,
    packet_msg_body_size,
    packet_msg_header,
    scan_packet,
)
from cometp2p.wire.varint import decode_uvarint

if TYPE_CHECKING:
    from cometp2p.config import P2PConfig

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

DEFAULT_RECV_MESSAGE_CAPACITY: Final = 22_020_096
"""Go's ``defaultRecvMessageCapacity`` (21 MiB), wire.md §8.2."""

_DECAY_FACTOR: Final = 0.8
_MAX_DECAY_STEPS: Final = 200  # 0.8**200 * 2**63 < 1: more steps change nothing


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class ChannelDescriptor:
    """One channel of an MConnection (wire.md §8.2, table in §9.1).

    Attributes:
        id: the channel byte, 0..255.
        priority: relative share of the send bandwidth under contention (> 0).
        send_queue_capacity: whole messages that may wait in the send queue (>= 1).
        recv_buffer_capacity: initial reassembly buffer size in bytes (no wire effect;
            kept for parity with Go's descriptor).
        recv_message_capacity: the largest reassembled message accepted, in bytes; a
            peer exceeding it is disconnected.

    Raises:
        LocalProtocolError: an id outside 0..255, a priority <= 0, a queue capacity
            < 1 or a negative buffer or message capacity.
    """

    id: int
    priority: int
    send_queue_capacity: int = 1
    recv_buffer_capacity: int = 4096
    recv_message_capacity: int = DEFAULT_RECV_MESSAGE_CAPACITY

    def __post_init__(self) -> None:
        if not 0 <= self.id <= MAX_CHANNEL_ID:
            raise LocalProtocolError(f"channel id must be 0..255, got {self.id}")
        if self.priority <= 0:
            raise LocalProtocolError(
                f"channel {self.id:#04x}: priority must be > 0, got {self.priority}"
            )
        if self.send_queue_capacity < 1:
            raise LocalProtocolError(
                f"channel {self.id:#04x}: send_queue_capacity must be >= 1 message, "
                f"got {self.send_queue_capacity}"
            )
        if self.recv_buffer_capacity < 0 or self.recv_message_capacity < 0:
            raise LocalProtocolError(
                f"channel {self.id:#04x}: receive capacities must be >= 0 bytes, got "
                f"{self.recv_buffer_capacity} and {self.recv_message_capacity}"
            )


def recv_payload_limit(config: MConnectionConfig) -> int:
    """The most data bytes per PacketMsg an MConnection with ``config`` accepts."""
    return max(config.max_packet_msg_payload_bytes, config.recv_packet_msg_payload_bytes)


@dataclass(frozen=True, slots=True)
class MConnectionConfig:
    """Tunables of one MConnection (wire.md §8.1).

    Attributes:
        send_rate_bytes_per_s: ``[p2p] send_rate``, node default 5 120 000; 0 = unlimited.
        recv_rate_bytes_per_s: ``[p2p] recv_rate``, node default 5 120 000; 0 = unlimited.
        max_packet_msg_payload_bytes: ``[p2p] max_packet_msg_payload_size``, default
            1024: data bytes per PacketMsg we send.
        recv_packet_msg_payload_bytes: the most data bytes per PacketMsg we accept:
            ``max(max_packet_msg_payload_bytes, this)``, default 65 536. Beyond Go
            (issue #12): Go refuses any Packet larger than its own send size (1034 bytes
            by default), so a peer set to 4096 breaks every link on its first big
            packet. 64 KiB covers every size chains use (1024 to 10 240) and costs
            nothing: a message is still bounded by its channel's
            ``recv_message_capacity``. Set it to 1 for Go's strict check.
        flush_throttle_s: ``[p2p] flush_throttle_timeout``, default 0.1 (v1.0: 0.01):
            the longest data held back while the send rate is exhausted.
        ping_interval_s: seconds between our Pings (Go: 60, not configurable).
        pong_timeout_s: seconds to wait for a Pong after a Ping (Go: 45); must be
            smaller than ``ping_interval_s``.
        stats_decay_period_s: how often ``recently_sent`` decays by x0.8 (Go: 2 s).
        write_batch_bytes: the most bytes one :meth:`MConnection.data_to_send` call
            produces before flushing (Go's write buffer: 65 536), give or take one packet.
        rate_burst_s: the rate limiters' bucket size, in seconds of rate (Go's flowrate
            sample period: 0.1).

    Raises:
        ConfigError: a negative rate, throttle or burst, a payload < 1 byte, a batch
            < 1 byte, non-positive intervals, or ``pong_timeout_s >= ping_interval_s``.
    """

    send_rate_bytes_per_s: int = 5_120_000
    recv_rate_bytes_per_s: int = 5_120_000
    max_packet_msg_payload_bytes: int = 1024
    recv_packet_msg_payload_bytes: int = 65_536
    flush_throttle_s: float = 0.1
    ping_interval_s: float = 60.0
    pong_timeout_s: float = 45.0
    stats_decay_period_s: float = 2.0
    write_batch_bytes: int = 65_536
    rate_burst_s: float = 0.1

    def __post_init__(self) -> None:
        if self.send_rate_bytes_per_s < 0 or self.recv_rate_bytes_per_s < 0:
            raise ConfigError(
                "send/recv rate must be >= 0 bytes/s (0 = unlimited), got "
                f"{self.send_rate_bytes_per_s} and {self.recv_rate_bytes_per_s}"
            )
        if self.max_packet_msg_payload_bytes < 1:
            raise ConfigError(
                "max_packet_msg_payload_size must be >= 1 byte, got "
                f"{self.max_packet_msg_payload_bytes}"
            )
        if self.flush_throttle_s < 0 or self.rate_burst_s <= 0:
            raise ConfigError(
                f"flush_throttle_s must be >= 0 and rate_burst_s > 0, got "
                f"{self.flush_throttle_s} and {self.rate_burst_s}"
            )
        if self.ping_interval_s <= 0 or self.pong_timeout_s <= 0 or self.stats_decay_period_s <= 0:
            raise ConfigError(
                "ping interval, pong timeout and stats decay period must be > 0 s, got "
                f"{self.ping_interval_s}, {self.pong_timeout_s}, {self.stats_decay_period_s}"
            )
        if self.pong_timeout_s >= self.ping_interval_s:
            raise ConfigError(
                f"pong timeout ({self.pong_timeout_s} s) must be less than the ping interval "
                f"({self.ping_interval_s} s), otherwise the next ping resets the pong timer"
            )
        if self.recv_packet_msg_payload_bytes < 1:
            raise ConfigError(
                "recv_packet_msg_payload_bytes must be >= 1, got "
                f"{self.recv_packet_msg_payload_bytes}"
            )
        if self.write_batch_bytes < 1:
            raise ConfigError(f"write_batch_bytes must be >= 1, got {self.write_batch_bytes}")

    @classmethod
    def from_p2p(cls, p2p: P2PConfig) -> MConnectionConfig:
        """The MConnection settings of a ``[p2p]`` config section (other fields default).

        Raises:
            ConfigError: as for the constructor (e.g. a payload size of 0).
        """
        return cls(
            send_rate_bytes_per_s=p2p.send_rate_bytes_per_s,
            recv_rate_bytes_per_s=p2p.recv_rate_bytes_per_s,
            max_packet_msg_payload_bytes=p2p.max_packet_msg_payload_bytes,
            flush_throttle_s=p2p.flush_throttle_timeout_s,
        )


# --------------------------------------------------------------------------- events & status


@dataclass(frozen=True, slots=True, init=False)
class MessageReceived:
    """A whole message arrived on a channel (all its PacketMsgs, eof on the last).

    Attributes:
        channel_id: the channel byte.
        message: the reassembled message bytes (possibly empty).
    """

    channel_id: int
    message: bytes

    def __init__(self, channel_id: int, message: bytes) -> None:
        # One of these per message on the receive hot path: the slot setters are
        # about a third cheaper than the generated frozen __init__'s object.__setattr__.
        _set_channel_id(self, channel_id)
        _set_message(self, message)


_set_channel_id: Final[Callable[[MessageReceived, int], None]] = MessageReceived.__dict__[
    "channel_id"
].__set__
_set_message: Final[Callable[[MessageReceived, bytes], None]] = MessageReceived.__dict__[
    "message"
].__set__


@dataclass(frozen=True, slots=True)
class SendQueueReady:
    """A channel whose :meth:`MConnection.send` returned ``False`` has room again.

    Attributes:
        channel_id: the channel byte.
    """

    channel_id: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over; always the last event.

    Attributes:
        error: why the connection failed: a :class:`RemoteProtocolError` when the peer
            is at fault (malformed bytes, unknown channel, oversize packet or message,
            pong timeout), a :class:`LocalProtocolError` for an unexpected internal
            error (see :mod:`cometp2p.sansio.failure`), or ``None`` for a clean end.
        by_peer: ``False`` when we called :meth:`MConnection.close` or failed
            internally.
    """

    error: CometP2PError | None
    by_peer: bool


Event = MessageReceived | SendQueueReady | ConnectionTerminated
"""Everything :meth:`MConnection.next_event` can return."""


class MConnectionState(enum.Enum):
    """Lifecycle of an MConnection: OPEN, then exactly one of the three ends."""

    OPEN = "open"
    CLOSED = "closed"  # we called close()
    PEER_CLOSED = "peer closed"  # EOF at a packet boundary
    FAILED = "failed"  # the peer broke the protocol or stopped answering pings


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """Counters of one channel (Go's ``ChannelStatus`` plus byte counts).

    Attributes:
        id: the channel byte.
        priority: its priority.
        send_queue_capacity: whole messages its queue holds.
        send_queue_size: messages queued, counting one partly sent.
        recently_sent: the decayed count of delimited packet bytes that drives scheduling.
        bytes_sent: message payload bytes sent on it (chunk data, excluding framing).
        bytes_received: message payload bytes received on it.
    """

    id: int
    priority: int
    send_queue_capacity: int
    send_queue_size: int
    recently_sent: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True, slots=True)
class MConnectionStatus:
    """A snapshot of an MConnection.

    Attributes:
        state: the lifecycle state.
        duration_s: seconds since the connection was created.
        bytes_sent: all bytes handed out by ``data_to_send`` (framing included).
        bytes_received: all bytes passed to ``receive_data``.
        channels: one entry per channel, in declaration order.
    """

    state: MConnectionState
    duration_s: float
    bytes_sent: int
    bytes_received: int
    channels: tuple[ChannelStatus, ...]


# --------------------------------------------------------------------------- internals


# Refill state of one channel's sender (a small transition table, one int per channel):
#   IDLE      --send() refused: queue full-->              BLOCKED
#   BLOCKED   --a message leaves the queue (SendQueueReady)--> ANNOUNCED
#   ANNOUNCED --the scheduler's run of that channel ends-->    IDLE
# ANNOUNCED lives only inside one _schedule() call: if the channel then has nothing left,
# the batch ends and the connection's _refill_wait is set (until the next send()) so
# that its sender can refill first.
_REFILL_IDLE: Final = 0
_REFILL_BLOCKED: Final = 1
_REFILL_ANNOUNCED: Final = 2


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


class _Channel:
    """Send queue, chunker state and reassembly buffer of one channel."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "capacity",
        "chunk",
        "desc",
        "eof_headers",
        "full_header",
        "full_size",
        "id",
        "index",
        "offset",
        "priority",
        "queue",
        "recently_sent",
        "recv_buf",
        "recv_capacity",
        "refill",
        "sending",
    )

    def __init__(self, desc: ChannelDescriptor, index: int, max_payload: int) -> None:
        self.desc = desc
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
        self.recv_buf = bytearray()
        self.recv_capacity = desc.recv_message_capacity
        self.bytes_sent = 0
        self.bytes_received = 0


_OPEN: Final = MConnectionState.OPEN
_NO_CHANNEL: Final = _Channel(ChannelDescriptor(0, 1), -1, 1)  # never used: no template yet

# Receive-side templates, shared by all connections: for (channel id, eof), body length
# -> the canonical delimited header of such a PacketMsg. Only headers that arrived on
# a declared channel are recorded, and each table is bounded.
_RX_TEMPLATES: Final[dict[int, dict[int, bytes]]] = {}
_TEMPLATES_MAX: Final = 4096


def _rx_templates(channel_id: int, eof: bool) -> dict[int, bytes]:
    key = channel_id << 1 | eof
    table = _RX_TEMPLATES.get(key)
    if table is None:
        table = _RX_TEMPLATES[key] = {}
    return table


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

    def __init__(
        self, channels: Sequence[ChannelDescriptor], config: MConnectionConfig, now: float
    ) -> None:
        self.config = config
        self._created = now
        self._state = _OPEN
        self._error: CometP2PError | None = None
        payload = config.max_packet_msg_payload_bytes
        self._channels: tuple[_Channel, ...] = tuple(
            _Channel(desc, i, payload) for i, desc in enumerate(channels)
        )
        self._by_id: dict[int, _Channel] = {}
        self._by_byte: list[_Channel | None] = [None] * (MAX_CHANNEL_ID + 1)
        for ch in self._channels:
            if ch.id in self._by_id:
                raise LocalProtocolError(f"channel {ch.id:#04x} declared twice")
            self._by_id[ch.id] = ch
            self._by_byte[ch.id] = ch
        self._max_packet = max_packet_msg_size(recv_payload_limit(config))
        self._events: deque[Event] = deque()
        # send side
        self._pending = 0  # channels with a queued or partly sent message
        self._out: list[bytes | memoryview] = []
        self._out_bytes = 0
        self._batch_bytes = config.write_batch_bytes
        self._flush = _FlushThrottle(config.flush_throttle_s)
        self._refill_wait = False  # the last batch ended for a refilling sender (above)
        self._send_limiter = RateLimiter(
            config.send_rate_bytes_per_s,
            now,
            max(1, round(config.send_rate_bytes_per_s * config.rate_burst_s)),
        )
        self._send_limited = config.send_rate_bytes_per_s > 0
        self._bytes_sent = 0
        self._next_decay_at = now + config.stats_decay_period_s
        # liveness
        self._liveness = Liveness(now, config.ping_interval_s, config.pong_timeout_s)
        # receive side
        self._rest = b""  # an incomplete Packet carried over to the next receive_data
        self._template: dict[int, bytes] = {}  # see _parse, tier 1
        self._template_ch = _NO_CHANNEL
        self._template_eof = False
        self._recv_limiter = RateLimiter(
            config.recv_rate_bytes_per_s,
            now,
            max(1, round(config.recv_rate_bytes_per_s * config.rate_burst_s)),
        )
        self._bytes_received = 0
        self._recv_waiting = False  # recv_allowance() said 0: the driver waits to read

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> MConnectionState:
        """The lifecycle state."""
        return self._state

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """The declared channel ids, in declaration order."""
        return tuple(ch.id for ch in self._channels)

    # ------------------------------------------------------------------ commands

    def send(self, channel_id: int, message: bytes | bytearray | memoryview) -> bool:
        """Queue a whole message on a channel if its queue has room (Go's ``TrySend``).

        Never blocks and never produces bytes by itself: call :meth:`data_to_send`.

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
        ch = self._by_id.get(channel_id)
        if ch is None or self._state is not _OPEN:
            raise self._refusal(channel_id)
        queue = ch.queue
        if len(queue) >= ch.capacity:
            ch.refill = _REFILL_BLOCKED
            return False
        if message.__class__ is not bytes:
            message = _as_bytes(message)
        if not queue and ch.sending is None:
            self._pending += 1
        queue.append(message)
        self._refill_wait = False
        return True

    def can_send(self, channel_id: int) -> bool:
        """Whether :meth:`send` on this channel would queue the message now.

        Raises:
            LocalProtocolError: the channel was not declared.
        """
        ch = self._by_id.get(channel_id)
        if ch is None:
            raise self._refusal(channel_id)
        return self._state is _OPEN and len(ch.queue) < ch.capacity

    def close(self) -> None:
        """Close the connection from our side: queued and unflushed data is dropped.

        Queues :class:`ConnectionTerminated` ``(None, by_peer=False)`` if the connection
        was open; idempotent. The driver then closes the transport.
        """
        if self._state is _OPEN:
            self._terminate(MConnectionState.CLOSED, None, by_peer=False)

    def _refusal(self, channel_id: int) -> Exception:
        """The error for a command on an undeclared channel or an ended connection."""
        if channel_id not in self._by_id:
            declared = ", ".join(f"{ch.id:#04x}" for ch in self._channels) or "none"
            return LocalProtocolError(
                f"channel {channel_id!r} is not declared on this connection (declared: {declared})"
            )
        if self._state is MConnectionState.CLOSED:
            return ConnectionClosedError("the MConnection was closed by us")
        if self._state is MConnectionState.PEER_CLOSED:
            return ConnectionBrokenError("the peer closed the connection")
        error = ConnectionBrokenError(f"the connection failed: {self._error}")
        error.__cause__ = self._error
        return error

    def _terminate(
        self, state: MConnectionState, error: CometP2PError | None, by_peer: bool
    ) -> None:
        self._state = state
        self._error = error
        self._events.append(ConnectionTerminated(error, by_peer))
        for ch in self._channels:
            ch.queue.clear()
            ch.sending = None
            ch.recv_buf = bytearray()
        self._out.clear()
        self._out_bytes = 0
        self._pending = 0
        self._rest = b""
        self._flush.deadline = None
        self._liveness.stop()
        self._recv_waiting = False

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
        flush_at = self._flush.deadline
        if flush_at is not None and flush_at < deadline:
            deadline = flush_at
        if self._recv_waiting:
            ready = self._recv_limiter.ready_at(1)
            if ready < deadline:
                deadline = ready
        if self._pending and self._send_limited:
            want = min(self._batch_bytes - self._out_bytes, self._send_limiter.burst_bytes)
            ready = self._send_limiter.ready_at(want)
            if ready < deadline:
                deadline = ready
        return deadline

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
        return self._pending > 0 and not self._refill_wait and not self._send_limiter.exhausted

    def more_to_send(self) -> bool:
        """Whether a driver that just wrote a batch should yield once, then write again.

        True when :meth:`has_pending_data` is, and also while messages stay queued
        after a batch that ended so that a sender woken by :class:`SendQueueReady` could
        refill: once the driver has let that sender run (one turn of its loop), the
        next :meth:`data_to_send` goes on even if it never refills (with no flush
        throttle and no send rate there is no timer to bring the driver back).
        Needs no clock.
        """
        return self._state is _OPEN and (self._pending > 0 or self._liveness.due)

    def has_queued_messages(self) -> bool:
        """Whether any channel still holds a queued or partly sent message."""
        return self._state is _OPEN and self._pending > 0

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
            self._on_timer(now)
        except Exception as exc:
            error = self._crash(exc)
            if error is exc:
                raise
            raise error from exc

    def _on_timer(self, now: float) -> None:
        if self._liveness.on_timer(now):
            timeout = self.config.pong_timeout_s
            self._fail(RemoteProtocolError(f"pong timeout: no Pong within {timeout} s of our Ping"))
            return
        if self._recv_waiting and self._recv_limiter.available(now) > 0:
            self._recv_waiting = False

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
            return self._produce(now)
        except Exception as exc:
            error = self._crash(exc)
            if error is exc:
                raise
            raise error from exc

    def _produce(self, now: float) -> bytes:
        if now >= self._next_decay_at:
            self._decay(now)
        out = self._out
        liveness = self._liveness
        head = liveness.frames(now) if liveness.due else b""
        if self._pending:
            budget = self._batch_bytes - self._out_bytes
            if self._send_limited:
                allowed = self._send_limiter.available(now)
                if allowed < budget:
                    budget = allowed
            if budget > 0:
                emitted = self._schedule(out, budget)
                self._out_bytes += emitted
                if self._send_limited:
                    self._send_limiter.consume(emitted)
        if not out:
            if head:
                self._bytes_sent += len(head)
            return head
        flush = self._flush
        if not (
            head or not self._pending or self._out_bytes >= self._batch_bytes or flush.expired(now)
        ):
            # More to come (the rate is spent, or a waiting sender is about to refill):
            # hold the packets back for a bigger write, as Go's flush throttle does.
            flush.hold(now)
            return b""
        if head:
            out.insert(0, head)
        data = b"".join(out)
        out.clear()
        self._out_bytes = 0
        flush.deadline = None
        self._bytes_sent += len(data)
        return data

    def _schedule(self, out: list[bytes | memoryview], budget: int) -> int:
        """Append PacketMsgs to ``out`` until ``budget`` bytes or the queues run dry."""
        append = out.append
        channels = self._channels
        emitted = 0
        self._refill_wait = False
        while emitted < budget:
            # Go's selectChannelToGossipOn, plus the runner-up that bounds this run.
            best: _Channel | None = None
            second: _Channel | None = None
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
                if best.sending is None and not best.queue and self._pending:
                    # Its sender is waiting to refill: end the batch rather than hand
                    # its share to the other channels (fairness under saturation).
                    self._refill_wait = True
                    break
        return emitted

    def _emit(self, ch: _Channel, append: _Append, budget: int, max_rs: int) -> int:
        """Emit packets of one channel until it loses the turn, the budget or its data."""
        queue = ch.queue
        sending = ch.sending
        offset = ch.offset
        chunk = ch.chunk
        headers = ch.eof_headers
        rs = ch.recently_sent
        emitted = 0
        data_bytes = 0
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
        ch.sending = sending
        ch.offset = offset
        ch.recently_sent = rs
        ch.bytes_sent += data_bytes
        if sending is None and not queue:
            self._pending -= 1
        return emitted

    def _decay(self, now: float) -> None:
        period = self.config.stats_decay_period_s
        steps = int((now - self._next_decay_at) / period) + 1
        self._next_decay_at += steps * period
        for ch in self._channels:
            rs = ch.recently_sent
            for _ in range(min(steps, _MAX_DECAY_STEPS)):
                if not rs:
                    break
                rs = int(rs * _DECAY_FACTOR)  # Go: int64(float64(x) * 0.8)
            ch.recently_sent = rs

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
        allowance = self._recv_limiter.available(now)
        # 0: the driver waits; get_timer() then includes the moment it may read again.
        self._recv_waiting = allowance <= 0
        return allowance

    def recv_resume_at(self) -> float:
        """The earliest time (seconds) at which :meth:`recv_allowance` is > 0 again.

        A driver need not arm a timer of its own for it: while it waits (after
        :meth:`recv_allowance` returned 0) :meth:`get_timer` includes this time.
        """
        return self._recv_limiter.ready_at(1)

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
        if not data:
            if self._rest:
                raise self._fail(
                    RemoteProtocolError(
                        f"connection closed in the middle of a Packet "
                        f"({len(self._rest)} bytes of it received)"
                    )
                )
            self._terminate(MConnectionState.PEER_CLOSED, None, by_peer=True)
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        self._bytes_received += len(data)
        self._recv_limiter.consume(len(data))
        buf = self._rest + data if self._rest else data
        try:
            pos = self._parse(buf)
        except Exception as exc:  # the failure rule of sansio.failure
            error = self._crash(exc)
            if error is exc:
                raise
            raise error from exc
        self._rest = buf[pos:] if pos < len(buf) else b""

    def _parse(self, buf: bytes) -> int:
        """Handle every complete Packet in ``buf``; returns where the incomplete one starts.

        Two tiers: (1) the packet starts with the canonical header seen last for this
        length on the channel of the previous packet (one dict lookup and one
        ``startswith``); (2) :func:`~cometp2p.wire.packet.scan_packet`, the one Packet
        parser, which returns offsets into ``buf``.
        """
        n = len(buf)
        pos = 0
        max_packet = self._max_packet
        by_byte = self._by_byte
        append = self._events.append
        template = self._template
        template_ch = self._template_ch
        template_eof = self._template_eof
        view: memoryview | None = None
        while pos < n:
            # uvarint length prefix; a Packet body is at most a few KiB, i.e. 1-2 bytes
            length = buf[pos]
            start = pos + 1
            if length >= 0x80:
                if start < n and buf[start] < 0x80:
                    length = (length & 0x7F) | (buf[start] << 7)
                    start += 1
                else:
                    start, length = self._long_prefix(buf, pos)
                    if start < 0:
                        break
            if length > max_packet:
                raise self._oversize(length)
            end = start + length
            if end > n:
                break
            header = template.get(length)
            if header is not None and buf.startswith(header, pos):
                data_start = pos + len(header)
                ch = template_ch
                eof = template_eof
            else:
                kind, cid, eof, data_start, data_end = scan_packet(buf, start, end)
                if kind != KIND_MSG:
                    if kind == KIND_PING:  # answer once, however many arrive
                        self._liveness.pong_due = True
                    else:  # a Pong: whatever Ping it answers, the peer is alive
                        self._liveness.got_pong()
                    pos = end
                    continue
                found = by_byte[cid]
                if found is None:
                    raise self._unknown_channel(cid)
                ch = found
                if data_end != end:  # fields after the data: not a canonical layout
                    self._deliver(ch, eof, buf[data_start:data_end])
                    pos = end
                    continue
                # Remember a canonical layout: the next such packet takes tier 1.
                header = packet_msg_header(cid, eof, end - data_start)
                if buf.startswith(header, pos):
                    template = _rx_templates(cid, eof)
                    template_ch = ch
                    template_eof = eof
                    if len(template) < _TEMPLATES_MAX:
                        template[length] = header
            # The payload is buf[data_start:end] (the hot path keeps to one end index).
            pos = end
            dlen = end - data_start
            ch.bytes_received += dlen
            recv_buf = ch.recv_buf
            if not recv_buf and eof:
                if dlen > ch.recv_capacity:
                    raise self._over_capacity(ch, dlen)
                append(MessageReceived(ch.id, buf[data_start:end]))
                continue
            if len(recv_buf) + dlen > ch.recv_capacity:
                raise self._over_capacity(ch, len(recv_buf) + dlen)
            if view is None:
                view = memoryview(buf)
            recv_buf += view[data_start:end]
            if eof:
                ch.recv_buf = bytearray()
                append(MessageReceived(ch.id, bytes(recv_buf)))
        self._template = template
        self._template_ch = template_ch
        self._template_eof = template_eof
        return pos

    def _deliver(self, ch: _Channel, eof: bool, data: bytes) -> None:
        """Reassemble one chunk that came in a non-canonical layout (the rare path)."""
        ch.bytes_received += len(data)
        total = len(ch.recv_buf) + len(data)
        if total > ch.recv_capacity:
            raise self._over_capacity(ch, total)
        if eof:
            message = bytes(ch.recv_buf) + data if ch.recv_buf else data
            ch.recv_buf = bytearray()
            self._events.append(MessageReceived(ch.id, message))
        else:
            ch.recv_buf += data

    @staticmethod
    def _long_prefix(buf: bytes, pos: int) -> tuple[int, int]:
        """A length prefix of 3+ bytes: ``(body start, length)``, or ``(-1, 0)`` if cut off."""
        decoded = decode_uvarint(buf, pos)
        if decoded is None:
            if len(buf) - pos >= 10:
                raise RemoteProtocolError("Packet length prefix longer than 10 bytes")
            return -1, 0
        length, start = decoded
        return start, length

    def _oversize(self, length: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"Packet exceeds max size: declared {length} bytes, limit {self._max_packet} "
            f"(PacketMsg payloads up to {recv_payload_limit(self.config)} bytes)"
        )

    def _unknown_channel(self, channel_id: int) -> RemoteProtocolError:
        declared = ", ".join(f"{ch.id:#04x}" for ch in self._channels) or "none"
        return RemoteProtocolError(
            f"unknown channel {channel_id:#04x}: PacketMsg on a channel we did not declare "
            f"(declared: {declared})"
        )

    @staticmethod
    def _over_capacity(ch: _Channel, total: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"received message exceeds available capacity on channel {ch.id:#04x}: "
            f"{total} bytes > recv_message_capacity {ch.recv_capacity}"
        )

    # ------------------------------------------------------------------ status

    def status(self, now: float) -> MConnectionStatus:
        """A snapshot of the connection and per-channel counters at ``now``."""
        if self._state is _OPEN and now >= self._next_decay_at:
            self._decay(now)
        return MConnectionStatus(
            state=self._state,
            duration_s=now - self._created,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            channels=tuple(
                ChannelStatus(
                    id=ch.id,
                    priority=ch.priority,
                    send_queue_capacity=ch.capacity,
                    send_queue_size=len(ch.queue) + (ch.sending is not None),
                    recently_sent=ch.recently_sent,
                    bytes_sent=ch.bytes_sent,
                    bytes_received=ch.bytes_received,
                )
                for ch in self._channels
            ),
        )


_Append = Callable[[bytes | memoryview], None]


def _as_bytes(message: object) -> bytes:
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise LocalProtocolError(f"a message must be bytes, got {type(message).__name__}")
