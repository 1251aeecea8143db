"""The Switch: accepts and dials peers and routes each Channel to its Reactor.

Follows behaviour.md §1 (v0.38 Switch) with the quirks fixed:

* reactors start and receive peers in registration order (not map order);
* ``handshake_timeout`` and ``dial_timeout`` from config are honoured (Q1.1);
* a peer admitted while the Switch stops is closed, not leaked (Q1.3);
* an unexpected accept error is logged, never fatal (Q1.5);
* a persistent peer that refuses us as *incompatible* is cooled down: it skips the fast
  phase and goes straight to the exponential phase of the reconnect schedule (tendermint
  issue #6604), and one that turns out to be ourselves is never redialed.

Use it as an async context manager::

    async with Switch(config, node_key, node_info) as sw:
        sw.add_reactor(...)   # before entering, in fact; see add_reactor
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from cometp2p.aio.connection import Connection
from cometp2p.aio.transport import Transport, UpgradedConnection
from cometp2p.config import P2PConfig
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    CometP2PError,
    LocalProtocolError,
    NetAddressError,
    NetAddressLookupError,
    RejectedError,
    RejectReason,
)
from cometp2p.metrics import P2PMetrics
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.switch.reactor import Envelope, Reactor
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, validate_node_id
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = ["AlreadyConnectedError", "PeerFilter", "ReconnectPolicy", "Switch"]

logger = logging.getLogger(__name__)

PeerFilter = Callable[[PeerSet, Peer], Awaitable[None]]
"""``async filter(peers, new_peer)``; raise any CometP2PError to refuse the peer."""


class AlreadyConnectedError(CometP2PError):
    """The address is being dialed already, or its ID or IP is already a peer.

    The reconnect and PEX logic treat this as success (behaviour.md §1.7).
    """


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """The persistent-peer redial schedule (behaviour.md §1.10), in seconds.

    Phase 1: ``fast_attempts`` dials ``fast_interval_s`` apart. Phase 2:
    ``backoff_attempts`` dials, the i-th after ``backoff_base_s ** i``. Every wait adds
    ``U[0, jitter_s)``.
    """

    fast_attempts: int = 20
    fast_interval_s: float = 5.0
    backoff_attempts: int = 10
    backoff_base_s: float = 3.0
    jitter_s: float = 3.0

    def delays(self, *, cooled_down: bool = False) -> list[float]:
        """The waits before each attempt (without jitter); the first fast one is 0."""
        fast = [] if cooled_down else [0.0] + [self.fast_interval_s] * (self.fast_attempts - 1)
        backoff = [self.backoff_base_s**i for i in range(1, self.backoff_attempts + 1)]
        return fast + backoff


class Switch:
    """Connects peers and routes messages between them and the reactors.

    Args:
        config: the ``[p2p]`` configuration.
        node_key: our identity.
        node_info: our NodeInfo; its ``channels`` should list every reactor's channels.
        metrics: Prometheus metrics; a private registry is used when omitted.
        rng: randomness for dial jitter (injected for reproducible tests).
        reconnect_policy: the persistent-peer redial schedule.
        mconnection_config: overrides the MConnection settings derived from ``config``.
        dial_jitter_s: upper bound of the random wait before each dial of
            :meth:`dial_peers_async` (CometBFT: 3 s).
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
    ) -> None:
        self.config = config
        self.node_key = node_key
        self.node_info = node_info
        self.metrics = metrics if metrics is not None else P2PMetrics(node_info.network)
        self.rng = rng if rng is not None else random.Random()
        self.reconnect_policy = reconnect_policy or ReconnectPolicy()
        self.mconnection_config = mconnection_config or MConnectionConfig.from_p2p(config)
        self.dial_jitter_s = dial_jitter_s
        self.peers = PeerSet()
        self.peer_filters: list[PeerFilter] = []
        self.transport = Transport(
            node_key,
            node_info,
            handshake_timeout_s=config.handshake_timeout_s,
            dial_timeout_s=config.dial_timeout_s,
            max_incoming_handshakes=config.max_num_inbound_peers
            + len(config.unconditional_peer_ids),
        )
        self._reactors: dict[str, Reactor] = {}
        self._reactor_by_channel: dict[int, Reactor] = {}
        self._channels: list[ChannelDescriptor] = []
        self._dialing: set[NodeID] = set()
        self._reconnecting: set[NodeID] = set()
        self._persistent: list[NetAddress] = []
        self._unconditional: set[NodeID] = set()
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._peer_tasks: dict[NodeID, list[asyncio.Task[None]]] = {}
        self.listen_address: tuple[str, int] | None = None
        self.on_peer_rejected: Callable[[CometP2PError], None] | None = None
        self.add_unconditional_peer_ids(config.unconditional_peer_ids)

    # ------------------------------------------------------------------ reactors

    def add_reactor(self, name: str, reactor: Reactor) -> Reactor:
        """Register ``reactor`` under ``name`` and route its channels to it.

        Raises:
            LocalProtocolError: a channel ID is already owned by another reactor, the
                name is taken, or the Switch is already running.
        """
        if self._running:
            raise LocalProtocolError("add_reactor must be called before the Switch starts")
        if name in self._reactors:
            raise LocalProtocolError(f"a reactor named {name!r} is already registered")
        descs = reactor.get_channels()
        for desc in descs:
            owner = self._reactor_by_channel.get(desc.id)
            if owner is not None:
                raise LocalProtocolError(
                    f"channel {desc.id:#04x} of reactor {name!r} is already owned by "
                    f"reactor {owner.name!r}"
                )
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
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    async def start(self) -> None:
        """Start reactors, listen on ``laddr`` and dial the persistent peers.

        Raises:
            NetAddressError: ``persistent_peers`` holds an invalid address.
            OSError: the listen address cannot be bound.
        """
        if self._running:
            raise LocalProtocolError("Switch already started")
        self._persistent = _parse_addresses(self.config.persistent_peers, "persistent_peers")
        for reactor in self._reactors.values():
            await reactor.start()
        host, port = _split_laddr(self.config.laddr)
        self.listen_address = await self.transport.listen(
            host, port, self._on_inbound, self._on_rejected
        )
        if port == 0:
            # An ephemeral port is only known now; advertise the real one.
            bound_host, bound_port = self.listen_address
            self.node_info = dataclasses.replace(
                self.node_info, listen_addr=f"tcp://{_host_port(bound_host, bound_port)}"
            )
            self.transport.node_info = self.node_info
        self._running = True
        if self._persistent:
            self.dial_peers_async(self._persistent)

    async def stop(self) -> None:
        """Stop listening, stop every peer, then every reactor. Idempotent."""
        if not self._running:
            return
        self._running = False
        await self.transport.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for peer in self.peers.list():
            await self._stop_and_remove_peer(peer, None)
        for reactor in self._reactors.values():
            try:
                await reactor.stop()
            except Exception:
                logger.exception("reactor %s failed to stop", reactor.name)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        return node_id in self._unconditional

    def add_persistent_peers(self, addresses: Iterable[str]) -> None:
        """Replace the persistent-peer list (``id@host:port`` strings).

        Raises:
            NetAddressError: an address is invalid (unresolvable names are skipped).
        """
        self._persistent = _parse_addresses(addresses, "persistent peers")

    def is_peer_persistent(self, address: NetAddress) -> bool:
        """True if ``address`` equals (``id@ip:port``) one of the persistent peers."""
        return any(str(address) == str(p) for p in self._persistent)

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

    def is_dialing_or_existing_address(self, address: NetAddress) -> bool:
        """True if ``address``'s ID is being dialed or connected, or (without
        ``allow_duplicate_ip``) its IP already belongs to a peer."""
        return (
            address.id in self._dialing
            or self.peers.has(address.id)
            or (not self.config.allow_duplicate_ip and self.peers.has_ip(address.ip))
        )

    # ------------------------------------------------------------------ dialing

    def dial_peers_async(self, addresses: Sequence[NetAddress]) -> None:
        """Dial each address in the background in random order, each after a random wait.

        Errors are logged; a persistent address that fails starts its reconnect loop.
        """
        ours = self.node_info.node_id
        order = list(addresses)
        self.rng.shuffle(order)
        for address in order:
            if address.id == ours:
                continue
            self._spawn(self._dial_later(address), f"dial-{address.id[:12]}")

    async def _dial_later(self, address: NetAddress) -> None:
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

        Returns:
            The started Peer.

        Raises:
            AlreadyConnectedError: the ID or IP is already dialing or connected.
            ConnectionBrokenError: the TCP connect failed.
            RejectedError: the upgrade pipeline or the Switch refused the peer.
        """
        if self.is_dialing_or_existing_address(address):
            raise AlreadyConnectedError(f"{address} is already dialing or connected")
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
            return
        if self.is_peer_persistent(address) and self._running:
            cooled = isinstance(exc, RejectedError) and exc.reason is RejectReason.INCOMPATIBLE
            self._start_reconnect(address, cooled_down=cooled, first_delay_known=True)

    # ------------------------------------------------------------------ reconnect

    def _start_reconnect(
        self, address: NetAddress, *, cooled_down: bool = False, first_delay_known: bool = False
    ) -> None:
        if address.id in self._reconnecting or not self._running:
            return
        self._reconnecting.add(address.id)
        self._spawn(
            self._reconnect(address, cooled_down, skip_first=first_delay_known),
            f"reconnect-{address.id[:12]}",
        )

    async def _reconnect(self, address: NetAddress, cooled_down: bool, skip_first: bool) -> None:
        policy = self.reconnect_policy
        delays = policy.delays(cooled_down=cooled_down)
        if skip_first and delays and delays[0] == 0.0:
            # The failed dial that started us was attempt one.
            delays = delays[1:] if len(delays) > 1 else delays
            delays[0] = max(delays[0], policy.fast_interval_s)
        try:
            for attempt, delay in enumerate(delays, start=1):
                if not self._running:
                    return
                wait = delay + (self.rng.uniform(0, policy.jitter_s) if policy.jitter_s else 0.0)
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self._running:
                    return
                try:
                    await self._dial_for_reconnect(address)
                    return
                except AlreadyConnectedError:
                    return
                except RejectedError as exc:
                    if exc.reason is RejectReason.SELF:
                        return
                    logger.info("[%s] reconnect attempt %d failed: %s", address.id, attempt, exc)
                except CometP2PError as exc:
                    logger.info("[%s] reconnect attempt %d failed: %s", address.id, attempt, exc)
            logger.warning("[%s] giving up reconnecting to %s", address.id, address)
        finally:
            self._reconnecting.discard(address.id)

    async def _dial_for_reconnect(self, address: NetAddress) -> None:
        if self.is_dialing_or_existing_address(address):
            raise AlreadyConnectedError(f"{address} is already dialing or connected")
        self._dialing.add(address.id)
        try:
            upgraded = await self.transport.dial(address)
            await self._add_upgraded(upgraded)
        finally:
            self._dialing.discard(address.id)

    # ------------------------------------------------------------------ accepting

    def _on_rejected(self, error: CometP2PError, peer_address: tuple[str, int]) -> None:
        logger.info("inbound peer %s:%d rejected: %s", peer_address[0], peer_address[1], error)
        if self.on_peer_rejected is not None:
            self.on_peer_rejected(error)

    async def _on_inbound(self, upgraded: UpgradedConnection) -> None:
        peer_id = upgraded.node_info.node_id
        if not self._running:
            await upgraded.secret.close()
            return
        if peer_id not in self._unconditional:
            _, inbound, _ = self.num_peers()
            if inbound >= self.config.max_num_inbound_peers:
                await upgraded.secret.close()
                self._on_rejected(
                    RejectedError(
                        RejectReason.LIMIT,
                        f"inbound limit reached ({self.config.max_num_inbound_peers} peers)",
                        node_id=peer_id,
                    ),
                    upgraded.secret.remote_address(),
                )
                return
        try:
            await self._add_upgraded(upgraded)
        except CometP2PError as exc:
            self._on_rejected(exc, upgraded.secret.remote_address())

    # ------------------------------------------------------------------ admission

    def _socket_address(self, upgraded: UpgradedConnection) -> NetAddress:
        if upgraded.dialed_address is not None:
            return upgraded.dialed_address
        ip, port = upgraded.secret.remote_address()
        return NetAddress.parse(
            f"{upgraded.node_info.node_id}@{_host_port(ip, port)}", resolve=False
        )

    def _self_reported_address(self, info: NodeInfo) -> NetAddress | None:
        try:
            return info.net_address()
        except NetAddressError:
            return None

    async def _add_upgraded(self, upgraded: UpgradedConnection) -> Peer:
        info = upgraded.node_info
        socket_address = self._socket_address(upgraded)
        if upgraded.outbound:
            persistent = self.is_peer_persistent(socket_address)
        else:
            reported = self._self_reported_address(info)
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
        try:
            await self._filter_peer(peer)
        except CometP2PError:
            await upgraded.secret.close()
            raise
        if not self._running:
            await upgraded.secret.close()
            raise RejectedError(RejectReason.FILTERED, "switch is stopping", node_id=peer.id)
        for reactor in self._reactors.values():
            reactor.init_peer(peer)
        connection.start()
        self.peers.add(peer)
        self.metrics.peer_added()
        self._start_peer_tasks(peer)
        for reactor in self._reactors.values():
            try:
                await reactor.add_peer(peer)
            except Exception as exc:
                logger.exception("[%s] reactor %s failed in add_peer", peer.id, reactor.name)
                await self.stop_peer_for_error(peer, exc)
                break
        logger.info("[%s] added peer %r (%s)", peer.id, info.moniker, peer.socket_address)
        return peer

    async def _filter_peer(self, peer: Peer) -> None:
        if self.peers.has(peer.id):
            raise RejectedError(RejectReason.DUPLICATE, "already connected", node_id=peer.id)
        for peer_filter in self.peer_filters:
            try:
                await peer_filter(self.peers, peer)
            except CometP2PError as exc:
                raise RejectedError(RejectReason.FILTERED, str(exc), node_id=peer.id) from exc

    # ------------------------------------------------------------------ per-peer tasks

    def _start_peer_tasks(self, peer: Peer) -> None:
        tasks = [
            asyncio.create_task(self._consume(peer, desc.id), name=f"recv-{peer.id[:8]}-{desc.id}")
            for desc in self._channels
        ]
        tasks.append(asyncio.create_task(self._watch(peer), name=f"watch-{peer.id[:8]}"))
        self._peer_tasks[peer.id] = tasks

    async def _consume(self, peer: Peer, channel_id: int) -> None:
        reactor = self._reactor_by_channel[channel_id]
        connection = peer.connection
        while True:
            try:
                data = await connection.receive(channel_id)
            except CometP2PError:
                return  # the watcher reports why the connection ended
            try:
                message = reactor.decode(channel_id, data)
                self.metrics.record_receive(peer.id, channel_id, message, len(data))
                await reactor.receive(Envelope(channel_id, peer, message))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "[%s] reactor %s failed on channel %#04x: %r",
                    peer.id,
                    reactor.name,
                    channel_id,
                    exc,
                )
                self._spawn(self.stop_peer_for_error(peer, exc), f"stop-{peer.id[:8]}")
                return

    async def _watch(self, peer: Peer) -> None:
        error = await peer.connection.wait_closed()
        if self.peers.get(peer.id) is not peer:
            return
        if error is None:
            await self._stop_and_remove_peer(peer, None, cancel_self=False)
        else:
            await self.stop_peer_for_error(peer, error, cancel_self=False)

    # ------------------------------------------------------------------ removal

    async def stop_peer_for_error(
        self, peer: Peer, reason: BaseException, *, cancel_self: bool = True
    ) -> None:
        """Stop ``peer`` because of ``reason``; reconnect if it is persistent.

        The reconnect target is the dialed address for outbound peers and the peer's
        self-reported listen address for inbound ones.
        """
        if self.peers.get(peer.id) is not peer:
            return
        logger.warning("[%s] stopping peer for error: %s", peer.id, reason)
        await self._stop_and_remove_peer(peer, reason, cancel_self=cancel_self)
        if peer.is_persistent and self._running:
            target = (
                peer.socket_address
                if peer.is_outbound
                else self._self_reported_address(peer.node_info)
            )
            if target is not None:
                self._start_reconnect(target)

    async def stop_peer_gracefully(self, peer: Peer) -> None:
        """Stop ``peer`` after flushing what is queued to it; never reconnects."""
        if self.peers.get(peer.id) is not peer:
            return
        await peer.flush_stop()
        await self._stop_and_remove_peer(peer, None)

    async def _stop_and_remove_peer(
        self, peer: Peer, reason: BaseException | None, *, cancel_self: bool = True
    ) -> None:
        if self.peers.get(peer.id) is not peer:
            return
        self.peers.remove(peer)
        self.metrics.peer_removed()
        self.metrics.forget_peer(peer.id)
        current = asyncio.current_task()
        for task in self._peer_tasks.pop(peer.id, []):
            if task is not current and (cancel_self or task.get_name().startswith("recv-")):
                task.cancel()
        await peer.connection.close(flush_timeout_s=0.5)
        for reactor in self._reactors.values():
            try:
                await reactor.remove_peer(peer, reason)
            except Exception:
                logger.exception("[%s] reactor %s failed in remove_peer", peer.id, reactor.name)

    # ------------------------------------------------------------------ sending

    async def broadcast(
        self, channel_id: int, message: bytes, timeout_s: float = 10.0
    ) -> dict[NodeID, bool]:
        """Send ``message`` to every peer concurrently (blocking send, ≤ ``timeout_s`` each).

        Returns:
            ``{peer_id: queued}`` for every peer of the snapshot.
        """
        peers = self.peers.list()
        results = await asyncio.gather(
            *(peer.send(channel_id, message, timeout_s) for peer in peers)
        )
        return {peer.id: ok for peer, ok in zip(peers, results, strict=True)}

    def mark_peer_as_good(self, peer: Peer) -> None:
        """Tell the address book (if any reactor keeps one) that ``peer`` behaves well."""
        for reactor in self._reactors.values():
            mark_good = getattr(reactor, "mark_peer_as_good", None)
            if callable(mark_good):
                mark_good(peer)


def _parse_addresses(items: Iterable[str], what: str) -> list[NetAddress]:
    addresses: list[NetAddress] = []
    for item in items:
        try:
            addresses.append(NetAddress.parse(item))
        except NetAddressLookupError as exc:
            logger.warning("skipping %s entry %r: %s", what, item, exc)
    return addresses


def _split_laddr(laddr: str) -> tuple[str, int]:
    rest = laddr.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise NetAddressError(f"listen address must be [tcp://]host:port, got {laddr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
