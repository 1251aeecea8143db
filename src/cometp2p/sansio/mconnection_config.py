"""The settings of one MConnection: its channels and its tunables (wire.md §8.1, §8.2).

:class:`ChannelDescriptor` declares one channel, :class:`MConnectionConfig` holds the
connection-wide tunables; both validate themselves on construction. Re-exported by
:mod:`cometp2p.sansio.mconnection`, where callers import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cometp2p.errors import ConfigError, LocalProtocolError
from cometp2p.wire.packet import MAX_CHANNEL_ID

if TYPE_CHECKING:
    from cometp2p.config import P2PConfig

__all__ = [
    "DEFAULT_RECV_MESSAGE_CAPACITY",
    "ChannelDescriptor",
    "MConnectionConfig",
    "recv_payload_limit",
]

DEFAULT_RECV_MESSAGE_CAPACITY: Final = 22_020_096
"""Go's ``defaultRecvMessageCapacity`` (21 MiB), wire.md §8.2."""


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
