"""Starting and stopping the Switch, step by step and in order (behaviour.md §1.3, §1.4).

One job: the sequence of :meth:`Switch.start` (read the config, open the task groups,
start the reactors, listen, advertise the bound port, dial the persistent peers) and of
:meth:`Switch.stop` (stop listening, close the dial group, remove every peer, close the
peer and removal groups, stop the reactors). The Switch owns one :class:`SwitchRunner`
and keeps ``start``/``stop``, which delegate here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Sequence
from typing import Protocol

from cometp2p.aio.fuzz import fuzzer_from_config
from cometp2p.aio.resolve import resolve_addresses
from cometp2p.aio.transport import Transport
from cometp2p.config import P2PConfig
from cometp2p.errors import LocalProtocolError, NetAddressError
from cometp2p.switch import admission
from cometp2p.switch.admission import Admitter
from cometp2p.switch.consumers import PeerTasks
from cometp2p.switch.lifecycle import Lifecycle
from cometp2p.switch.peer import Peer, PeerSet
from cometp2p.switch.reactor import Reactor
from cometp2p.switch.registry import PeerRegistry
from cometp2p.switch.removal import PeerRemover
from cometp2p.switch.tasks import TaskSupervisor
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = ["RunnerOwner", "SwitchRunner", "split_laddr"]

logger = logging.getLogger("cometp2p.switch.switch")  # the Switch's log, as before the split


class RunnerOwner(Protocol):
    """What starting and stopping need of the Switch that owns the runner."""

    config: P2PConfig
    node_info: NodeInfo
    rng: random.Random
    filter_timeout_s: float
    transport: Transport
    registry: PeerRegistry
    peers: PeerSet
    lifecycle: Lifecycle
    listen_address: tuple[str, int] | None
    _running: bool
    _reactors: dict[str, Reactor]

    @property
    def node_id(self) -> NodeID: ...

    def dial_peers_async(self, addresses: Sequence[NetAddress | str]) -> None: ...


class SwitchRunner:
    """Starts and stops one Switch.

    Args:
        owner: the Switch.
        background: the group of its dials and reconnect loops.
        peer_tasks: its per-peer tasks (their group is opened and closed here).
        remover: its peer removal (idem).
        admitter: its admission pipeline (the listener's callbacks).
    """

    def __init__(
        self,
        owner: RunnerOwner,
        background: TaskSupervisor,
        peer_tasks: PeerTasks,
        remover: PeerRemover,
        admitter: Admitter,
    ) -> None:
        self._owner = owner
        self._admitter = admitter
        self._remover = remover
        # Opened in this order, closed in the reverse... except the background group,
        # closed first so no dial or reconnect runs while the peers are removed.
        self._groups = (remover.stoppers, peer_tasks.group, background)

    def configure_transport(self) -> None:
        """Copy the Switch's settings to its transport (also done again by :meth:`start`)."""
        owner = self._owner
        t = owner.transport
        t.node_info = owner.node_info
        t.handshake_timeout_s = owner.config.handshake_timeout_s
        t.dial_timeout_s = owner.config.dial_timeout_s
        t.allow_duplicate_ip = owner.config.allow_duplicate_ip
        t.filter_timeout_s = owner.filter_timeout_s
        # Go's listener limit: max inbound peers plus the unconditional ones (§1.5).
        t.max_incoming_handshakes = owner.config.max_num_inbound_peers + len(
            owner.registry.unconditional
        )

    async def _load_config(self) -> tuple[str, int]:
        """Resolve the persistent peers, add the special IDs, configure the transport.

        Returns:
            The ``(host, port)`` to listen on.
        """
        owner = self._owner
        config = owner.config
        registry = owner.registry
        given = registry.persistent_given
        registry.persistent = await resolve_addresses(
            config.persistent_peers if given is None else given, "persistent_peers", logger
        )
        registry.add_unconditional(config.unconditional_peer_ids)
        registry.add_private(config.private_peer_ids)
        host, port = split_laddr(config.laddr)
        self.configure_transport()
        if config.test_fuzz:  # behaviour.md §8; otherwise a wrapper set by hand stays
            owner.transport.socket_wrapper = fuzzer_from_config(config, owner.rng)
        return host, port

    async def start(self) -> None:
        """See :meth:`Switch.start`."""
        owner = self._owner
        if owner._running:
            raise LocalProtocolError("Switch already started")
        host, port = await self._load_config()
        for group in self._groups:
            await group.open()
        try:
            owner.listen_address = await self._start_reactors_and_listen(host, port)
        except BaseException:
            await self._close_groups()
            raise
        self._advertise(port)
        owner._running = True
        owner.lifecycle.mark_started()
        logger.info("switch %s listening on %s:%d", owner.node_id, *owner.listen_address)
        if owner.registry.persistent:
            owner.dial_peers_async(owner.registry.persistent)

    async def _start_reactors_and_listen(self, host: str, port: int) -> tuple[str, int]:
        """Start every reactor, then listen; on failure stop the started reactors."""
        owner = self._owner
        started: list[Reactor] = []
        try:
            for reactor in owner._reactors.values():
                await reactor.start()
                started.append(reactor)
            return await owner.transport.listen(
                host, port, self._admitter.on_inbound, self._admitter.on_rejected
            )
        except BaseException:
            for reactor in reversed(started):
                with contextlib.suppress(Exception):
                    await reactor.stop()
            raise

    def _advertise(self, port: int) -> None:
        """An ephemeral port is only known now: advertise the real one."""
        owner = self._owner
        if port != 0 or owner.config.external_address or owner.listen_address is None:
            return
        bound_host, bound_port = owner.listen_address
        owner.node_info = dataclasses.replace(
            owner.node_info, listen_addr=f"tcp://{admission.host_port(bound_host, bound_port)}"
        )
        owner.transport.node_info = owner.node_info

    async def _close_groups(self) -> None:
        for group in reversed(self._groups):
            await group.close()

    async def stop(self) -> None:
        """See :meth:`Switch.stop`."""
        owner = self._owner
        if not owner._running:
            return
        owner._running = False
        owner.lifecycle.started.clear()
        await owner.transport.close()
        await self._close_groups_after_removing(owner.peers.list())
        for reactor in owner._reactors.values():
            try:
                await reactor.stop()
            except Exception:
                logger.exception("reactor %s failed to stop", reactor.name)
        owner.lifecycle.mark_stopped()
        logger.info("switch %s stopped", owner.node_id)

    async def _close_groups_after_removing(self, peers: Sequence[Peer]) -> None:
        """Close the dial group, remove ``peers``, then close the peer and removal groups."""
        removals, peer_group, background = self._groups
        await background.close()
        await asyncio.gather(
            *(self._remover.stop_and_remove_peer(peer, None) for peer in peers),
            return_exceptions=True,
        )
        await removals.wait_idle()  # and any removal a removal started
        await peer_group.close()
        await removals.close()


def split_laddr(laddr: str) -> tuple[str, int]:
    """``(host, port)`` of a ``[tcp://]host:port`` listen address (``0.0.0.0`` if empty).

    Raises:
        NetAddressError: ``laddr`` is malformed.
    """
    rest = laddr.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise NetAddressError(f"listen address must be [tcp://]host:port, got {laddr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
