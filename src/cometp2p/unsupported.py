"""Settings we parse but do not act on: say so at start, never ignore them silently.

A CometBFT home's ``config.toml`` carries keys for parts cometp2p does not have (an ABCI
app, an RPC server, a transaction indexer) and test aids. :func:`unsupported_settings`
lists each such key whose value would change what a CometBFT node does, with the reason;
:class:`~cometp2p.node.Node` logs them as warnings when it starts. Keys left at their
defaults are not reported: a fresh ``cometbft init`` home starts quietly.
"""

from __future__ import annotations

import logging

from cometp2p.config import Config, FuzzConnConfig, InstrumentationConfig, P2PConfig

__all__ = ["log_unsupported_settings", "unsupported_settings"]

logger = logging.getLogger(__name__)


def unsupported_settings(config: Config) -> list[str]:
    """One line per setting of ``config`` that has no effect here, naming the key.

    The list is empty for a default configuration.
    """
    base = Config(home=config.home)
    p2p, default_p2p = config.p2p, P2PConfig()
    found: list[str] = []
    if config.filter_peers:
        found.append(
            "filter_peers = true: there is no ABCI application to ask; peers are not filtered"
        )
    if config.rpc_laddr != base.rpc_laddr:
        found.append(
            f"[rpc] laddr = {config.rpc_laddr!r}: cometp2p serves no RPC (and advertises none)"
        )
    if config.tx_index_indexer != base.tx_index_indexer:
        found.append(
            f"[tx_index] indexer = {config.tx_index_indexer!r}: cometp2p indexes no "
            "transactions (NodeInfo says tx_index off)"
        )
    if p2p.test_dial_fail:
        found.append("p2p.test_dial_fail = true: not supported; dials are made normally")
    if not p2p.test_fuzz:
        fuzz_keys = []
        if p2p.test_fuzz_config != FuzzConnConfig():
            fuzz_keys.append("[p2p.test_fuzz_config]")
        if p2p.test_fuzz_inbound != default_p2p.test_fuzz_inbound:
            fuzz_keys.append("p2p.test_fuzz_inbound")
        if p2p.test_fuzz_activate_after_s != default_p2p.test_fuzz_activate_after_s:
            fuzz_keys.append("p2p.test_fuzz_activate_after")
        if fuzz_keys:
            found.append(f"{', '.join(fuzz_keys)} set but p2p.test_fuzz = false: no effect")
    instrumentation = config.instrumentation
    if instrumentation.max_open_connections != InstrumentationConfig().max_open_connections:
        found.append(
            "[instrumentation] max_open_connections = "
            f"{instrumentation.max_open_connections}: the metrics server does not cap connections"
        )
    return found


def log_unsupported_settings(config: Config) -> list[str]:
    """Log :func:`unsupported_settings` as warnings; returns them."""
    found = unsupported_settings(config)
    for line in found:
        logger.warning("config %s: %s", config.config_path, line)
    return found
