"""The receive side of one MConnection: Packet parsing, reassembly per channel, limits.

Implements wire.md §8.2 (receive limits) and §8.3 (reassembly) over the Packet codec of
§4.3 / §5.1 for :class:`~cometp2p.sansio.mconnection.MConnection`, which owns one
:class:`PacketReceiver`. Complete messages become :class:`MessageReceived` events on
the connection's queue; Pings and Pongs go to its
:class:`~cometp2p.sansio.liveness.Liveness`. The receive rate is a
:class:`~cometp2p.sansio.flowrate.RateLimiter`. No IO and no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

from cometp2p.errors import RemoteProtocolError
from cometp2p.sansio.flowrate import RateLimiter
from cometp2p.sansio.liveness import Liveness
from cometp2p.sansio.mconnection_config import (
    ChannelDescriptor,
    MConnectionConfig,
    recv_payload_limit,
)
from cometp2p.sansio.mconnection_events import Event, MessageReceived
from cometp2p.wire.packet import (
    KIND_MSG,
    KIND_PING,
    max_packet_msg_size,
    packet_msg_header,
    scan_packet,
)
from cometp2p.wire.varint import decode_uvarint

__all__ = ["PacketReceiver"]


class _RecvChannel:
    """Reassembly buffer and receive counters of one channel."""

    __slots__ = ("bytes_received", "capacity", "id", "recv_buf")

    def __init__(self, desc: ChannelDescriptor) -> None:
        self.id = desc.id
        self.capacity = desc.recv_message_capacity
        self.recv_buf = bytearray()
        self.bytes_received = 0


_NO_CHANNEL: Final = _RecvChannel(ChannelDescriptor(0, 1))  # never used: no template yet

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


class PacketReceiver:
    """Turns the decrypted byte stream into whole messages, within the receive limits.

    Args:
        channels: the channels we accept (ids already unique).
        config: the connection's tunables (payload limit, receive rate).
        now: the creation time (s), for the rate limiter.
        events: the connection's event queue; :class:`MessageReceived` goes there.
        liveness: the connection's ping/pong machine; Pings and Pongs go there.

    Attributes:
        channels: per-channel receive state, in declaration order.
        limiter: the receive rate limiter.
        waiting: :meth:`allowance` said 0, so the driver waits to read.
        bytes_received: every byte passed to :meth:`receive`.
    """

    __slots__ = (
        "_by_id",
        "_events",
        "_liveness",
        "_max_packet",
        "_payload_limit",
        "_rest",
        "_template",
        "_template_ch",
        "_template_eof",
        "bytes_received",
        "channels",
        "limiter",
        "waiting",
    )

    def __init__(
        self,
        channels: Sequence[ChannelDescriptor],
        config: MConnectionConfig,
        now: float,
        events: deque[Event],
        liveness: Liveness,
    ) -> None:
        self.channels: tuple[_RecvChannel, ...] = tuple(_RecvChannel(d) for d in channels)
        # A dict, not a 256-slot list: 2 KiB less per connection (idle peers, bench/).
        self._by_id: dict[int, _RecvChannel] = {ch.id: ch for ch in self.channels}
        self._payload_limit = recv_payload_limit(config)
        self._max_packet = max_packet_msg_size(self._payload_limit)
        self._events = events
        self._liveness = liveness
        self._rest = b""  # an incomplete Packet carried over to the next receive
        self._template: dict[int, bytes] = {}  # see _parse, tier 1
        self._template_ch = _NO_CHANNEL
        self._template_eof = False
        self.limiter = RateLimiter(
            config.recv_rate_bytes_per_s,
            now,
            max(1, round(config.recv_rate_bytes_per_s * config.rate_burst_s)),
        )
        self.bytes_received = 0
        self.waiting = False  # allowance() said 0: the driver waits to read

    # ------------------------------------------------------------------ rate

    def allowance(self, now: float) -> int:
        """Bytes the driver may read now (see ``MConnection.recv_allowance``)."""
        allowance = self.limiter.available(now)
        # 0: the driver waits; deadline() then includes the moment it may read again.
        self.waiting = allowance <= 0
        return allowance

    def deadline(self, deadline: float) -> float:
        """The earlier of ``deadline`` and the moment a waiting driver may read again."""
        if self.waiting:
            ready = self.limiter.ready_at(1)
            if ready < deadline:
                return ready
        return deadline

    def on_timer(self, now: float) -> None:
        """The driver stops waiting once the receive rate has room again."""
        if self.waiting and self.limiter.available(now) > 0:
            self.waiting = False

    def stop(self) -> None:
        """The connection is over: drop partial messages and the carried-over bytes."""
        for ch in self.channels:
            ch.recv_buf = bytearray()
        self._rest = b""
        self.waiting = False

    # ------------------------------------------------------------------ parsing

    def receive(self, data: bytes | bytearray | memoryview) -> bool:
        """Consume decrypted bytes; ``False`` at a clean EOF (``b""`` between Packets).

        Raises:
            RemoteProtocolError: an oversize, malformed or empty Packet, a PacketMsg on
                an undeclared channel, a message beyond the channel's
                ``recv_message_capacity``, or EOF in the middle of a Packet. Messages
                completed before the bad packet stay queued.
        """
        if not data:
            if self._rest:
                raise RemoteProtocolError(
                    f"connection closed in the middle of a Packet "
                    f"({len(self._rest)} bytes of it received)"
                )
            return False
        if not isinstance(data, bytes):
            data = bytes(data)
        self.bytes_received += len(data)
        self.limiter.consume(len(data))
        buf = self._rest + data if self._rest else data
        pos = self._parse(buf)
        self._rest = buf[pos:] if pos < len(buf) else b""
        return True

    def _parse(self, buf: bytes) -> int:
        """Handle every complete Packet in ``buf``; returns where the incomplete one starts.

        Two tiers: (1) the packet starts with the canonical header seen last for this
        length on the channel of the previous packet (one dict lookup and one
        ``startswith``); (2) :meth:`_scan`, through the one Packet parser.
        """
        n, pos = len(buf), 0
        max_packet = self._max_packet
        append = self._events.append
        template, template_ch, template_eof = self._template, self._template_ch, self._template_eof
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
                data_start, ch, eof = pos + len(header), template_ch, template_eof
            else:
                found = self._scan(buf, pos, start, end)
                if found is None:
                    pos = end
                    continue
                ch, eof, data_start = found
                template, template_ch = self._template, self._template_ch
                template_eof = self._template_eof
            # The payload is buf[data_start:end] (the hot path keeps to one end index).
            pos = end
            dlen = end - data_start
            ch.bytes_received += dlen
            recv_buf = ch.recv_buf
            if not recv_buf and eof:
                if dlen > ch.capacity:
                    raise self._over_capacity(ch, dlen)
                append(MessageReceived(ch.id, buf[data_start:end]))
                continue
            if len(recv_buf) + dlen > ch.capacity:
                raise self._over_capacity(ch, len(recv_buf) + dlen)
            if view is None:
                view = memoryview(buf)
            recv_buf += view[data_start:end]
            if eof:
                ch.recv_buf = bytearray()
                append(MessageReceived(ch.id, bytes(recv_buf)))
        return pos

    def _scan(
        self, buf: bytes, pos: int, start: int, end: int
    ) -> tuple[_RecvChannel, bool, int] | None:
        """Tier 2 of :meth:`_parse`: the Packet ``buf[pos:end]`` through ``scan_packet``.

        Returns ``(channel, eof, data start)`` of a PacketMsg whose data runs to ``end``,
        for :meth:`_parse` to reassemble, after making its header the tier-1 template
        when it is canonical; ``None`` once the packet is handled here (a Ping, a Pong,
        or a PacketMsg with fields after its data).
        """
        kind, cid, eof, data_start, data_end = scan_packet(buf, start, end)
        if kind != KIND_MSG:
            if kind == KIND_PING:  # answer once, however many arrive
                self._liveness.pong_due = True
            else:  # a Pong: whatever Ping it answers, the peer is alive
                self._liveness.got_pong()
            return None
        ch = self._by_id.get(cid)
        if ch is None:
            raise self._unknown_channel(cid)
        if data_end != end:  # fields after the data: not a canonical layout
            self._deliver(ch, eof, buf[data_start:data_end])
            return None
        # Remember a canonical layout: the next such packet takes tier 1.
        header = packet_msg_header(cid, eof, end - data_start)
        if buf.startswith(header, pos):
            template = _rx_templates(cid, eof)
            if len(template) < _TEMPLATES_MAX:
                template[end - start] = header
            self._template, self._template_ch, self._template_eof = template, ch, eof
        return ch, eof, data_start

    def _deliver(self, ch: _RecvChannel, eof: bool, data: bytes) -> None:
        """Reassemble one chunk that came in a non-canonical layout (the rare path)."""
        ch.bytes_received += len(data)
        total = len(ch.recv_buf) + len(data)
        if total > ch.capacity:
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
            f"(PacketMsg payloads up to {self._payload_limit} bytes)"
        )

    def _unknown_channel(self, channel_id: int) -> RemoteProtocolError:
        declared = ", ".join(f"{ch.id:#04x}" for ch in self.channels) or "none"
        return RemoteProtocolError(
            f"unknown channel {channel_id:#04x}: PacketMsg on a channel we did not declare "
            f"(declared: {declared})"
        )

    @staticmethod
    def _over_capacity(ch: _RecvChannel, total: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"received message exceeds available capacity on channel {ch.id:#04x}: "
            f"{total} bytes > recv_message_capacity {ch.capacity}"
        )
