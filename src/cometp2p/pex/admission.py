"""Which addresses may enter the AddrBook: the admission rules of behaviour.md §4.8, §5.5.

One job: given an offered address and its source, say whether the book may store it,
and raise the :class:`~cometp2p.pex.errors.AddrBookError` that says why not. The rules:
both present; the address valid and its source's ID valid; not banned; neither the
address's ID nor the source's ID private; not ours (our ID, whatever the IP and port,
or one of our exact addresses); routable when the book is strict. The
:class:`~cometp2p.pex.addrbook.AddrBook` owns one :class:`AdmissionRules` and keeps the
public methods that feed it (``add_our_address``, ``add_our_id``, ``add_private_ids``).
Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from cometp2p.errors import NetAddressError
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, validate_node_id

__all__ = ["AdmissionRules", "normalise_id"]


def normalise_id(addr: NetAddress) -> NetAddress:
    """``addr`` with its ID in lowercase (IDs are hex; Go accepts either case)."""
    lowered = addr.id.lower()
    if lowered == addr.id:
        return addr
    return NetAddress(NodeID(lowered), addr.ip, addr.port)


class AdmissionRules:
    """Our own addresses and IDs, the private IDs, and the checks an offer must pass.

    Args:
        strict: ``addr_book_strict``: refuse non-routable addresses.

    Attributes:
        strict: as given.
        our_ids: our node IDs (lowercase).
    """

    __slots__ = ("_our_addrs", "_private_ids", "our_ids", "strict")

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self._our_addrs: set[str] = set()
        self.our_ids: set[NodeID] = set()
        self._private_ids: set[str] = set()

    def add_our_address(self, addr: NetAddress) -> None:
        """Remember ``addr`` (exact ``id@ip:port``, any ID case) as ours, and its ID."""
        self._our_addrs.add(str(normalise_id(addr)))
        self.our_ids.add(NodeID(addr.id.lower()))

    def is_our_address(self, addr: NetAddress) -> bool:
        """True if ``addr`` (exact ``id@ip:port``) was registered as ours."""
        return str(normalise_id(addr)) in self._our_addrs

    def add_private_ids(self, ids: Iterable[str]) -> None:
        """Refuse addresses with these IDs, and addresses they tell us about."""
        self._private_ids.update(i.lower() for i in ids)

    def check(
        self, addr: NetAddress | None, src: NetAddress | None, banned: Container[str]
    ) -> tuple[NetAddress, NetAddress]:
        """``addr`` and ``src`` with lowercase IDs if the book may store ``addr``.

        Args:
            addr: the offered address.
            src: the address of the peer that offered it.
            banned: the book's banned IDs (lowercase).

        Raises:
            AddrBookError: with reason NIL, INVALID, BANNED, PRIVATE, PRIVATE_SRC, SELF
                or NON_ROUTABLE (see :meth:`~cometp2p.pex.addrbook.AddrBook.add_address`).
        """
        if addr is None or src is None:
            raise AddrBookError(
                AddrBookErrorReason.NIL, f"expected an address and a source, got {addr}, {src}"
            )
        if not addr.valid():
            raise AddrBookError(AddrBookErrorReason.INVALID, str(addr), addr, src)
        try:
            # Sources come from handshaken NodeInfos, so their IDs are valid in practice;
            # checking keeps every stored entry loadable from addrbook.json.
            validate_node_id(src.id)
        except NetAddressError as exc:
            raise AddrBookError(
                AddrBookErrorReason.INVALID, f"source of {addr}: {exc}", addr, src
            ) from exc
        addr = normalise_id(addr)
        src = normalise_id(src)
        node_id = addr.id
        if node_id in banned:
            raise AddrBookError(AddrBookErrorReason.BANNED, str(addr), addr, src)
        if node_id in self._private_ids:
            raise AddrBookError(AddrBookErrorReason.PRIVATE, str(addr), addr, src)
        if src.id in self._private_ids:
            raise AddrBookError(AddrBookErrorReason.PRIVATE_SRC, f"{addr} from {src}", addr, src)
        if node_id in self.our_ids or str(addr) in self._our_addrs:
            raise AddrBookError(AddrBookErrorReason.SELF, str(addr), addr, src)
        if self.strict and not addr.routable():
            raise AddrBookError(AddrBookErrorReason.NON_ROUTABLE, str(addr), addr, src)
        return addr, src
