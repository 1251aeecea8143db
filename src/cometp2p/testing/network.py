"""Helpers to build small loopback networks of Switches in tests and demos."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cometp2p.config import Config, P2PConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.switch import ReconnectPolicy, Switch
from cometp2p.wire.nodeinfo import make_node_info

__all__ = ["FAST_RECONNECT", "loopback_p2p_config", "make_switch"]

FAST_RECONNECT = ReconnectPolicy(
    fast_attempts=50, fast_interval_s=0.05, backoff_attempts=3, backoff_base_s=2.0, jitter_s=0.0
)
"""A reconnect schedule for tests: 50 redials 50 ms apart, no jitter."""


def loopback_p2p_config(**changes: object) -> P2PConfig:
    """A ``[p2p]`` config bound to 127.0.0.1 on an ephemeral port, local-friendly."""
    base = P2PConfig(
        laddr="tcp://127.0.0.1:0",
        addr_book_strict=False,
        allow_duplicate_ip=True,
        handshake_timeout_s=5.0,
        dial_timeout_s=2.0,
        flush_throttle_timeout_s=0.01,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def make_switch(
    reactors: list[tuple[str, Reactor]],
    *,
    chain_id: str = "test-chain",
    moniker: str = "node",
    p2p: P2PConfig | None = None,
    node_key: NodeKey | None = None,
    home: Path | None = None,
    reconnect_policy: ReconnectPolicy = FAST_RECONNECT,
) -> Switch:
    """Build (not start) a Switch with ``reactors`` on a loopback ephemeral port."""
    key = node_key or NodeKey.generate()
    config = Config(home=home or Path("."), moniker=moniker, p2p=p2p or loopback_p2p_config())
    channels = [d.id for _, r in reactors for d in r.get_channels()]
    info = make_node_info(config, key.node_id, chain_id, channels)
    switch = Switch(config.p2p, key, info, reconnect_policy=reconnect_policy, dial_jitter_s=0.0)
    for name, reactor in reactors:
        switch.add_reactor(name, reactor)
    return switch
