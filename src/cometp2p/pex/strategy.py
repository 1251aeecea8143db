"""The adaptive request strategy of the v0.35 PEX design, as pure objects.

behaviour.md §9.1 and seed document 002 ("Package PEX"): the reactor asks its connected
peers for addresses in turn, from a queue (a peer goes to the back once it has answered),
and "monitors the amount of new addresses to already seen addresses" in each answer to
build "a picture of the size of the network" and decide how often to ask.

Here that picture is an explicit capture-recapture estimate (Schnabel's estimator over the
last few answers): an answer of ``C`` usable addresses, ``R`` of which the book already
knew when it held ``M`` addresses, estimates the network at ``Σ C·M / (Σ R + 1)`` nodes.
With ``N`` that estimate (at least the book size ``K``), the interval between two requests
is ``min_interval * (N + 1) / (N - K + 1)``, clamped to ``[min_interval, max_interval]``:
the floor while most of the network is unknown, growing to ``min_interval * (K + 1)``
once the book covers the estimate (one expected discovery per interval), and the maximum
once the book is full. That estimate cannot see that a book which evicts (many addresses
in few buckets, as on one loopback IP) will never cover the network, so the interval is
also never shorter than v0.35.9's own growth term (behaviour.md §9.1)
``min_interval / A * ((T + 1) / (added + 1))**2``, with ``T`` the addresses added so far,
``added`` those of the last answer and ``A`` the peers waiting in the queue: once answers
stop bringing new addresses, requests thin out quadratically whatever the estimate says.
Deliberate differences from v0.35.9: a real FIFO queue (Go picks
from a map), a timer independent of inbound traffic, and a per-peer gap so that no peer
is asked more often than it tolerates.

No IO, no clock: every method takes ``now``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cometp2p.pex.config import PexConfig
from cometp2p.types import NodeID

__all__ = [
    "NetworkSizeEstimator",
    "RoundRobinScheduler",
    "Sample",
    "adaptive_interval_s",
    "v035_growth_interval_s",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """One answer, as a capture-recapture sample.

    Attributes:
        known_before: addresses in the book before the answer (``M``, the marked).
        received: usable addresses in the answer (``C``: new ones plus known ones).
        recaptured: how many of them the book already knew (``R``).
    """

    known_before: int
    received: int
    recaptured: int


class NetworkSizeEstimator:
    """Schnabel's multiple-census estimate of the number of reachable nodes.

    ``N = Σ C·M / (Σ R + 1)`` over the last ``window`` informative samples (the ``+ 1``
    keeps it finite, and makes it lean low, when nothing was recaptured). Samples with no
    usable address are ignored.

    Args:
        window: how many recent samples to keep (>= 1).
    """

    __slots__ = ("_samples",)

    def __init__(self, window: int) -> None:
        self._samples: deque[Sample] = deque(maxlen=max(1, window))

    def observe(self, known_before: int, received: int, recaptured: int) -> None:
        """Add one answer: ``received`` usable addresses, ``recaptured`` of them known
        when the book held ``known_before`` addresses."""
        if received <= 0:
            return
        recaptured = max(0, min(recaptured, received, max(known_before, 0)))
        self._samples.append(Sample(max(known_before, 0), received, recaptured))

    @property
    def samples(self) -> tuple[Sample, ...]:
        """The samples in the window, oldest first."""
        return tuple(self._samples)

    def estimate(self) -> float | None:
        """The estimated network size, or ``None`` before any sample with ``M > 0``."""
        weighted = sum(s.received * s.known_before for s in self._samples)
        if weighted == 0:
            return None
        return weighted / (sum(s.recaptured for s in self._samples) + 1)


def adaptive_interval_s(
    config: PexConfig, *, known: int, estimate: float | None, need_more: bool = True
) -> float:
    """Seconds to wait between two address requests (see the module docstring).

    Args:
        config: gives ``adaptive_min_interval_s`` and ``adaptive_max_interval_s``.
        known: addresses in the book (``K``).
        estimate: the network-size estimate, or ``None`` if unknown (gives the minimum).
        need_more: False once the book holds enough addresses (gives the maximum).
    """
    low, high = config.adaptive_min_interval_s, config.adaptive_max_interval_s
    if not need_more:
        return high
    if estimate is None:
        return low
    size = max(estimate, float(known))
    interval = low * (size + 1.0) / (size - known + 1.0)
    return min(high, max(low, interval))


def v035_growth_interval_s(
    config: PexConfig, *, total_added: int, added: int, available: int
) -> float:
    """v0.35.9's ``calculateNextRequestTime`` growth term, in seconds (behaviour.md §9.1).

    ``min_interval / A * ((T + 1) / (added + 1))**2`` with ``A = max(available, 1)``,
    clamped to ``[adaptive_min_interval_s, adaptive_max_interval_s]``.

    Args:
        config: gives the bounds.
        total_added: addresses added to the book by all answers so far (``T``).
        added: addresses the last answer added.
        available: peers that may be asked (``A``).
    """
    low, high = config.adaptive_min_interval_s, config.adaptive_max_interval_s
    ratio = (max(total_added, 0) + 1.0) / (max(added, 0) + 1.0)
    value = low / max(available, 1) * ratio * ratio
    return min(high, max(low, value))


class RoundRobinScheduler:
    """Whom to ask for addresses next, and when (adaptive strategy).

    Connected peers wait in a FIFO queue. When the request deadline has passed, the first
    queued peer that ``eligible`` accepts (no request outstanding, per-peer gap over) is
    taken out and asked; it returns to the back of the queue when it answers. The
    deadline after a request is the request time plus :func:`adaptive_interval_s`,
    recomputed after each answer. With nobody to ask, it retries after
    ``adaptive_no_peers_retry_s``.

    Args:
        config: PEX settings (``adaptive_*``).
    """

    def __init__(self, config: PexConfig) -> None:
        self.config = config
        self.estimator = NetworkSizeEstimator(config.adaptive_window)
        self._queue: deque[NodeID] = deque()
        self._asked: set[NodeID] = set()
        self._interval_s = config.adaptive_min_interval_s
        self._total_added = 0
        self._last_request_at: datetime | None = None
        self._not_before: datetime | None = None

    @property
    def interval_s(self) -> float:
        """The current interval between requests, in seconds."""
        return self._interval_s

    @property
    def queue(self) -> tuple[NodeID, ...]:
        """Peers waiting for their turn, front first."""
        return tuple(self._queue)

    def add_peer(self, peer_id: NodeID) -> None:
        """A peer connected: it joins the back of the queue."""
        if peer_id not in self._asked and peer_id not in self._queue:
            self._queue.append(peer_id)

    def remove_peer(self, peer_id: NodeID) -> None:
        """A peer disconnected."""
        self._asked.discard(peer_id)
        if peer_id in self._queue:
            self._queue.remove(peer_id)

    def get_timer(self) -> datetime | None:
        """When :meth:`next_request` may next return a peer (``None``: right away)."""
        return self._not_before

    def next_request(
        self, now: datetime, eligible: Callable[[NodeID], bool], *, need_more: bool = True
    ) -> NodeID | None:
        """The peer to ask now, if any; the caller sends it a request at once.

        Args:
            now: current time.
            eligible: True for peers that may be asked now.
            need_more: False once the book is full: nobody is asked and the next try is
                ``adaptive_max_interval_s`` away.
        """
        if self._not_before is not None and now < self._not_before:
            return None
        if not need_more:
            self._not_before = now + timedelta(seconds=self.config.adaptive_max_interval_s)
            return None
        for peer_id in self._queue:
            if eligible(peer_id):
                self._queue.remove(peer_id)
                self._asked.add(peer_id)
                self._last_request_at = now
                self._not_before = now + timedelta(seconds=self._interval_s)
                return peer_id
        self._not_before = now + timedelta(seconds=self.config.adaptive_no_peers_retry_s)
        return None

    def request_not_sent(self, peer_id: NodeID) -> None:
        """The request :meth:`next_request` chose could not be queued: requeue the peer at
        the front, so it keeps its turn."""
        if peer_id in self._asked:
            self._asked.discard(peer_id)
            self._queue.appendleft(peer_id)

    def on_response(
        self,
        peer_id: NodeID,
        *,
        known_before: int,
        received: int,
        recaptured: int,
        known_after: int,
        need_more: bool = True,
    ) -> float:
        """``peer_id`` answered: requeue it, update the estimate and the interval.

        Args:
            peer_id: the peer that answered.
            known_before: book size before the answer.
            received: usable addresses in it (new plus already known).
            recaptured: how many were already known.
            known_after: book size after the answer.
            need_more: whether the book still wants addresses.

        Returns:
            The new interval in seconds.
        """
        if peer_id in self._asked:
            self._asked.discard(peer_id)
            self._queue.append(peer_id)
        self.estimator.observe(known_before, received, recaptured)
        added = max(0, received - recaptured)
        self._total_added += added
        self._interval_s = max(
            adaptive_interval_s(
                self.config,
                known=known_after,
                estimate=self.estimator.estimate(),
                need_more=need_more,
            ),
            v035_growth_interval_s(
                self.config,
                total_added=self._total_added,
                added=added,
                available=len(self._queue),
            ),
        )
        if self._last_request_at is not None:
            self._not_before = self._last_request_at + timedelta(seconds=self._interval_s)
        return self._interval_s
