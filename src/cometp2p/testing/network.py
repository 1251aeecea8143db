"""Helpers to build small loopback networks of Switches in tests and demos.

Everything binds 127.0.0.1 only. Nothing here sleeps: connecting waits on the reactors'
events, each wait bounded by the caller's ``asyncio.timeout``.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from pathlib import Path

from cometp2p.config import Config, P2PConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.metrics import P2PMetrics
from cometp2p.sansio.mconnection import MConnectionConfig
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.switch import ReconnectPolicy, Switch
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import make_node_info

__all__ = [
    "FAST_RECONNECT",
    "LOOPBACK",
    "connect_all",
    "free_loopback_port",
    "loopback_p2p_config",
    "make_switch",
    "switch_address",
]

LOOPBACK = "127.0.0.1"

FAST_RECONNECT = ReconnectPolicy(
    fast_attempts=50,
    fast_interval_s=0.05,
    backoff_attempts=3,
    backoff_base_s=2.0,
    jitter_s=0.0,
    incompatible_cooldown_s=1.0,
)
"""A reconnect schedule for tests: 50 redials 50 ms apart, no jitter, 1 s cooldown."""


def loopback_p2p_config(**changes: object) -> P2PConfig:
    """A ``[p2p]`` config bound to 127.0.0.1 on an ephemeral port, local-friendly."""
    base = P2PConfig(
        laddr=f"tcp://{LOOPBACK}:0",
        addr_book_strict=False,
        allow_duplicate_ip=True,
        handshake_timeout_s=5.0,
        dial_timeout_s=2.0,
        flush_throttle_timeout_s=0.01,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for a node that must restart
    on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def make_switch(
    reactors: Sequence[tuple[str, Reactor]],
    *,
    chain_id: str = "test-chain",
    moniker: str = "node",
    p2p: P2PConfig | None = None,
    node_key: NodeKey | None = None,
    home: Path | None = None,
    reconnect_policy: ReconnectPolicy = FAST_RECONNECT,
    mconnection_config: MConnectionConfig | None = None,
    metrics: P2PMetrics | None = None,
    extra_channels: Sequence[int] = (),
) -> Switch:
    """Build (not start) a Switch with ``reactors`` on a loopback ephemeral port.

    Args:
        reactors: ``(name, reactor)`` pairs, registered in order.
        chain_id: the NodeInfo network.
        moniker: the NodeInfo moniker.
        p2p: the ``[p2p]`` config (default :func:`loopback_p2p_config`).
        node_key: the identity (default: a fresh key).
        home: the home directory (only used for relative paths).
        reconnect_policy: the persistent-peer schedule (default :data:`FAST_RECONNECT`).
        mconnection_config: MConnection override (e.g. a short ping interval).
        metrics: the metrics (default: a private registry).
        extra_channels: channel IDs advertised in the NodeInfo without a reactor.
    """
    key = node_key or NodeKey.generate()
    config = Config(home=home or Path("."), moniker=moniker, p2p=p2p or loopback_p2p_config())
    channels = [d.id for _, r in reactors for d in r.get_channels()] + list(extra_channels)
    info = make_node_info(config, key.node_id, chain_id, channels)
    switch = Switch(
        config.p2p,
        key,
        info,
        metrics=metrics,
        reconnect_policy=reconnect_policy,
        mconnection_config=mconnection_config,
        dial_jitter_s=0.0,
    )
    for name, reactor in reactors:
        switch.add_reactor(name, reactor)
    return switch


def switch_address(switch: Switch) -> NetAddress:
    """``id@127.0.0.1:port`` of a started Switch.

    Raises:
        RuntimeError: the Switch is not listening.
    """
    if switch.listen_address is None:
        raise RuntimeError("the switch is not listening; start it first")
    host, port = switch.listen_address
    return NetAddress.parse(f"{switch.node_id}@{host}:{port}", resolve=False)


async def connect_all(switches: Sequence[Switch]) -> list[Peer]:
    """Dial every pair once (the lower index dials the higher): a full mesh.

    Returns:
        The outbound peers, in dial order.
    """
    pairs = [(d, t) for i, d in enumerate(switches) for t in switches[i + 1 :]]
    return [await d.dial_peer_with_address(switch_address(t)) for d, t in pairs]
