"""A p2p node: a Switch, its reactors and its metrics endpoint, built from a home.

This is what ``cometp2p start`` and ``cometp2p localnet`` run, and the supported way for
an application to run its own reactors::

    node = Node.from_home("~/.cometp2p", reactors=[("shout", ShoutReactor())])
    async with node:          # listens, dials persistent peers, serves metrics
        ...                   # node.switch.peers, node.listen_address
    # or: await node.run(stop_event)

Reactors are added at construction or with :meth:`Node.add_reactor` before the node
starts; adding one later raises :class:`~cometp2p.errors.ReactorTooLateError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from prometheus_client import Gauge

from cometp2p.config import Config, load_chain_id, load_config
from cometp2p.crypto.keys import NodeKey, load_node_key
from cometp2p.errors import ConfigError, LocalProtocolError, ReactorTooLateError
from cometp2p.metrics import P2PMetrics
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.switch import Switch
from cometp2p.unsupported import log_unsupported_settings
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import make_node_info

__all__ = ["Node", "default_reactors", "serve_metrics"]

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from cometp2p.upnp.mapper import PortMapper

logger = logging.getLogger(__name__)

_GAUGE_REFRESH_S = 0.2


def serve_metrics(metrics: P2PMetrics, listen_addr: str) -> int:
    """Serve ``metrics`` over HTTP at ``listen_addr`` (``[host]:port``, e.g. ``:26660``)
    for the rest of the process (a :class:`Node` stops its own server on stop).

    Port 0 binds an ephemeral port.

    Returns:
        The bound TCP port.

    Raises:
        ConfigError: the address is malformed.
        OSError: the port cannot be bound (the message names the address).
    """
    return int(_start_metrics_server(metrics, listen_addr).server_port)


def _start_metrics_server(metrics: P2PMetrics, listen_addr: str) -> WSGIServer:
    from prometheus_client import start_http_server

    host, sep, port = listen_addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"prometheus_listen_addr must be [host]:port, got {listen_addr!r}")
    try:
        server, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot serve metrics on {listen_addr}: {exc.strerror or exc}"
        ) from exc
    return server


def default_reactors(
    config: Config, *, ensure_peers_period_s: float | None = None
) -> list[tuple[str, Reactor]]:
    """The reactors ``cometp2p start`` runs: PEX (with the address book) when ``[p2p] pex``,
    then the trust metrics when ``[trust] enabled``.

    Args:
        config: the node configuration.
        ensure_peers_period_s: overrides PEX's 30 s ensure-peers period (``localnet``).

    Raises:
        AddrBookFileError: the address book file exists but is unusable.
        ConfigError: the ``[trust]`` metric settings are invalid.
    """
    reactors = _pex_reactors(config, ensure_peers_period_s)
    if config.trust.enabled:
        from cometp2p.trust.reactor import TrustReactor

        reactors.append(("TRUST", TrustReactor.from_config(config)))
    return reactors


def _pex_reactors(config: Config, ensure_peers_period_s: float | None) -> list[tuple[str, Reactor]]:
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
    """A Switch with its reactors and metrics, built from a :class:`Config`.

    Args:
        config: the loaded home configuration (``[p2p]`` and friends).
        node_key: our identity.
        chain_id: the network (NodeInfo ``network``).
        reactors: ``(name, reactor)`` pairs, registered in order.

    Attributes:
        switch: the :class:`Switch` (peers, dialing, broadcast).
        metrics: the Prometheus metrics of this node.
        metrics_port: the bound metrics port once started (``None`` if not served).

    Raises:
        ConfigError: our NodeInfo would be invalid (e.g. a bad moniker).
        LocalProtocolError: two reactors share a name or a channel.
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
        self.metrics = P2PMetrics(chain_id, namespace=config.instrumentation.namespace)
        node_info = make_node_info(config, node_key.node_id, chain_id, [])
        self.switch = Switch(config.p2p, node_key, node_info, metrics=self.metrics)
        self.metrics_port: int | None = None
        self._metrics_server: WSGIServer | None = None
        self._book_task: asyncio.Task[None] | None = None
        self._book_size = Gauge(
            "addrbook_size",
            "Addresses in the address book (cometp2p extension).",
            ["chain_id"],
            namespace=config.instrumentation.namespace,
            subsystem="p2p",
            registry=self.metrics.registry,
        ).labels(chain_id)
        for name, reactor in reactors:
            self.add_reactor(name, reactor)
        self.upnp: PortMapper | None = None
        """With ``[p2p] upnp``: the listen port's mapping on the gateway while running."""
        self.upnp_options: dict[str, Any] = {}
        """Keyword arguments for :class:`~cometp2p.upnp.mapper.PortMapper` (lease_s, ...)."""

    @classmethod
    def from_home(
        cls,
        home: str | Path,
        *,
        chain_id: str | None = None,
        reactors: Sequence[tuple[str, Reactor]] = (),
        pex: bool = True,
    ) -> Node:
        """Build the node of an initialised home (``cometp2p init`` or ``cometbft init``).

        Args:
            home: the home directory (``~`` is expanded).
            chain_id: the network; default: ``config/genesis.json``'s ``chain_id``.
            reactors: your reactors, registered after the default ones.
            pex: also run the PEX reactor when ``[p2p] pex`` is set.

        Raises:
            ConfigError: the config is invalid, or no chain ID is known.
            KeyFileError: ``config/node_key.json`` is missing or unusable.
        """
        config = load_config(Path(home).expanduser())
        network = chain_id or load_chain_id(config.home, config.genesis_file)
        if network is None:
            raise ConfigError(f"{config.genesis_path} is missing: pass chain_id")
        key = load_node_key(config.node_key_path)
        defaults = default_reactors(config) if pex else []
        return cls(config, key, network, [*defaults, *reactors])

    def _refresh_node_info(self) -> None:
        """Advertise every registered reactor's channels (before start only)."""
        channels = [desc.id for desc in self.switch.channels]
        info = make_node_info(self.config, self.node_key.node_id, self.chain_id, channels)
        self.switch.node_info = info
        self.switch.transport.node_info = info

    def add_reactor(self, name: str, reactor: Reactor) -> Reactor:
        """Register ``reactor`` under ``name``; its channels are advertised in our NodeInfo.

        Returns:
            ``reactor``.

        Raises:
            ReactorTooLateError: the node (its Switch) already started.
            LocalProtocolError: the name or one of its channels is taken.
        """
        if self.switch.is_running:
            raise ReactorTooLateError(
                f"reactor {name!r} added after the node started; add it before start()"
            )
        self.switch.add_reactor(name, reactor)
        self._refresh_node_info()
        return reactor

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """The bound ``(host, port)`` once started."""
        return self.switch.listen_address

    @property
    def address(self) -> NetAddress:
        """``id@host:port`` to dial this node at (its bound listen address).

        Raises:
            LocalProtocolError: the node is not started.
        """
        if self.switch.listen_address is None:
            raise LocalProtocolError("the node is not listening; start it first")
        host, port = self.switch.listen_address
        host = f"[{host}]" if ":" in host else host
        return NetAddress.parse(f"{self.node_key.node_id}@{host}:{port}", resolve=False)

    def with_p2p(self, **changes: object) -> None:
        """Replace ``[p2p]`` settings before start (used by CLI flags)."""
        self.config = dataclasses.replace(
            self.config,
            p2p=dataclasses.replace(self.config.p2p, **changes),  # type: ignore[arg-type]
        )
        self.switch.config = self.config.p2p

    async def start(self) -> None:
        """Serve metrics (if ``[instrumentation] prometheus``), then start the Switch.

        Settings of the config that have no effect here are logged first
        (:func:`cometp2p.unsupported.log_unsupported_settings`).

        Raises:
            OSError: the listen or metrics address cannot be bound (the message names it).
            LocalProtocolError: already started.
        """
        log_unsupported_settings(self.config)
        # Reactors added straight to the Switch after construction are advertised too.
        self._refresh_node_info()
        if self.config.instrumentation.prometheus and self._metrics_server is None:
            self._metrics_server = _start_metrics_server(
                self.metrics, self.config.instrumentation.prometheus_listen_addr
            )
            self.metrics_port = int(self._metrics_server.server_port)
        try:
            if self.config.p2p.upnp and self.upnp is None:
                self.upnp = await self._start_upnp()
            await self.switch.start()
        except BaseException:
            await self._stop_upnp()
            self._stop_metrics_server()
            raise
        self._book_task = asyncio.create_task(self._refresh_book_size())
        logger.info(
            "node %s started on %s (network %s)",
            self.node_key.node_id,
            self.switch.node_info.listen_addr,
            self.chain_id,
        )

    async def stop(self) -> None:
        """Stop the Switch (every peer and reactor). Idempotent."""
        if self._book_task is not None:
            self._book_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._book_task
            self._book_task = None
        if self.switch.is_running:
            await self.switch.stop()
            logger.info("node %s stopped", self.node_key.node_id)
        await self._stop_upnp()
        self._stop_metrics_server()

    async def _start_upnp(self) -> PortMapper | None:
        """Map the listen port on the UPnP gateway; advertise its external IP unless
        ``external_address`` is set (behaviour.md §7). None, logged once, on failure."""
        from cometp2p.upnp.mapper import PortMapper

        host, _, port = self.config.p2p.laddr.split("://")[-1].rpartition(":")
        if not port.isdigit() or int(port) == 0:
            logger.warning("upnp disabled: p2p.laddr %r has no fixed port", self.config.p2p.laddr)
            return None
        options = dict(self.upnp_options)
        if host.count(".") == 3 and host != "0.0.0.0":  # bound to one IPv4: map that one
            options.setdefault("source_ip", host)
        mapper = PortMapper(int(port), **options)
        external_ip = await mapper.start()
        if external_ip is None:
            return None
        if not self.config.p2p.external_address:
            self.switch.node_info = dataclasses.replace(
                self.switch.node_info, listen_addr=f"tcp://{external_ip}:{port}"
            )
            logger.info("upnp: advertising tcp://%s:%s", external_ip, port)
        return mapper

    async def _stop_upnp(self) -> None:
        mapper, self.upnp = self.upnp, None
        if mapper is not None:
            await mapper.stop()

    def _stop_metrics_server(self) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.shutdown()  # bounded: the serving thread polls every 0.5 s
            server.server_close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _refresh_book_size(self) -> None:
        while True:
            book = getattr(self.switch.reactor("PEX"), "book", None)
            self._book_size.set(len(book) if book is not None else 0)
            await asyncio.sleep(_GAUGE_REFRESH_S)

    async def run(
        self, stop: asyncio.Event, on_ready: Callable[[Node], None] | None = None
    ) -> None:
        """Start, call ``on_ready(self)`` once listening, run until ``stop`` is set, stop.

        Raises:
            OSError: the listen or metrics address cannot be bound.
        """
        async with self:
            if on_ready is not None:
                on_ready(self)
            await stop.wait()
