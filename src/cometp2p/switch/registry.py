"""The Switch's peer registry (behaviour.md §1.5, §1.7): who is connected, who is being
dialed, and which node IDs are unconditional, private or persistent.

One job: hold that state and answer questions about it (counting, duplicate checks).
It runs no task and does no I/O; the Switch owns one and keeps the public methods of
the same names, which delegate here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from cometp2p.errors import NetAddressLookupError
from cometp2p.switch.peer import PeerSet
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, validate_node_id

__all__ = ["PeerRegistry", "parse_literal_addresses"]


class PeerRegistry:
    """The connected peers, the IDs being dialed, and the special peer IDs.

    Attributes:
        peers: the connected peers.
        dialing: IDs with a dial in progress.
        unconditional: IDs exempt from the inbound limit and the outbound count.
        private: IDs never gossiped.
        persistent: the persistent peers once set or resolved (``None``: from the config).
        persistent_given: the entries given to :meth:`set_persistent` (resolved at start).
    """

    def __init__(self) -> None:
        self.peers = PeerSet()
        self.dialing: set[NodeID] = set()
        self.unconditional: set[NodeID] = set()
        self.private: set[NodeID] = set()
        self.persistent: list[NetAddress] | None = None
        self.persistent_given: list[str | NetAddress] | None = None

    def add_unconditional(self, ids: Iterable[str]) -> None:
        """Add unconditional IDs.

        Raises:
            NetAddressError: an ID is malformed.
        """
        for node_id in ids:
            self.unconditional.add(validate_node_id(node_id))

    def add_private(self, ids: Iterable[str]) -> None:
        """Add private IDs.

        Raises:
            NetAddressError: an ID is malformed.
        """
        for node_id in ids:
            self.private.add(validate_node_id(node_id))

    def set_persistent(self, addresses: Iterable[str | NetAddress]) -> None:
        """Replace the persistent peers; host names wait for the Switch's start.

        Raises:
            NetAddressError: an address is malformed.
        """
        given = list(addresses)
        self.persistent = parse_literal_addresses(given)
        self.persistent_given = given

    def persistent_list(self, configured: Iterable[str]) -> list[NetAddress]:
        """The persistent peers; ``configured`` (the config's) until they were set."""
        if self.persistent is None:
            return parse_literal_addresses(configured)
        return list(self.persistent)

    def is_persistent(self, address: NetAddress) -> bool:
        """True if ``address`` equals (``id@ip:port``) one of the persistent peers."""
        return any(address == p for p in self.persistent or ())

    def num_peers(self) -> tuple[int, int, int]:
        """``(outbound, inbound, dialing)``; unconditional peers are not counted."""
        outbound = inbound = 0
        for peer in self.peers:
            if peer.id in self.unconditional:
                continue
            if peer.is_outbound:
                outbound += 1
            else:
                inbound += 1
        return outbound, inbound, len(self.dialing)

    def is_dialing_or_existing_address(
        self, address: NetAddress, *, allow_duplicate_ip: bool
    ) -> bool:
        """True if ``address``'s ID is being dialed or connected, or (unless
        ``allow_duplicate_ip``) its IP already belongs to a peer."""
        return (
            address.id in self.dialing
            or self.peers.has(address.id)
            or (not allow_duplicate_ip and self.peers.has_ip(address.ip))
        )


def parse_literal_addresses(items: Iterable[str | NetAddress]) -> list[NetAddress]:
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
