"""How the PEX reactor sees a peer and its own node: peer refs, our addresses, the seeds.

Three small jobs of the :class:`~cometp2p.pex.reactor.PEXReactor` that are not rules:

* a connected :class:`~cometp2p.switch.peer.Peer` becomes the
  :class:`~cometp2p.pex.core.PeerRef` the sans-IO core reasons about (listen address,
  dialect), cached on the peer, a host name resolved off the loop, and moved to v0.35's
  rules when the peer speaks V2 (behaviour.md §9.1);
* our configured and advertised addresses are registered with the book, so no address
  of ours is ever stored or gossiped (CometBFT does it in node setup);
* the configured seeds are parsed, resolving host names off the loop (behaviour.md §4.6).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Final

from cometp2p.errors import ConfigError, NetAddressError, NetAddressLookupError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.core import PeerRef, PexCore
from cometp2p.pex.dialect import PexDialect, dialect_of_version
from cometp2p.switch.peer import Peer
from cometp2p.switch.switch import Switch
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = [
    "listen_address",
    "peer_ref",
    "register_configured_addresses",
    "register_listen_address",
    "resolve_peer_ref",
    "resolve_seeds",
    "speaks_v035",
]

logger = logging.getLogger("cometp2p.pex.reactor")  # the reactor's log, as before the split

_PEER_KEY: Final = "pex.peer"


def listen_address(info: NodeInfo) -> NetAddress | None:
    """``info``'s listen address without DNS, or ``None`` if it is not ``id@ip:port``."""
    try:
        return info.net_address(resolve=False)
    except NetAddressError:
        return None


def _parse_no_dns(text: str) -> NetAddress | None:
    try:
        return NetAddress.parse(text, resolve=False)
    except NetAddressError:
        return None


# -- peer refs --------------------------------------------------------------------------


def peer_ref(peer: Peer) -> PeerRef:
    """The :class:`PeerRef` of ``peer``, made on first use and kept on the peer."""
    ref = peer.get(_PEER_KEY)
    if isinstance(ref, PeerRef):
        return ref
    ref = PeerRef(
        peer.id,
        peer.is_outbound,
        peer.socket_address,
        listen_address(peer.node_info),
        dialect_of_version(peer.node_info.version),
    )
    peer.set(_PEER_KEY, ref)
    return ref


def speaks_v035(peer: Peer) -> None:
    """The peer sent a V2 message: from now on it is held to v0.35's rules."""
    ref = peer_ref(peer)
    if ref.dialect is not PexDialect.V035:
        logger.debug("[%s] sent a V2 PEX message: treated as tendermint v0.35", peer.id)
        peer.set(_PEER_KEY, dataclasses.replace(ref, dialect=PexDialect.V035))


async def resolve_peer_ref(peer: Peer) -> PeerRef:
    """The peer's ref, resolving a host name in its listen address off the loop."""
    ref = peer_ref(peer)
    if ref.listen_address is not None:
        return ref
    try:
        peer.node_info.net_address(resolve=False)
    except NetAddressLookupError:
        try:
            resolved = await asyncio.to_thread(peer.node_info.net_address)
        except NetAddressError:
            return ref
        ref = dataclasses.replace(ref, listen_address=resolved)
        peer.set(_PEER_KEY, ref)
    except NetAddressError:
        pass
    return ref


# -- our own addresses ------------------------------------------------------------------


def register_configured_addresses(book: AddrBook, core: PexCore, switch: Switch) -> None:
    """Our configured addresses never enter the book (Go: node setup)."""
    our_id = switch.node_info.node_id
    book.add_our_id(our_id)
    for host_port in (switch.config.external_address, switch.config.laddr):
        if host_port:
            addr = _parse_no_dns(f"{our_id}@{host_port.split('://', 1)[-1]}")
            if addr is not None:
                book.add_our_address(addr)
    register_listen_address(book, core, switch)


def register_listen_address(book: AddrBook, core: PexCore, switch: Switch) -> NetAddress | None:
    """Our advertised address (known only once the Switch listens) is ours too; once it
    has a port it is also the core's ``self_address``. Returns it (``None`` if unusable)."""
    ours = listen_address(switch.node_info)
    if ours is not None:
        book.add_our_address(ours)
        if ours.port != 0:  # port 0: configured, not yet listening
            core.self_address = ours
    return ours


# -- seeds ------------------------------------------------------------------------------


async def resolve_seeds(texts: Sequence[str]) -> tuple[NetAddress, ...]:
    """Parse the configured seeds, resolving host names off the loop; a seed that does
    not resolve is logged and left out.

    Raises:
        ConfigError: a seed address is malformed.
    """
    seeds: list[NetAddress] = []
    for text in texts:
        try:
            seeds.append(NetAddress.parse(text, resolve=False))
            continue
        except NetAddressLookupError:
            pass
        except NetAddressError as exc:
            raise ConfigError(f"seed node configuration has error: {exc}") from exc
        try:
            seeds.append(await asyncio.to_thread(NetAddress.parse, text))
        except NetAddressLookupError as exc:
            logger.error("seed %s does not resolve: %s", text, exc)
        except NetAddressError as exc:
            raise ConfigError(f"seed node configuration has error: {exc}") from exc
    return tuple(seeds)
