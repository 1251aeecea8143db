"""UPnP Internet Gateway Device client, probe and port mapper (behaviour.md §7).

Needs the optional extra ``cometp2p[upnp]`` (``async-upnp-client``); without it every
entry point raises :class:`UpnpUnavailableError`. See :mod:`cometp2p.upnp.client` for
why a library and what is fixed relative to tendermint's ``p2p/upnp``.
"""

from cometp2p.upnp.client import (
    DEFAULT_TIMEOUT_S,
    Gateway,
    discover,
    interface_ipv4,
    open_gateway,
    search,
)
from cometp2p.upnp.errors import (
    UpnpActionRefusedError,
    UpnpDescriptionError,
    UpnpError,
    UpnpFailure,
    UpnpNoAnswerError,
    UpnpNoWANIPConnectionError,
    UpnpUnavailableError,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Gateway",
    "UpnpActionRefusedError",
    "UpnpDescriptionError",
    "UpnpError",
    "UpnpFailure",
    "UpnpNoAnswerError",
    "UpnpNoWANIPConnectionError",
    "UpnpUnavailableError",
    "discover",
    "interface_ipv4",
    "open_gateway",
    "search",
]
