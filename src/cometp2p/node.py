"""A p2p node: a Switch, its reactors and its metrics endpoint, built from a home.

This is what ``cometp2p start`` and ``cometp2p localnet`` run. Applications that want
their own reactors build a :class:`Node` and add them before :meth:`Node.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence

from prometheus_client import Gauge

from cometp2p.config import Config
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import ConfigError
from cometp2p.metrics import P2PMetrics
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.switch import Switch
from cometp2p.unsupported import log_unsupported_settings
from cometp2p.wire.nodeinfo import make_node_info

__all__ = ["Node", "default_reactors", "serve_metrics"]

logger = logging.getLogger(__name__)

_GAUGE_REFRESH_S = 0.2


def serve_metrics(metrics: P2PMetrics, listen_addr: str) -> None:
    """Serve ``metrics`` over HTTP at ``listen_addr`` (``[host]:port``, e.g. ``:26660``).

    Raises:
        ConfigError: the address is malformed.
        OSError: the port cannot be bound.
    """
    from prometheus_client import start_http_server

    host, sep, port = listen_addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"prometheus_listen_addr must be [host]:port, got {listen_addr!r}")
    start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)


def default_reactors(
    config: Config, *, ensure_peers_period_s: float | None = None
) -> list[tuple[str, Reactor]]:
    """The reactors ``cometp2p start`` runs: PEX (with the address book) when ``[p2p] pex``.

    Args:
        config: the node configuration.
        ensure_peers_period_s: overrides PEX's 30 s ensure-peers period (``localnet``).

    Raises:
        AddrBookFileError: the address book file exists but is unusable.
    """
    if not config.p2p.pex:
        return []
    from cometp2p.pex.config import PexConfig
    from cometp2p.pex.reactor import PEXReactor

    changes: dict[str, object] = {}
    if ensure_peers_period_s is not None:
        changes["ensure_peers_period_s"] = ensure_peers_period_s
    pex = PexConfig.from_p2p(config.p2p, **changes)
    return [("PEX", PEXReactor.from_config(config, pex=pex))]


class Node:
    """Assembles a Switch with reactors from a :class:`Config`.

    Args:
        config: the loaded home configuration (``[p2p]`` and friends).
        node_key: our identity.
        chain_id: the network (NodeInfo ``network``).
        reactors: ``(name, reactor)`` pairs, registered in order.
    """

    def __init__(
        self,
        config: Config,
        node_key: NodeKey,
        chain_id: str,
        reactors: Sequence[tuple[str, Reactor]] = (),
    ) -> None:
        self.config = config
        self.node_key = node_key
        self.chain_id = chain_id
        channels = [desc.id for _, r in reactors for desc in r.get_channels()]
        node_info = make_node_info(config, node_key.node_id, chain_id, channels)
        self.metrics = P2PMetrics(chain_id, namespace=config.instrumentation.namespace)
        self.switch = Switch(config.p2p, node_key, node_info, metrics=self.metrics)
        for name, reactor in reactors:
            self.switch.add_reactor(name, reactor)

    def with_p2p(self, **changes: object) -> None:
        """Replace ``[p2p]`` settings before start (used by CLI flags)."""
        self.config = dataclasses.replace(
            self.config,
            p2p=dataclasses.replace(self.config.p2p, **changes),  # type: ignore[arg-type]
        )
        self.switch.config = self.config.p2p

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, run until ``stop`` is set, then stop cleanly.

        Settings of the config that have no effect here are logged first
        (:func:`cometp2p.unsupported.log_unsupported_settings`).
        """
        log_unsupported_settings(self.config)
        if self.config.instrumentation.prometheus:
            serve_metrics(self.metrics, self.config.instrumentation.prometheus_listen_addr)
        book_size = Gauge(
            "addrbook_size",
            "Addresses in the address book (cometp2p extension).",
            ["chain_id"],
            namespace=self.config.instrumentation.namespace,
            subsystem="p2p",
            registry=self.metrics.registry,
        ).labels(self.chain_id)
        async with self.switch:
            logger.info(
                "node %s started on %s (network %s)",
                self.node_key.node_id,
                self.switch.node_info.listen_addr,
                self.chain_id,
            )
            while not stop.is_set():
                book = getattr(self.switch.reactor("PEX"), "book", None)
                book_size.set(len(book) if book is not None else 0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_GAUGE_REFRESH_S):
                        await stop.wait()
        logger.info("node %s stopped", self.node_key.node_id)
