"""The Switch: accepts and dials peers and routes each Channel to its Reactor.

Follows behaviour.md §1 (v0.38 Switch) with the quirks fixed:

* reactors start and receive peers in registration order (not map order);
* ``handshake_timeout`` and ``dial_timeout`` from config are honoured (Q1.1);
* conn and peer filters share one ``filter_timeout_s`` per connection (Q1.2);
* a peer admitted while the Switch stops is closed, not leaked (Q1.3);
* an unexpected accept error is logged, never fatal (Q1.5);
* the duplicate-ID and inbound-limit checks and the insertion into the peer set happen
  in one step without a suspension point, so concurrent handshakes cannot both pass;
* a peer that refused us (or that we refused) as *incompatible* is cooled down: no dial
  to its ID is attempted meanwhile, and a persistent one skips the fast phase of the
  reconnect schedule (tendermint issue #6604); one that turns out to be ourselves is
  never redialed. The cooldown starts short (``ReconnectPolicy.incompatible_cooldown_s``,
  5 s) and doubles with each refusal in a row up to ``incompatible_cooldown_max_s``
  (300 s), so an operator who fixes a chain ID is not ignored for minutes; the reason
  is logged at INFO on the dialing side (issue #12);
* the first redial of the reconnect schedule has no random delay, later ones have;
* a persistent peer whose connection died less than ``ReconnectPolicy.short_lived_s``
  after it was made is redialed only after a wait that doubles with each such death in
  a row (``short_lived_backoff_s`` up to ``short_lived_backoff_max_s``): a link that
  breaks at once (say, on a packet the peer cannot take) no longer makes hundreds of
  full handshakes a minute (issue #12).

The Switch is composed of parts with one job each, which it owns: the peer registry
(:mod:`.registry`), admission checks (:mod:`.admission`), dialing with cooldowns and
reconnect loops (:mod:`.dialer`, schedule in :mod:`.reconnect`), the per-peer consumer
tasks (:mod:`.consumers`) and peer removal in Go's order (:mod:`.removal`); reactors
wait on its started/stopped events (:mod:`.lifecycle`). Its public methods keep their
names and delegate to those parts.

Every task the Switch starts is owned by an ``asyncio.TaskGroup`` (structured
concurrency, :mod:`.tasks`), each run by a supervisor task from :meth:`Switch.start` to
:meth:`Switch.stop`: one group for dials and reconnect loops (``_spawn``), one for the
tasks of all peers (:mod:`.consumers`) and one for peer removals (:mod:`.removal`). A
child's unexpected exception is logged and never cancels its group. A consumer that
stops its own peer hands the removal to the removal group, outside its own group, and
waits only for that removal, so it cannot deadlock. :meth:`Switch.stop` closes the
dial group, removes every peer, then closes the peer and removal groups: no task of
the Switch outlives it. Starting and stopping step by step is :mod:`.runner`'s job.

Use it as an async context manager::

    switch = Switch(config, node_key, node_info)
    switch.add_reactor("echo", EchoReactor())   # before start
    async with switch:
        ...
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Self

from cometp2p.aio.transport import (
    DEFAULT_FILTER_TIMEOUT_S,
    Transport,
    UpgradedConnection,
)
from cometp2p.config import P2PConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import CometP2PError, ReactorTooLateError
from cometp2p.metrics import P2PMetrics
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch import admission
from cometp2p.switch.admission import PeerFilter
from cometp2p.switch.consumers import PeerTasks
from cometp2p.switch.dialer import AlreadyConnectedError, Dialer
from cometp2p.switch.lifecycle import Lifecycle
from cometp2p.switch.peer import Peer, broadcast
from cometp2p.switch.reactor import Envelope, Reactor, ReactorTable
from cometp2p.switch.reconnect import ReconnectPolicy, ReconnectSchedule
from cometp2p.switch.registry import PeerRegistry
from cometp2p.switch.removal import PeerRemover
from cometp2p.switch.runner import SwitchRunner
from cometp2p.switch.tasks import TaskSupervisor
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = [
    "AlreadyConnectedError",
    "PeerFilter",
    "ReconnectPolicy",
    "ReconnectSchedule",
    "Switch",
]

logger = logging.getLogger(__name__)


class Switch:
    """Connects peers and routes messages between them and the reactors.

    Args:
        config: the ``[p2p]`` configuration. It is read again by :meth:`start`, so it
            may be replaced (``switch.config = ...``) until then.
        node_key: our identity.
        node_info: our NodeInfo; its ``channels`` should list every reactor's channels.
        metrics: Prometheus metrics; a private registry is used when omitted.
        rng: randomness for dial jitter (injected for reproducible tests).
        reconnect_policy: the persistent-peer redial schedule.
        mconnection_config: overrides the MConnection settings derived from ``config``
            (e.g. a short ``ping_interval_s``).
        dial_jitter_s: upper bound of the random wait before each dial of
            :meth:`dial_peers_async` (CometBFT: 3 s).
        peer_metrics_interval_s: how often each peer's ``peer_pending_send_bytes`` gauge
            is refreshed (CometBFT: 10 s).
        filter_timeout_s: bound on the conn filters, and separately on the peer
            filters, of one connection (CometBFT: 5 s).

    Attributes:
        peers: the connected peers.
        peer_filters: ``async filter(peers, peer)`` callables run before a peer is added;
            one that raises refuses the peer with reason ``FILTERED``.
        transport: the :class:`Transport`; its ``conn_filters`` list may be extended.
        listen_address: the bound ``(host, port)`` once started.
        self_addresses: addresses found to be ourselves (never dialed again).
        lifecycle: ``lifecycle.started`` is set while running (after the listener is
            up), ``lifecycle.stopped`` once stopped: reactors wait on these.
        on_peer_rejected: called with the error of every refused inbound connection.
        delivery_observers: ``observer(envelope)`` callables told of every message a
            reactor's ``receive`` handled without error (the trust metric's good events).
    """

    def __init__(
        self,
        config: P2PConfig,
        node_key: NodeKey,
        node_info: NodeInfo,
        *,
        metrics: P2PMetrics | None = None,
        rng: random.Random | None = None,
        reconnect_policy: ReconnectPolicy | None = None,
        mconnection_config: MConnectionConfig | None = None,
        dial_jitter_s: float = 3.0,
        peer_metrics_interval_s: float = 10.0,
        filter_timeout_s: float = DEFAULT_FILTER_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.node_key = node_key
        self.node_info = node_info
        self.metrics = metrics if metrics is not None else P2PMetrics(node_info.network)
        self.rng = rng if rng is not None else random.Random()
        self.reconnect_policy = reconnect_policy or ReconnectPolicy()
        self._mconnection_config = mconnection_config
        self.dial_jitter_s = dial_jitter_s
        self.peer_metrics_interval_s = peer_metrics_interval_s
        self.filter_timeout_s = filter_timeout_s
        self.registry = PeerRegistry()
        self.peers = self.registry.peers
        self.peer_filters: list[PeerFilter] = []
        self._reactor_table = ReactorTable()
        self._reactors = self._reactor_table.by_name
        self._reactor_by_channel = self._reactor_table.by_channel
        self._channels = self._reactor_table.channels
        self.transport = Transport(node_key, node_info, filter_timeout_s=filter_timeout_s)
        self._running = False
        self.lifecycle = Lifecycle()
        self._tasks = TaskSupervisor("switch")
        self.dialer = Dialer(self)
        self._peer_tasks = PeerTasks(self)
        self._remover = PeerRemover(self, self._peer_tasks)
        self._admitter = admission.Admitter(self, self._peer_tasks)
        self._runner = SwitchRunner(
            self, self._tasks, self._peer_tasks, self._remover, self._admitter
        )
        self._runner.configure_transport()
        self.listen_address: tuple[str, int] | None = None
        self.self_addresses: set[NetAddress] = set()
        self.on_peer_rejected: Callable[[CometP2PError], None] | None = None
        self.delivery_observers: list[Callable[[Envelope], None]] = []
        self.add_unconditional_peer_ids(config.unconditional_peer_ids)
        self.add_private_peer_ids(config.private_peer_ids)

    @property
    def mconnection_config(self) -> MConnectionConfig:
        """The settings of every new MConnection (the override, else from ``config``)."""
        if self._mconnection_config is not None:
            return self._mconnection_config
        return MConnectionConfig.from_p2p(self.config)

    @mconnection_config.setter
    def mconnection_config(self, value: MConnectionConfig | None) -> None:
        self._mconnection_config = value

    # ------------------------------------------------------------------ reactors

    def add_reactor(self, name: str, reactor: Reactor) -> Reactor:
        """Register ``reactor`` under ``name`` and route its channels to it.

        Returns:
            ``reactor``.

        Raises:
            LocalProtocolError: a channel ID is already owned by another reactor (or
                declared twice by this one), or the name is taken.
            ReactorTooLateError: the Switch is already running.
        """
        if self._running:
            raise ReactorTooLateError(
                f"add_reactor must be called before the Switch starts (reactor {name!r})"
            )
        self._reactor_table.add(name, reactor)
        reactor.name = name
        reactor.switch = self
        return reactor

    def reactor(self, name: str) -> Reactor | None:
        """The reactor registered under ``name``."""
        return self._reactors.get(name)

    @property
    def reactors(self) -> dict[str, Reactor]:
        """The registered reactors by name, in registration order (a copy)."""
        return dict(self._reactors)

    @property
    def channels(self) -> list[ChannelDescriptor]:
        """Every channel of every reactor, in registration order."""
        return list(self._channels)

    # ------------------------------------------------------------------ lifecycle

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

    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`.

        To wait for it, await ``lifecycle.started`` (or ``lifecycle.stopped``).
        """
        return self._running

    async def start(self) -> None:
        """Start reactors, listen on ``laddr`` and dial the persistent peers.

        Raises:
            LocalProtocolError: already running.
            NetAddressError: ``persistent_peers``, ``unconditional_peer_ids`` or
                ``private_peer_ids`` hold an invalid entry, or ``laddr`` is malformed.
            OSError: the listen address cannot be bound.
        """
        await self._runner.start()

    async def stop(self) -> None:
        """Stop accepting and dialing, stop every peer, then every reactor. Idempotent."""
        await self._runner.stop()

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` in the dial group; ``None`` (``coro`` closed) when not running."""
        return self._tasks.spawn(coro, name)

    @property
    def node_id(self) -> NodeID:
        """Our node ID."""
        return self.node_info.node_id

    # ------------------------------------------------------------------ peer ids

    def add_unconditional_peer_ids(self, ids: Iterable[str]) -> None:
        """Exempt these IDs from the inbound limit and from the outbound count.

        Raises:
            NetAddressError: an ID is malformed.
        """
        self.registry.add_unconditional(ids)

    def is_peer_unconditional(self, node_id: str) -> bool:
        """True if ``node_id`` is an unconditional peer."""
        return node_id.lower() in self.registry.unconditional

    @property
    def unconditional_peer_ids(self) -> frozenset[NodeID]:
        """The unconditional peer IDs."""
        return frozenset(self.registry.unconditional)

    def add_private_peer_ids(self, ids: Iterable[str]) -> None:
        """Mark these IDs private: connections are normal, but they are never gossiped.

        The Switch only keeps the set; the address book refuses to store them.

        Raises:
            NetAddressError: an ID is malformed.
        """
        self.registry.add_private(ids)

    def is_peer_private(self, node_id: str) -> bool:
        """True if ``node_id`` is a private peer (never gossiped)."""
        return node_id.lower() in self.registry.private

    @property
    def private_peer_ids(self) -> frozenset[NodeID]:
        """The private peer IDs (``private_peer_ids`` plus those added)."""
        return frozenset(self.registry.private)

    def add_persistent_peers(self, addresses: Iterable[str | NetAddress]) -> None:
        """Replace the persistent-peer list (``id@host:port`` strings or NetAddresses).

        Called before :meth:`start`, it replaces ``persistent_peers`` from the config.
        Host names are resolved without blocking (:mod:`cometp2p.aio.resolve`) when the
        Switch starts; until then only the IP-literal entries are listed.

        Raises:
            NetAddressError: an address is malformed (unresolvable names are skipped, with
                a warning, at start).
        """
        self.registry.set_persistent(addresses)

    @property
    def persistent_peers(self) -> list[NetAddress]:
        """The persistent peers (from the config until :meth:`add_persistent_peers`).

        Host-name entries appear once :meth:`start` has resolved them.
        """
        return self.registry.persistent_list(self.config.persistent_peers)

    def is_peer_persistent(self, address: NetAddress) -> bool:
        """True if ``address`` equals (``id@ip:port``) one of the persistent peers."""
        return self.registry.is_persistent(address)

    # ------------------------------------------------------------------ counting

    def num_peers(self) -> tuple[int, int, int]:
        """``(outbound, inbound, dialing)``; unconditional peers are not counted."""
        return self.registry.num_peers()

    @property
    def max_num_outbound_peers(self) -> int:
        """``max_num_outbound_peers``: the PEX dialer's budget (the Switch does not enforce it)."""
        return self.config.max_num_outbound_peers

    def is_dialing_or_existing_address(self, address: NetAddress) -> bool:
        """True if ``address``'s ID is being dialed or connected, or (without
        ``allow_duplicate_ip``) its IP already belongs to a peer."""
        return self.registry.is_dialing_or_existing_address(
            address, allow_duplicate_ip=self.config.allow_duplicate_ip
        )

    # ------------------------------------------------------------------ dialing

    def cooldown_remaining(self, node_id: str) -> float:
        """Seconds before ``node_id`` may be dialed again after an incompatible refusal."""
        return self.dialer.cooldown_remaining(node_id)

    def end_cooldown(self, node_id: str) -> None:
        """Allow dials to ``node_id`` again at once (e.g. after its operator fixed it)."""
        self.dialer.end_cooldown(node_id)

    def dial_peers_async(self, addresses: Sequence[NetAddress | str]) -> None:
        """Dial each address in the background, in random order, each after a random wait.

        Our own ID and listen address are skipped. Errors are logged; a persistent
        address that fails starts its reconnect loop. While the Switch is not running
        nothing is dialed (the dial tasks would have no TaskGroup to run in).

        Raises:
            NetAddressError: a string is not a valid address (nothing is dialed then);
                names that do not resolve are only logged and skipped.
        """
        self.dialer.dial_peers_async(addresses)

    async def dial_peer_with_address(self, address: NetAddress) -> Peer:
        """Dial ``address``, upgrade it and add the peer.

        A failed dial of a persistent address starts its reconnect loop (unless the
        address is ourselves); a peer refused after the upgrade does not.

        Returns:
            The started Peer.

        Raises:
            AlreadyConnectedError: the ID or IP is already dialing or connected.
            RejectedError: ``SELF`` for our own ID; ``INCOMPATIBLE`` while the ID cools
                down after an incompatible refusal; otherwise the reason the upgrade
                pipeline or the Switch refused the peer.
            ConnectionBrokenError: the TCP connect failed or timed out.
            LocalProtocolError: the Switch is not running.
        """
        return await self.dialer.dial_peer_with_address(address)

    @property
    def _reconnecting(self) -> set[NodeID]:
        """IDs with a reconnect loop running."""
        return self.dialer.reconnecting

    # ------------------------------------------------------------------ accepting

    async def _add_upgraded(self, upgraded: UpgradedConnection) -> Peer:
        return await self._admitter.add_upgraded(upgraded)

    def reactor_for_channel(self, channel_id: int) -> Reactor:
        """The reactor that declared ``channel_id``.

        Raises:
            KeyError: no reactor declared it.
        """
        return self._reactor_by_channel[channel_id]

    # ------------------------------------------------------------------ removal

    async def stop_peer_for_error(self, peer: Peer, reason: BaseException) -> None:
        """Stop ``peer`` because of ``reason`` (logged); reconnect if it is persistent.

        No-op if the peer is not in the peer set or is already being stopped. The
        reconnect target is the dialed address for outbound peers and the peer's
        self-reported listen address for inbound ones.
        """
        await self._remover.stop_peer_for_error(peer, reason)

    async def stop_peer_gracefully(self, peer: Peer, flush_timeout_s: float = 2.0) -> None:
        """Stop ``peer`` after flushing what is queued to it; never reconnects."""
        await self._remover.stop_peer_gracefully(peer, flush_timeout_s)

    async def _stop_and_remove_peer(
        self, peer: Peer, reason: BaseException | None, *, flush_timeout_s: float = 0.0
    ) -> None:
        await self._remover.stop_and_remove_peer(peer, reason, flush_timeout_s=flush_timeout_s)

    # ------------------------------------------------------------------ sending

    async def broadcast(
        self, channel_id: int, message: bytes, timeout_s: float = 10.0
    ) -> dict[NodeID, bool]:
        """Send ``message`` to every peer concurrently (blocking send, ≤ ``timeout_s`` each).

        Every peer with room in its send queue gets the message at once, without a task
        or a wait; only peers whose queue is full wait, concurrently, up to ``timeout_s``.

        Returns:
            ``{peer_id: queued}`` for every peer of the snapshot, in snapshot order.
        """
        return await broadcast(self.peers.list(), channel_id, message, timeout_s)

    def mark_peer_as_good(self, peer: Peer) -> None:
        """Tell the address book that ``peer`` behaves well.

        The Switch keeps no address book; every reactor that has a
        ``mark_peer_as_good(peer)`` method (the PEXReactor) is told.
        """
        for reactor in self._reactors.values():
            mark_good = getattr(reactor, "mark_peer_as_good", None)
            if callable(mark_good):
                mark_good(peer)
