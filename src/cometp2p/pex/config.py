"""Settings of the PEXReactor: its timing knobs and the request strategy to use.

CometBFT v0.38 hard-codes most of these (behaviour.md §4.1, §4.7); they are fields here so
tests and small networks can run with short intervals. Defaults reproduce v0.38. The
``strategy`` selects how we ask peers for addresses: v0.38's random peer on each
ensure-peers round, or the v0.35 design's round-robin over a queue of peers with an
interval that adapts to an estimate of the network size (behaviour.md §9.1, seed document
002 "Package PEX").
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Final

from cometp2p.config import P2PConfig
from cometp2p.errors import ConfigError
from cometp2p.pex.addrbook import BAN_TIME_S, MAX_GET_SELECTION

__all__ = [
    "DEFAULT_ENSURE_PEERS_PERIOD_S",
    "DEFAULT_REQUEST_GAP_S",
    "PEX_CHANNEL",
    "PexConfig",
    "RequestStrategy",
]

PEX_CHANNEL: Final = 0x00
"""The PEX channel ID (behaviour.md §4.1)."""

DEFAULT_ENSURE_PEERS_PERIOD_S: Final = 30.0
"""``defaultEnsurePeersPeriod`` of CometBFT v0.38, in seconds."""

DEFAULT_REQUEST_GAP_S: Final = DEFAULT_ENSURE_PEERS_PERIOD_S / 3 + 2.0
"""The shortest gap between two requests we send to one peer, in seconds: 12.

A default v0.38 peer disconnects and bans whoever asks it again within 10 s
(``ensurePeersPeriod / 3``, after two free requests). It measures arrival times, so the
gap keeps 2 s of margin for delivery jitter.
"""

SEED_DISCONNECT_WAIT_S: Final = 28 * 3600.0
"""``SeedDisconnectWaitPeriod`` set by CometBFT's node (behaviour.md §4.1), in seconds."""


class RequestStrategy(enum.Enum):
    """How a non-seed node decides whom to ask for addresses, and when."""

    V038 = "v0.38"
    """CometBFT v0.38 (behaviour.md §4.6): ask a new outbound peer at once, then one random
    connected peer per ensure-peers period while the book needs more addresses."""

    ADAPTIVE = "adaptive"
    """The v0.35 design (behaviour.md §9.1): ask connected peers in turn from a FIFO queue;
    the interval between requests grows as a capture-recapture estimate of the network
    size says our book already covers most of it."""


@dataclass(frozen=True, slots=True)
class PexConfig:
    """Everything the PEXReactor needs besides the Switch's ``[p2p]`` config.

    Durations are seconds. Defaults are CometBFT v0.38's (behaviour.md §4.1, §4.7).

    Attributes:
        strategy: see :class:`RequestStrategy`; default v0.38.
        seed_mode: ``p2p.seed_mode``: crawl the network, answer inbound requesters once
            and disconnect them (behaviour.md §4.7).
        seeds: ``p2p.seeds``: ``id@host:port`` addresses dialed when the book has nothing
            to dial.
        persistent_peers_max_dial_period_s: ``p2p.persistent_peers_max_dial_period``: caps
            the dial back-off for persistent peers (0 = no cap).
        ensure_peers_period_s: how often the dial routine runs (Go: 30 s).
        min_receive_request_interval_s: the shortest accepted gap between two requests
            from one peer (after the two free ones); ``None`` means
            ``ensure_peers_period_s / 3`` as in Go.
        request_gap_s: the shortest gap between two requests *we* send to one peer
            (default 12 s: a default v0.38 peer tolerates one per 10 s, plus a margin).
        max_addrs_per_message: the most addresses we send in one PexAddrs, and accept in
            one; a peer sending more is disconnected and banned (Go: 250 sent, none
            checked on receipt).
        ban_time_s: how long a misbehaving address is banned (Go: 24 h).
        max_attempts_to_dial: failed dials of a non-persistent address before it is
            banned (Go: 16).
        dial_backoff_unit_s: the back-off before redialing after ``n`` failures is
            ``dial_backoff_unit_s * 2**n + U[0, dial_backoff_jitter_s)`` (Go: 1 s, 1 s).
        dial_backoff_jitter_s: see ``dial_backoff_unit_s``.
        crawl_period_s: seed mode: how often to crawl (Go: 30 s).
        min_time_between_crawls_s: seed mode: do not crawl one address more often
            (Go: 2 min).
        crawl_retention_s: seed mode: forget crawl records older than this (Go: 24 h).
        seed_disconnect_wait_s: seed mode: keep an outbound crawled peer at least this
            long before disconnecting it (Go: 28 h).
        save_interval_s: how often ``addrbook.json`` is saved, when the reactor has a
            file (Go: 2 min); it is also saved on stop.
        adaptive_min_interval_s: adaptive strategy: the shortest interval between two
            requests (v0.35: 200 ms).
        adaptive_max_interval_s: adaptive strategy: the longest interval, used once the
            book is full or covers the estimated network (v0.35: 10 min).
        adaptive_no_peers_retry_s: adaptive strategy: wait when no peer can be asked
            (v0.35: 1 s).
        adaptive_window: adaptive strategy: how many recent responses feed the
            network-size estimate.
        seed_fallback_s: a node with no outbound peer for this long dials its seeds
            again, even while its book holds (possibly dead) addresses; ``None``: two
            ensure-peers periods (see :attr:`seed_fallback_after_s`).

    Raises:
        ConfigError: on construction, if a duration is negative or not finite where a
            positive one is needed, or a count is below 1.
    """

    strategy: RequestStrategy = RequestStrategy.V038
    seed_mode: bool = False
    seeds: tuple[str, ...] = ()
    persistent_peers_max_dial_period_s: float = 0.0
    ensure_peers_period_s: float = DEFAULT_ENSURE_PEERS_PERIOD_S
    min_receive_request_interval_s: float | None = None
    request_gap_s: float = DEFAULT_REQUEST_GAP_S
    max_addrs_per_message: int = MAX_GET_SELECTION
    ban_time_s: float = BAN_TIME_S
    max_attempts_to_dial: int = 16
    dial_backoff_unit_s: float = 1.0
    dial_backoff_jitter_s: float = 1.0
    crawl_period_s: float = 30.0
    min_time_between_crawls_s: float = 120.0
    crawl_retention_s: float = 24 * 3600.0
    seed_disconnect_wait_s: float = SEED_DISCONNECT_WAIT_S
    save_interval_s: float = 120.0
    adaptive_min_interval_s: float = 0.2
    adaptive_max_interval_s: float = 600.0
    adaptive_no_peers_retry_s: float = 1.0
    adaptive_window: int = 8
    seed_fallback_s: float | None = None

    def __post_init__(self) -> None:
        positive = {
            "ensure_peers_period_s": self.ensure_peers_period_s,
            "crawl_period_s": self.crawl_period_s,
            "save_interval_s": self.save_interval_s,
            "adaptive_min_interval_s": self.adaptive_min_interval_s,
            "adaptive_max_interval_s": self.adaptive_max_interval_s,
            "adaptive_no_peers_retry_s": self.adaptive_no_peers_retry_s,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"pex {name}: expected a positive number of seconds, got {value}")
        non_negative = {
            "persistent_peers_max_dial_period_s": self.persistent_peers_max_dial_period_s,
            "request_gap_s": self.request_gap_s,
            "ban_time_s": self.ban_time_s,
            "dial_backoff_unit_s": self.dial_backoff_unit_s,
            "dial_backoff_jitter_s": self.dial_backoff_jitter_s,
            "min_time_between_crawls_s": self.min_time_between_crawls_s,
            "crawl_retention_s": self.crawl_retention_s,
            "seed_disconnect_wait_s": self.seed_disconnect_wait_s,
        }
        if self.min_receive_request_interval_s is not None:
            non_negative["min_receive_request_interval_s"] = self.min_receive_request_interval_s
        if self.seed_fallback_s is not None:
            non_negative["seed_fallback_s"] = self.seed_fallback_s
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"pex {name}: expected a non-negative number of seconds, got {value}"
                )
        if self.adaptive_max_interval_s < self.adaptive_min_interval_s:
            raise ConfigError(
                f"pex adaptive_max_interval_s ({self.adaptive_max_interval_s}) must be >= "
                f"adaptive_min_interval_s ({self.adaptive_min_interval_s})"
            )
        for name, count in (
            ("max_addrs_per_message", self.max_addrs_per_message),
            ("max_attempts_to_dial", self.max_attempts_to_dial),
            ("adaptive_window", self.adaptive_window),
        ):
            if count < 1:
                raise ConfigError(f"pex {name}: expected at least 1, got {count}")

    @property
    def seed_fallback_after_s(self) -> float:
        """Seconds without an outbound peer after which the seeds are dialed again
        whatever the book holds (cometp2p; Go dials seeds only when the book yields no
        candidate): ``seed_fallback_s``, default two ensure-peers periods."""
        if self.seed_fallback_s is not None:
            return self.seed_fallback_s
        return 2 * self.ensure_peers_period_s

    @property
    def receive_request_interval_s(self) -> float:
        """The effective minimum gap between accepted requests from one peer, in seconds."""
        if self.min_receive_request_interval_s is not None:
            return self.min_receive_request_interval_s
        return self.ensure_peers_period_s / 3

    @classmethod
    def from_p2p(cls, p2p: P2PConfig, **changes: object) -> PexConfig:
        """The PEX settings of a ``[p2p]`` section, with ``changes`` applied on top.

        Takes ``seed_mode``, ``seeds``, ``persistent_peers_max_dial_period`` and
        ``pex_strategy``; every other field keeps its default unless given in ``changes``.

        Raises:
            ConfigError: as the constructor; also for an unknown field in ``changes``.
        """
        base = cls(
            seed_mode=p2p.seed_mode,
            seeds=tuple(p2p.seeds),
            persistent_peers_max_dial_period_s=p2p.persistent_peers_max_dial_period_s,
            strategy=RequestStrategy(p2p.pex_strategy),
        )
        try:
            return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"pex settings: {exc}") from exc
