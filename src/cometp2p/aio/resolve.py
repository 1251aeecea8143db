"""DNS for addresses, opt-in and asynchronous (wire.md §6.2).

The wire layer never resolves a name by default: :meth:`NetAddress.parse
<cometp2p.wire.netaddress.NetAddress.parse>` accepts IP literals only unless asked
otherwise. Code on an event loop resolves with :func:`resolve_address`, which asks
``loop.getaddrinfo`` (the default executor) and so never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable

from cometp2p.errors import NetAddressLookupError
from cometp2p.wire.netaddress import NetAddress, parse_ip, split_address

__all__ = ["check_address", "resolve_address", "resolve_addresses"]


def check_address(item: str | NetAddress) -> None:
    """Check the syntax of ``[scheme://]id@host:port`` without resolving anything.

    Raises:
        NetAddressError: as :func:`~cometp2p.wire.netaddress.split_address`.
    """
    if not isinstance(item, NetAddress):
        split_address(item)


async def resolve_address(item: str | NetAddress) -> NetAddress:
    """Parse ``[scheme://]id@host:port``, resolving a host name without blocking the loop.

    The first IP ``getaddrinfo`` returns is used, as :meth:`NetAddress.parse` with
    ``resolve=True`` does. A :class:`NetAddress` is returned as it is.

    Raises:
        NetAddressError: the text is malformed (see ``split_address``).
        NetAddressLookupError: the name does not resolve.
    """
    if isinstance(item, NetAddress):
        return item
    node_id, host, port = split_address(item)
    ip = parse_ip(host)
    if ip is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError) as exc:
            raise NetAddressLookupError(f"cannot resolve host {host!r}: {exc}") from exc
        for info in infos:
            ip = parse_ip(str(info[4][0]).split("%", 1)[0])
            if ip is not None:
                break
        else:
            raise NetAddressLookupError(f"cannot resolve host {host!r}: no IP address returned")
    return NetAddress(node_id, ip, port)


async def resolve_addresses(
    items: Iterable[str | NetAddress], what: str, logger: logging.Logger
) -> list[NetAddress]:
    """Resolve many addresses; names that do not resolve are logged and skipped.

    Args:
        items: address strings or NetAddresses.
        what: what the list is, for the log line (e.g. ``"persistent_peers"``).
        logger: where a skipped entry is reported (WARNING).

    Raises:
        NetAddressError: an entry is malformed (raised before anything is resolved).
    """
    items = list(items)
    for item in items:
        check_address(item)
    addresses: list[NetAddress] = []
    for item in items:
        try:
            addresses.append(await resolve_address(item))
        except NetAddressLookupError as exc:
            logger.warning("skipping %s entry %r: %s", what, item, exc)
    return addresses
