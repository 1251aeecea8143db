"""Prometheus metrics of the p2p layer, with CometBFT's names (behaviour.md §2.4).

Every metric is ``<namespace>_p2p_<name>`` (namespace default ``cometbft``) and carries
the constant label ``chain_id``. Each :class:`P2PMetrics` has its own registry, so several
nodes can live in one process (tests, ``localnet``) without clashing.

CometBFT's seven metrics keep their names, types and labels (``chID`` formatted ``0x%x``;
``peer_pending_send_bytes`` counts queued *messages*, as Go's does). One is ours:
``send_queue_latency_seconds{chID}``, a histogram of how long a blocking ``Peer.send``
waited for room in the channel's send queue. (The time from enqueue to the first packet
written would be a better measure; the sans-IO MConnection does not report it yet.)
"""

from __future__ import annotations

import contextlib
from typing import Protocol, TypeVar

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["P2PMetrics", "message_type_label"]


_Metric = TypeVar("_Metric", Counter, Gauge)


class _Inc(Protocol):
    def inc(self, amount: float = 1) -> None: ...


_ChildCache = dict[tuple[str, int], _Inc]

_QUEUE_LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def _unwrap(message: Message) -> Message:
    """The set member of a pure oneof wrapper (``tendermint.p2p.Message`` and the like).

    Go labels a message by its unwrapped type, so a PexRequest counts as
    ``p2p_PexRequest`` whether or not it travelled inside ``Message{sum}``.
    """
    descriptor = message.DESCRIPTOR
    if len(descriptor.oneofs) != 1:
        return message
    oneof = descriptor.oneofs[0]
    if len(oneof.fields) != len(descriptor.fields):
        return message  # other fields beside the oneof: not a wrapper
    member = message.WhichOneof(oneof.name)
    if member is None:
        return message
    inner = getattr(message, member)
    return inner if isinstance(inner, Message) else message


def message_type_label(message: bytes | Message) -> str:
    """``<last proto package segment>_<MessageName>``, e.g. ``p2p_PexRequest``.

    Oneof wrappers are labelled by the message they carry (behaviour.md §2.4); raw bytes
    are labelled ``bytes``.
    """
    if isinstance(message, bytes | bytearray | memoryview):
        return "bytes"
    full = _unwrap(message).DESCRIPTOR.full_name  # e.g. "tendermint.p2p.PexRequest"
    package, _, name = full.rpartition(".")
    return f"{package.rpartition('.')[2]}_{name}" if package else name


class P2PMetrics:
    """The ``cometbft_p2p_*`` metrics of one node.

    Args:
        chain_id: value of the constant ``chain_id`` label.
        namespace: ``[instrumentation] namespace`` (default ``cometbft``).
        registry: where to register; a fresh registry by default.
    """

    def __init__(
        self,
        chain_id: str,
        namespace: str = "cometbft",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._namespace = namespace
        self.peers = self._gauge("peers", "Number of peers.").labels(chain_id)
        self.peer_receive_bytes_total = self._counter(
            "peer_receive_bytes", "Number of bytes received from a given peer.", "peer_id", "chID"
        )
        self.peer_send_bytes_total = self._counter(
            "peer_send_bytes", "Number of bytes sent to a given peer.", "peer_id", "chID"
        )
        self.peer_pending_send_bytes = self._gauge(
            "peer_pending_send_bytes",
            "Number of pending messages queued for a given peer.",
            "peer_id",
        )
        self.message_receive_bytes_total = self._counter(
            "message_receive_bytes",
            "Number of bytes of each message type received.",
            "message_type",
        )
        self.message_send_bytes_total = self._counter(
            "message_send_bytes", "Number of bytes of each message type sent.", "message_type"
        )
        self.num_txs = self._gauge(
            "num_txs",
            "Number of transactions submitted by each peer (declared, never set, as in v0.38).",
            "peer_id",
        )
        self.send_queue_latency_seconds = Histogram(
            "send_queue_latency_seconds",
            "Time a send waited for room in a channel's send queue (seconds).",
            ["chain_id", "chID"],
            buckets=_QUEUE_LATENCY_BUCKETS,
            namespace=namespace,
            subsystem="p2p",
            registry=self.registry,
        )
        self._chain_id = chain_id
        self._sent: _ChildCache = {}
        self._received: _ChildCache = {}
        self._sent_types: dict[str, _Inc] = {}
        self._received_types: dict[str, _Inc] = {}

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A ``<namespace>_p2p_<name>`` counter labelled ``chain_id`` and ``labels``."""
        return self._metric(Counter, name, documentation, labels)

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        """A ``<namespace>_p2p_<name>`` gauge labelled ``chain_id`` and ``labels``."""
        return self._metric(Gauge, name, documentation, labels)

    def _metric(
        self, kind: type[_Metric], name: str, documentation: str, labels: tuple[str, ...]
    ) -> _Metric:
        return kind(
            name,
            documentation,
            ["chain_id", *labels],
            namespace=self._namespace,
            subsystem="p2p",
            registry=self.registry,
        )

    def peer_added(self) -> None:
        """One more peer."""
        self.peers.inc()

    def peer_removed(self) -> None:
        """One peer fewer."""
        self.peers.dec()

    # Resolving a labelled child costs microseconds; every message needs two, so the
    # children are cached (per direction, peer and channel; per message type).
    def _peer_child(self, counter: Counter, cache: _ChildCache, peer_id: str, ch: int) -> _Inc:
        child = cache.get((peer_id, ch))
        if child is None:
            child = cache[(peer_id, ch)] = counter.labels(self._chain_id, peer_id, f"{ch:#x}")
        return child

    def _type_child(
        self, counter: Counter, cache: dict[str, _Inc], message: bytes | Message
    ) -> _Inc:
        label = "bytes" if isinstance(message, bytes) else message_type_label(message)
        child = cache.get(label)
        if child is None:
            child = cache[label] = counter.labels(self._chain_id, label)
        return child

    def record_send(
        self, peer_id: str, channel_id: int, message: bytes | Message, nbytes: int
    ) -> None:
        """Count ``nbytes`` sent to ``peer_id`` on ``channel_id``."""
        self._peer_child(self.peer_send_bytes_total, self._sent, peer_id, channel_id).inc(nbytes)
        self._type_child(self.message_send_bytes_total, self._sent_types, message).inc(nbytes)

    def record_receive(
        self, peer_id: str, channel_id: int, message: bytes | Message, nbytes: int
    ) -> None:
        """Count ``nbytes`` received from ``peer_id`` on ``channel_id``."""
        counter = self.peer_receive_bytes_total
        self._peer_child(counter, self._received, peer_id, channel_id).inc(nbytes)
        self._type_child(self.message_receive_bytes_total, self._received_types, message).inc(
            nbytes
        )

    def record_queue_wait(self, channel_id: int, seconds: float) -> None:
        """Observe how long a send waited for room in ``channel_id``'s queue."""
        self.send_queue_latency_seconds.labels(self._chain_id, f"{channel_id:#x}").observe(seconds)

    def set_pending(self, peer_id: str, queued_messages: int) -> None:
        """Set the number of messages queued for ``peer_id``."""
        self.peer_pending_send_bytes.labels(self._chain_id, peer_id).set(queued_messages)

    def forget_peer(self, peer_id: str) -> None:
        """Drop every per-peer series of a removed peer: its pending gauge and its byte
        counters on each channel (issue #12).

        Deviation from Go, which keeps a peer's counters forever: with churning peer
        identities the number of series (about 3.4 KB of memory each pair) would grow
        without bound. A peer that reconnects starts its counters from zero; the
        per-message-type counters keep the node's totals. Idempotent.
        """
        with contextlib.suppress(KeyError):
            self.peer_pending_send_bytes.remove(self._chain_id, peer_id)
        for counter, cache in (
            (self.peer_send_bytes_total, self._sent),
            (self.peer_receive_bytes_total, self._received),
        ):
            for key in [k for k in cache if k[0] == peer_id]:
                del cache[key]
                with contextlib.suppress(KeyError):
                    counter.remove(self._chain_id, peer_id, f"{key[1]:#x}")
