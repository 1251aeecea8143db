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

Peer removal keeps Go's order (close the connection, stop the peer's receive tasks,
``Reactor.remove_peer``, and only then leave the peer set) so a quick reconnect by the
same node cannot reach ``init_peer``/``add_peer`` before the old ``remove_peer`` ran.

Use it as an async context manager::

    switch = Switch(config, node_key, node_info)
    switch.add_reactor("echo", EchoReactor())   # before start
    async with switch:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Final, Self

from cometp2p.aio.connection import Connection
from cometp2p.aio.fuzz import fuzzer_from_config
from cometp2p.aio.resolve import check_address, resolve_address, resolve_addresses
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.aio.transport import (
    DEFAULT_FILTER_TIMEOUT_S,
    RemoteAddress,
    Transport,
    UpgradedConnection,
)
from cometp2p.config import P2PConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    CometP2PError,
    LocalProtocolError,
    NetAddressError,
    NetAddressLookupError,
    ReactorTooLateError,
    RejectedError,
    RejectReason,
)
from cometp2p.metrics import P2PMetrics
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch import admission
from cometp2p.switch.admission import PeerFilter
from cometp2p.switch.consumers import PeerTasks
from cometp2p.switch.lifecycle import Lifecycle
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.switch.reconnect import ReconnectPolicy, ReconnectSchedule
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, split_address, validate_node_id
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = [
    "AlreadyConnectedError",
    "PeerFilter",
    "ReconnectPolicy",
    "ReconnectSchedule",
    "Switch",
]

logger = logging.getLogger(__name__)


_CLOSE_TIMEOUT_S: Final = 1.0
"""How long closing a socket may wait for the peer before the socket is aborted."""

_RECEIVE_DRAIN_TIMEOUT_S: Final = 1.0
"""How long a stopping peer's in-progress ``Reactor.receive`` calls may take to finish."""

_MAX_COOLDOWN_ENTRIES: Final = 4096
"""Most node IDs whose incompatible refusals are remembered at once."""


class AlreadyConnectedError(CometP2PError):
    """The address is being dialed already, or its ID or IP is already a peer.

    The reconnect and PEX logic treat this as success (behaviour.md §1.7).
    """


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
        self.peers = PeerSet()
        self.peer_filters: list[PeerFilter] = []
        self._reactors: dict[str, Reactor] = {}
        self._reactor_by_channel: dict[int, Reactor] = {}
        self._channels: list[ChannelDescriptor] = []
        self._dialing: set[NodeID] = set()
        self._reconnecting: set[NodeID] = set()
        self._persistent: list[NetAddress] | None = None
        self._persistent_given: list[str | NetAddress] | None = None  # resolved in start()
        self._unconditional: set[NodeID] = set()
        self._private: set[NodeID] = set()
        self.transport = Transport(node_key, node_info, filter_timeout_s=filter_timeout_s)
        self._configure_transport()
        self._cooldown_until: dict[NodeID, float] = {}
        self._refusals: dict[NodeID, tuple[int, float]] = {}  # (in a row, last at)
        self._short_lived: dict[NodeID, int] = {}  # persistent peers' quick deaths in a row
        self._running = False
        self.lifecycle = Lifecycle()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stoppers: set[asyncio.Task[None]] = set()
        self._peer_tasks = PeerTasks(self)
        self._stopping: set[Peer] = set()
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

    def _configure_transport(self) -> None:
        t = self.transport
        t.node_info = self.node_info
        t.handshake_timeout_s = self.config.handshake_timeout_s
        t.dial_timeout_s = self.config.dial_timeout_s
        t.allow_duplicate_ip = self.config.allow_duplicate_ip
        t.filter_timeout_s = self.filter_timeout_s
        # Go's listener limit: max inbound peers plus the unconditional ones (§1.5).
        t.max_incoming_handshakes = self.config.max_num_inbound_peers + len(self._unconditional)

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
        if name in self._reactors:
            raise LocalProtocolError(f"a reactor named {name!r} is already registered")
        descs = reactor.get_channels()
        seen: set[int] = set()
        for desc in descs:
            owner = self._reactor_by_channel.get(desc.id)
            if owner is not None:
                raise LocalProtocolError(
                    f"channel {desc.id:#04x} of reactor {name!r} is already owned by "
                    f"reactor {owner.name!r}"
                )
            if desc.id in seen:
                raise LocalProtocolError(f"reactor {name!r} declares channel {desc.id:#04x} twice")
            seen.add(desc.id)
        for desc in descs:
            self._channels.append(desc)
            self._reactor_by_channel[desc.id] = reactor
        reactor.name = name
        reactor.switch = self
        self._reactors[name] = reactor
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
        if self._running:
            raise LocalProtocolError("Switch already started")
        config = self.config
        given = self._persistent_given
        self._persistent = await resolve_addresses(
            config.persistent_peers if given is None else given, "persistent_peers", logger
        )
        self.add_unconditional_peer_ids(config.unconditional_peer_ids)
        self.add_private_peer_ids(config.private_peer_ids)
        host, port = _split_laddr(config.laddr)
        self._configure_transport()
        if config.test_fuzz:  # behaviour.md §8; otherwise a wrapper set by hand stays
            self.transport.socket_wrapper = fuzzer_from_config(config, self.rng)
        started: list[Reactor] = []
        try:
            for reactor in self._reactors.values():
                await reactor.start()
                started.append(reactor)
            self.listen_address = await self.transport.listen(
                host, port, self._on_inbound, self._on_rejected
            )
        except BaseException:
            for reactor in reversed(started):
                with contextlib.suppress(Exception):
                    await reactor.stop()
            raise
        if port == 0 and not config.external_address:
            # An ephemeral port is only known now; advertise the real one.
            bound_host, bound_port = self.listen_address
            self.node_info = dataclasses.replace(
                self.node_info, listen_addr=f"tcp://{admission.host_port(bound_host, bound_port)}"
            )
            self.transport.node_info = self.node_info
        self._running = True
        self.lifecycle.mark_started()
        logger.info("switch %s listening on %s:%d", self.node_id, *self.listen_address)
        if self._persistent:
            self.dial_peers_async(self._persistent)

    async def stop(self) -> None:
        """Stop accepting and dialing, stop every peer, then every reactor. Idempotent."""
        if not self._running:
            return
        self._running = False
        self.lifecycle.started.clear()
        await self.transport.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(
            *(self._stop_and_remove_peer(peer, None) for peer in self.peers.list()),
            return_exceptions=True,
        )
        while pending := [t for t in self._stoppers if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        for reactor in self._reactors.values():
            try:
                await reactor.stop()
            except Exception:
                logger.exception("reactor %s failed to stop", reactor.name)
        self.lifecycle.mark_stopped()
        logger.info("switch %s stopped", self.node_id)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        for node_id in ids:
            self._unconditional.add(validate_node_id(node_id))

    def is_peer_unconditional(self, node_id: str) -> bool:
        """True if ``node_id`` is an unconditional peer."""
        return node_id.lower() in self._unconditional

    @property
    def unconditional_peer_ids(self) -> frozenset[NodeID]:
        """The unconditional peer IDs."""
        return frozenset(self._unconditional)

    def add_private_peer_ids(self, ids: Iterable[str]) -> None:
        """Mark these IDs private: connections are normal, but they are never gossiped.

        The Switch only keeps the set; the address book refuses to store them.

        Raises:
            NetAddressError: an ID is malformed.
        """
        for node_id in ids:
            self._private.add(validate_node_id(node_id))

    def is_peer_private(self, node_id: str) -> bool:
        """True if ``node_id`` is a private peer (never gossiped)."""
        return node_id.lower() in self._private

    @property
    def private_peer_ids(self) -> frozenset[NodeID]:
        """The private peer IDs (``private_peer_ids`` plus those added)."""
        return frozenset(self._private)

    def add_persistent_peers(self, addresses: Iterable[str | NetAddress]) -> None:
        """Replace the persistent-peer list (``id@host:port`` strings or NetAddresses).

        Called before :meth:`start`, it replaces ``persistent_peers`` from the config.
        Host names are resolved without blocking (:mod:`cometp2p.aio.resolve`) when the
        Switch starts; until then only the IP-literal entries are listed.

        Raises:
            NetAddressError: an address is malformed (unresolvable names are skipped, with
                a warning, at start).
        """
        given = list(addresses)
        self._persistent = _parse_literal_addresses(given)
        self._persistent_given = given

    @property
    def persistent_peers(self) -> list[NetAddress]:
        """The persistent peers (from the config until :meth:`add_persistent_peers`).

        Host-name entries appear once :meth:`start` has resolved them.
        """
        if self._persistent is None:
            return _parse_literal_addresses(self.config.persistent_peers)
        return list(self._persistent)

    def is_peer_persistent(self, address: NetAddress) -> bool:
        """True if ``address`` equals (``id@ip:port``) one of the persistent peers."""
        return any(address == p for p in self._persistent or ())

    # ------------------------------------------------------------------ counting

    def num_peers(self) -> tuple[int, int, int]:
        """``(outbound, inbound, dialing)``; unconditional peers are not counted."""
        outbound = inbound = 0
        for peer in self.peers:
            if peer.id in self._unconditional:
                continue
            if peer.is_outbound:
                outbound += 1
            else:
                inbound += 1
        return outbound, inbound, len(self._dialing)

    @property
    def max_num_outbound_peers(self) -> int:
        """``max_num_outbound_peers``: the PEX dialer's budget (the Switch does not enforce it)."""
        return self.config.max_num_outbound_peers

    def is_dialing_or_existing_address(self, address: NetAddress) -> bool:
        """True if ``address``'s ID is being dialed or connected, or (without
        ``allow_duplicate_ip``) its IP already belongs to a peer."""
        return (
            address.id in self._dialing
            or self.peers.has(address.id)
            or (not self.config.allow_duplicate_ip and self.peers.has_ip(address.ip))
        )

    # ------------------------------------------------------------------ cooldown

    def cooldown_remaining(self, node_id: str) -> float:
        """Seconds before ``node_id`` may be dialed again after an incompatible refusal."""
        until = self._cooldown_until.get(NodeID(node_id.lower()))
        if until is None:
            return 0.0
        left = until - asyncio.get_running_loop().time()
        if left <= 0:
            del self._cooldown_until[NodeID(node_id.lower())]
            return 0.0
        return left

    def end_cooldown(self, node_id: str) -> None:
        """Allow dials to ``node_id`` again at once (e.g. after its operator fixed it)."""
        self._cooldown_until.pop(NodeID(node_id.lower()), None)
        self._refusals.pop(NodeID(node_id.lower()), None)

    def _cool_down(self, node_id: str | None, error: CometP2PError) -> None:
        if node_id is None or not isinstance(error, RejectedError):
            return
        if error.reason is not RejectReason.INCOMPATIBLE:
            return
        policy = self.reconnect_policy
        now = asyncio.get_running_loop().time()
        key = NodeID(node_id.lower())
        count, last = self._refusals.get(key, (0, now))
        if now - last > 2 * policy.incompatible_cooldown_max_s:
            count = 0  # a refusal long after the last one starts the cooldowns afresh
        period = policy.incompatible_cooldown(count + 1)
        if period <= 0:
            return
        if len(self._refusals) >= _MAX_COOLDOWN_ENTRIES:
            self._prune_cooldowns(now)
        self._refusals[key] = (count + 1, now)
        self._cooldown_until[key] = now + period
        logger.info(
            "[%s] incompatible (refusal %d in a row): %s; not dialing it for %g s",
            node_id,
            count + 1,
            error,
            period,
        )

    def _prune_cooldowns(self, now: float) -> None:
        """Bound the cooldown state (IDs that churn must not grow it without end)."""
        horizon = 2 * self.reconnect_policy.incompatible_cooldown_max_s
        for key, (_, last) in list(self._refusals.items()):
            if now - last > horizon:
                del self._refusals[key]
        for key, until in list(self._cooldown_until.items()):
            if until <= now:
                del self._cooldown_until[key]
        while len(self._refusals) >= _MAX_COOLDOWN_ENTRIES:  # oldest first
            key = next(iter(self._refusals))
            del self._refusals[key]
            self._cooldown_until.pop(key, None)

    # ------------------------------------------------------------------ dialing

    def dial_peers_async(self, addresses: Sequence[NetAddress | str]) -> None:
        """Dial each address in the background, in random order, each after a random wait.

        Our own ID and listen address are skipped. Errors are logged; a persistent
        address that fails starts its reconnect loop.

        Raises:
            NetAddressError: a string is not a valid address (nothing is dialed then);
                names that do not resolve are only logged and skipped.
        """
        order = list(addresses)
        for item in order:
            check_address(item)
        self.rng.shuffle(order)
        for item in order:
            if isinstance(item, NetAddress) and self._is_own_address(item):
                continue
            node_id = item.id if isinstance(item, NetAddress) else split_address(item)[0]
            self._spawn(self._dial_later(item), f"dial-{node_id[:12]}")

    def _is_own_address(self, address: NetAddress) -> bool:
        if address.id == self.node_id or address in self.self_addresses:
            return True
        listen = self.listen_address
        return listen is not None and address.port == listen[1] and str(address.ip) == listen[0]

    async def _dial_later(self, item: str | NetAddress) -> None:
        try:
            address = await resolve_address(item)
        except NetAddressLookupError as exc:
            logger.warning("skipping dial_peers entry %r: %s", item, exc)
            return
        if self._is_own_address(address):
            return
        if self.dial_jitter_s > 0:
            await asyncio.sleep(self.rng.uniform(0, self.dial_jitter_s))
        try:
            await self.dial_peer_with_address(address)
        except AlreadyConnectedError as exc:
            logger.debug("[%s] not dialing: %s", address.id, exc)
        except CometP2PError as exc:
            logger.info("[%s] dial failed: %s", address.id, exc)

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
        if not self._running:
            raise LocalProtocolError(f"cannot dial {address}: the Switch is not running")
        if address.id == self.node_id:
            self.self_addresses.add(address)
            raise RejectedError(RejectReason.SELF, f"{address} is our own ID", node_id=address.id)
        if self.is_dialing_or_existing_address(address):
            raise AlreadyConnectedError(f"{address} is already dialing or connected")
        left = self.cooldown_remaining(address.id)
        if left > 0:
            raise RejectedError(
                RejectReason.INCOMPATIBLE,
                f"refused as incompatible recently; not dialing for another {left:.1f} s",
                node_id=address.id,
            )
        self._dialing.add(address.id)
        try:
            try:
                upgraded = await self.transport.dial(address)
            except CometP2PError as exc:
                self._after_dial_failure(address, exc)
                raise
            return await self._add_upgraded(upgraded)
        finally:
            self._dialing.discard(address.id)

    def _after_dial_failure(self, address: NetAddress, exc: CometP2PError) -> None:
        if isinstance(exc, RejectedError) and exc.reason is RejectReason.SELF:
            logger.info("[%s] %s is ourselves; not dialing it again", address.id, address)
            self.self_addresses.add(address)
            return
        self._cool_down(address.id, exc)
        if self.is_peer_persistent(address) and self._running:
            self._start_reconnect(address, first_attempt_done=True)

    # ------------------------------------------------------------------ reconnect

    def _start_reconnect(
        self, address: NetAddress, *, first_attempt_done: bool = False, delay_s: float = 0.0
    ) -> None:
        if address.id in self._reconnecting or not self._running:
            return
        self._reconnecting.add(address.id)
        self._spawn(
            self._reconnect(address, first_attempt_done, delay_s), f"reconnect-{address.id[:12]}"
        )

    def _short_lived_delay(self, peer: Peer) -> float:
        """The wait before redialing ``peer`` (0 unless its connection was short-lived)."""
        policy = self.reconnect_policy
        lived = time.monotonic() - peer.created_at
        if lived >= policy.short_lived_s:
            self._short_lived.pop(peer.id, None)
            return 0.0
        deaths = self._short_lived.get(peer.id, 0) + 1
        self._short_lived[peer.id] = deaths
        wait = policy.short_lived_wait(deaths)
        logger.info(
            "[%s] connection lived %.1f s (short-lived %d in a row); redialing in %g s",
            peer.id,
            lived,
            deaths,
            wait,
        )
        return wait

    async def _reconnect(
        self, address: NetAddress, first_attempt_done: bool, delay_s: float = 0.0
    ) -> None:
        """Redial ``address`` on the schedule of behaviour.md §1.10 (quirks fixed), after
        ``delay_s`` seconds (the back-off of a short-lived connection)."""
        if delay_s > 0:
            try:
                await asyncio.sleep(delay_s)
            except BaseException:
                self._reconnecting.discard(address.id)
                raise
        schedule = ReconnectSchedule(
            self.reconnect_policy,
            self.rng,
            first_attempt_done=first_attempt_done,
            cooled_down=self.cooldown_remaining(address.id) > 0,
        )
        try:
            while self._running:
                wait = schedule.next_wait(self.cooldown_remaining(address.id))
                if wait is None:
                    logger.warning("[%s] giving up reconnecting to %s", address.id, address)
                    return
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self._running:
                    return
                try:
                    await self.dial_peer_with_address(address)
                    return
                except AlreadyConnectedError:
                    return
                except RejectedError as exc:
                    if exc.reason is RejectReason.SELF:
                        return
                    if exc.reason is RejectReason.INCOMPATIBLE:
                        schedule.cool_down()
                    logger.info(
                        "[%s] reconnect attempt %d failed: %s", address.id, schedule.attempts, exc
                    )
                except CometP2PError as exc:
                    logger.info(
                        "[%s] reconnect attempt %d failed: %s", address.id, schedule.attempts, exc
                    )
        finally:
            self._reconnecting.discard(address.id)

    # ------------------------------------------------------------------ accepting

    def _on_rejected(self, error: CometP2PError, peer_address: RemoteAddress) -> None:
        logger.info("inbound peer %s:%d rejected: %s", peer_address[0], peer_address[1], error)
        if isinstance(error, RejectedError):
            self._cool_down(error.node_id, error)
        if self.on_peer_rejected is not None:
            self.on_peer_rejected(error)

    async def _on_inbound(self, upgraded: UpgradedConnection) -> None:
        try:
            await self._add_upgraded(upgraded)
        except CometP2PError as exc:
            self._on_rejected(exc, upgraded.remote_address)

    # ------------------------------------------------------------------ admission

    async def _close_upgraded(self, secret: SecretConnection, remote: RemoteAddress) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await secret.close()
        except TimeoutError:
            self.transport.abort(remote)
        except Exception:
            logger.debug("error closing %s:%d", *remote, exc_info=True)
            self.transport.abort(remote)
        finally:
            self.transport.cleanup(remote)

    async def _add_upgraded(self, upgraded: UpgradedConnection) -> Peer:
        """The admission pipeline of behaviour.md §1.8, for both directions.

        Raises:
            RejectedError: ``DUPLICATE``, ``LIMIT`` (inbound), ``FILTERED`` (a peer
                filter, or the Switch is stopping); the socket is closed.
        """
        info = upgraded.node_info
        remote = upgraded.remote_address
        try:
            socket_address = admission.socket_address(upgraded)
            if upgraded.outbound:
                persistent = self.is_peer_persistent(socket_address)
            else:
                reported = admission.self_reported_address(info)
                persistent = reported is not None and self.is_peer_persistent(reported)
            connection = Connection(
                upgraded.secret,
                self._channels,
                self.mconnection_config,
                initial_plaintext=upgraded.leftover,
            )
            peer = Peer(
                info,
                connection,
                outbound=upgraded.outbound,
                persistent=persistent,
                socket_address=socket_address,
                metrics=self.metrics,
            )
            await admission.run_peer_filters(
                peer, self.peers, self.peer_filters, self.filter_timeout_s
            )
            # From here to peers.add there is no suspension point: the checks hold.
            admission.check_admission(
                peer,
                running=self._running,
                peers=self.peers,
                unconditional=self._unconditional,
                inbound=self.num_peers()[1],
                max_inbound=self.config.max_num_inbound_peers,
            )
            for reactor in self._reactors.values():
                reactor.init_peer(peer)
        except BaseException:
            await self._close_upgraded(upgraded.secret, remote)
            raise
        connection.start()
        self.peers.add(peer)
        self._refusals.pop(peer.id, None)  # compatible now: the next refusal starts short
        self.metrics.peer_added()
        self._peer_tasks.start(peer, [desc.id for desc in self._channels])
        logger.info(
            "[%s] added peer %r (%s, %s)",
            peer.id,
            info.moniker,
            "outbound" if peer.is_outbound else "inbound",
            peer.socket_address,
        )
        for reactor in self._reactors.values():
            if not peer.is_running:
                break
            try:
                await reactor.add_peer(peer)
            except Exception as exc:
                logger.exception("[%s] reactor %s failed in add_peer", peer.id, reactor.name)
                await self.stop_peer_for_error(peer, exc)
                break
        return peer

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
        if self.peers.get(peer.id) is not peer or peer in self._stopping:
            return
        logger.warning("[%s] stopping peer for error: %s", peer.id, reason)
        await self._stop_and_remove_peer(peer, reason)
        if peer.is_persistent and self._running:
            target = (
                peer.socket_address
                if peer.is_outbound
                else admission.self_reported_address(peer.node_info)
            )
            if target is not None:
                self._start_reconnect(target, delay_s=self._short_lived_delay(peer))

    async def stop_peer_gracefully(self, peer: Peer, flush_timeout_s: float = 2.0) -> None:
        """Stop ``peer`` after flushing what is queued to it; never reconnects."""
        if self.peers.get(peer.id) is not peer or peer in self._stopping:
            return
        logger.info("[%s] stopping peer gracefully", peer.id)
        await self._stop_and_remove_peer(peer, None, flush_timeout_s=flush_timeout_s)

    async def _stop_and_remove_peer(
        self, peer: Peer, reason: BaseException | None, *, flush_timeout_s: float = 0.0
    ) -> None:
        """Stop ``peer`` once; the work runs in its own task, so cancelling the caller
        (a reactor's receive, a dial) never leaves the removal half done."""
        if self.peers.get(peer.id) is not peer or peer in self._stopping:
            return
        self._stopping.add(peer)
        peer.mark_stopping()
        # The caller may be one of the peer's own receive tasks: that one is not awaited.
        caller = asyncio.current_task()
        stopper = asyncio.create_task(
            self._remove_peer(peer, reason, flush_timeout_s, caller), name=f"stop-{peer.id[:8]}"
        )
        self._stoppers.add(stopper)
        stopper.add_done_callback(self._stoppers.discard)
        await asyncio.shield(stopper)

    async def _remove_peer(
        self,
        peer: Peer,
        reason: BaseException | None,
        flush_timeout_s: float,
        caller: asyncio.Task[object] | None,
    ) -> None:
        """Go's ``stopAndRemovePeer`` order: close, stop, ``remove_peer``, leave the set."""
        try:
            consumers = self._peer_tasks.take(peer, caller)
            await self._close_connection(peer, flush_timeout_s)
            # Let a receive in progress finish, so remove_peer comes after it.
            await _finish(consumers, _RECEIVE_DRAIN_TIMEOUT_S)
            for reactor in self._reactors.values():
                try:
                    await reactor.remove_peer(peer, reason)
                except Exception:
                    logger.exception("[%s] reactor %s failed in remove_peer", peer.id, reactor.name)
        finally:
            self.peers.remove(peer)
            self.metrics.peer_removed()
            self.metrics.forget_peer(peer.id)
            self._stopping.discard(peer)
        logger.info("[%s] removed peer (%s)", peer.id, reason or "stopped")

    async def _close_connection(self, peer: Peer, flush_timeout_s: float) -> None:
        remote: RemoteAddress | None
        try:
            remote = peer.remote_address
        except CometP2PError:
            remote = None
        closer = asyncio.create_task(
            peer.connection.close(flush_timeout_s=flush_timeout_s), name=f"close-{peer.id[:8]}"
        )
        try:
            done, _ = await asyncio.wait({closer}, timeout=flush_timeout_s + _CLOSE_TIMEOUT_S)
            if not done and remote is not None:
                # The peer does not read: do not wait for its buffers any longer.
                self.transport.abort(remote)
            await _finish([closer], _CLOSE_TIMEOUT_S)
        finally:
            if remote is not None:
                self.transport.cleanup(remote)

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
        peers = self.peers.list()
        queued: dict[NodeID, bool] = {}
        full: list[Peer] = []
        for peer in peers:
            if peer.try_send(channel_id, message):
                queued[peer.id] = True
            elif peer.has_channel(channel_id) and peer.is_running:
                full.append(peer)
            else:
                queued[peer.id] = False
        if full:
            waited = await asyncio.gather(
                *(peer.send(channel_id, message, timeout_s) for peer in full)
            )
            queued.update((peer.id, ok) for peer, ok in zip(full, waited, strict=True))
        return {peer.id: queued[peer.id] for peer in peers}

    def mark_peer_as_good(self, peer: Peer) -> None:
        """Tell the address book that ``peer`` behaves well.

        The Switch keeps no address book; every reactor that has a
        ``mark_peer_as_good(peer)`` method (the PEXReactor) is told.
        """
        for reactor in self._reactors.values():
            mark_good = getattr(reactor, "mark_peer_as_good", None)
            if callable(mark_good):
                mark_good(peer)


async def _finish(tasks: Sequence[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``tasks``, then cancel and reap the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _parse_literal_addresses(items: Iterable[str | NetAddress]) -> list[NetAddress]:
    """The entries with an IP literal, parsed (no DNS); host names wait for ``start()``.

    Raises:
        NetAddressError: an entry is malformed.
    """
    addresses: list[NetAddress] = []
    for item in items:
        if isinstance(item, NetAddress):
            addresses.append(item)
            continue
        with contextlib.suppress(NetAddressLookupError):  # a name: resolved in start()
            addresses.append(NetAddress.parse(item))
    return addresses


def _split_laddr(laddr: str) -> tuple[str, int]:
    rest = laddr.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise NetAddressError(f"listen address must be [tcp://]host:port, got {laddr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
