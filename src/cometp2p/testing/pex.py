"""PEX settings for loopback networks in tests and benchmarks."""

from __future__ import annotations

from cometp2p.pex.config import PexConfig

__all__ = ["fast_pex"]


def fast_pex(**changes: object) -> PexConfig:
    """PEX settings for loopback networks: every period in tens or hundreds of milliseconds.

    Our request gap (0.1 s) stays above the peers' receive interval (0.05 s) so that
    delivery jitter never makes an honest request look like a flood.

    Args:
        **changes: :class:`PexConfig` fields to override.

    Raises:
        ConfigError: an override is out of range (as :class:`PexConfig` checks).
        TypeError: an unknown field.
    """
    base: dict[str, object] = {
        "ensure_peers_period_s": 0.3,
        "min_receive_request_interval_s": 0.05,
        "request_gap_s": 0.1,
        "dial_backoff_unit_s": 0.05,
        "dial_backoff_jitter_s": 0.05,
        "crawl_period_s": 0.3,
        "min_time_between_crawls_s": 1.0,
        "adaptive_min_interval_s": 0.05,
        "adaptive_no_peers_retry_s": 0.1,
        "save_interval_s": 0.2,
    }
    base.update(changes)
    return PexConfig(**base)  # type: ignore[arg-type]
