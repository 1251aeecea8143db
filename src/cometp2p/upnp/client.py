"""UPnP IGD client: SSDP discovery, the device description, WANIPConnection actions.

Behaviour follows tendermint v0.34's ``p2p/upnp`` (behaviour.md §7.1, §7.2) with its
quirks fixed: the search asks for ``InternetGatewayDevice:1`` directly (Go sends
``ssdp:all``, drops the first answer and keeps only answers naming
``InternetGatewayDevice:1``, so it never finds a gateway that announces IGD:2 types, as
miniupnpd built with IGD v2 does); the internal client is our address on the route to
the gateway (Go takes the first non-loopback IPv4 of any interface); every step has its
own timeout; each failure is a typed :class:`~cometp2p.upnp.errors.UpnpError` with its
reason.

Why a library: SSDP, the description and SOAP are done by ``async-upnp-client`` (the
optional extra ``cometp2p[upnp]``), which can be aimed at what we need: its SSDP search
listener binds to a given source address (``IP_MULTICAST_IF`` and the group membership
on that interface), and its device factory takes a description URL, so a known gateway
can be used without any search. Its HTTP requests go through an aiohttp session of ours
whose connector is bound to the same source address. No SSDP or SOAP code is written
here; this module only picks the service, maps the library's errors to ours and bounds
every step with :func:`asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import socket
import struct
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from cometp2p.errors import ConfigError, LocalProtocolError
from cometp2p.upnp.errors import (
    UpnpActionRefusedError,
    UpnpDescriptionError,
    UpnpNoAnswerError,
    UpnpNoWANIPConnectionError,
    UpnpUnavailableError,
)

if TYPE_CHECKING:
    import aiohttp
    from async_upnp_client.client import UpnpService

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "IGD_DEVICE_V1",
    "WANIP_SERVICE_V1",
    "Gateway",
    "discover",
    "interface_ipv4",
    "open_gateway",
    "search",
]

DEFAULT_TIMEOUT_S: Final = 3.0
"""Default bound of each step (search, description, one action), as Go's 3 s deadline."""

IGD_DEVICE_V1: Final = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
WANIP_SERVICE_V1: Final = "urn:schemas-upnp-org:service:WANIPConnection:1"
_WANIP_PREFIX: Final = ":service:WANIPConnection:"
_SEARCH_RESEND_S: Final = 1.0  # SSDP is UDP: repeat the search while waiting
_SEARCH_MX_S: Final = 1
_USER_AGENT: Final = "cometp2p UPnP/1.1 MiniUPnPc/2.2"
_SIOCGIFADDR: Final = 0x8915


def _library() -> Any:
    """Import async-upnp-client, or raise :class:`UpnpUnavailableError`."""
    try:
        import async_upnp_client
    except ImportError as exc:
        raise UpnpUnavailableError(
            "async-upnp-client is not installed: pip install 'cometp2p[upnp]'"
        ) from exc
    return async_upnp_client


def _why(exc: BaseException) -> str:
    """The innermost cause of ``exc`` in a few words (an OS error's text if there is one)."""
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(inner) or type(inner).__name__


def interface_ipv4(name: str) -> str:
    """The IPv4 address of network interface ``name`` (Linux ``SIOCGIFADDR``).

    Raises:
        ConfigError: no such interface, or it has no IPv4 address.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError as exc:
            raise ConfigError(f"interface {name!r}: no IPv4 address ({exc.strerror})") from exc
    return socket.inet_ntoa(packed[20:24])


def _local_ip_towards(host: str, source_ip: str | None) -> str:
    """Our address on the route to ``host``: ``source_ip`` if given, else the kernel's choice.

    A connected UDP socket sends nothing; ``getsockname`` shows the chosen source.
    """
    if source_ip:
        return source_ip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, 1900))
        except OSError as exc:
            raise UpnpNoAnswerError(f"no route to the gateway {host}: {exc.strerror}") from exc
        return str(sock.getsockname()[0])


async def search(*, source_ip: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Search for an Internet Gateway Device over SSDP; return its description URL.

    Sends ``M-SEARCH`` for ``ST: InternetGatewayDevice:1`` to 239.255.255.250:1900 from
    ``source_ip`` (its interface; default: the kernel's multicast route), again every
    second, and returns the ``LOCATION`` of the first answer.

    Raises:
        UpnpNoAnswerError: nothing answered within ``timeout_s`` seconds, or the search
            could not be sent (no multicast route, bad source address).
        UpnpUnavailableError: the ``upnp`` extra is not installed.
    """
    _library()
    from async_upnp_client.search import SsdpSearchListener

    loop = asyncio.get_running_loop()
    found: asyncio.Future[str] = loop.create_future()

    def on_answer(headers: Any) -> None:
        location = headers.get_lower("location")
        st = str(headers.get_lower("st") or "")
        if location and "InternetGatewayDevice" in st and not found.done():
            found.set_result(str(location))

    listener = SsdpSearchListener(
        callback=on_answer,
        loop=loop,
        source=(source_ip or "0.0.0.0", 0),
        search_target=IGD_DEVICE_V1,
        timeout=_SEARCH_MX_S,
    )
    try:
        async with asyncio.timeout(timeout_s):
            try:
                await listener.async_start()
            except OSError as exc:
                raise UpnpNoAnswerError(f"cannot send the SSDP search: {exc}") from exc
            while True:
                listener.async_search()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_SEARCH_RESEND_S):
                        return await asyncio.shield(found)
    except TimeoutError:
        raise UpnpNoAnswerError(
            f"no gateway answered the SSDP search within {timeout_s:g} s"
        ) from None
    finally:
        listener.async_stop()


def _session(source_ip: str | None, timeout_s: float) -> aiohttp.ClientSession:
    import aiohttp

    connector = aiohttp.TCPConnector(
        local_addr=(source_ip, 0) if source_ip else None, force_close=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers={"User-Agent": _USER_AGENT},
        trust_env=False,  # never through a proxy from the environment
    )


def _find_wanip(device: Any) -> UpnpService | None:
    services = [s for s in device.all_services if _WANIP_PREFIX in s.service_type]
    services.sort(key=lambda s: (s.service_type != WANIP_SERVICE_V1, s.service_type))
    return services[0] if services else None


async def open_gateway(
    location: str, *, source_ip: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Gateway:
    """Read the device description at ``location`` and return the gateway's WANIPConnection.

    The root device must be an ``InternetGatewayDevice``; its WANIPConnection service
    (version 1 preferred) may sit anywhere in the device tree (Go also accepts it directly
    in the WANDevice, for non-conforming routers). HTTP goes out from ``source_ip`` when
    given. Close the result with :meth:`Gateway.aclose` (or use ``async with``).

    Raises:
        UpnpDescriptionError: the description (or a service description) cannot be
            fetched within ``timeout_s`` seconds, has an HTTP error status, or is not
            valid UPnP XML.
        UpnpNoWANIPConnectionError: not an IGD, or no WANIPConnection service.
        UpnpUnavailableError: the ``upnp`` extra is not installed.
    """
    _library()
    from async_upnp_client.aiohttp import AiohttpSessionRequester
    from async_upnp_client.client_factory import UpnpFactory
    from async_upnp_client.exceptions import UpnpError as LibraryError

    session = _session(source_ip, timeout_s)
    try:
        requester = AiohttpSessionRequester(session, timeout=max(1, round(timeout_s)))
        factory = UpnpFactory(requester, non_strict=True)
        try:
            async with asyncio.timeout(timeout_s):
                device = await factory.async_create_device(location)
        except TimeoutError:
            raise UpnpDescriptionError(
                f"{location}: no description within {timeout_s:g} s"
            ) from None
        except (LibraryError, ValueError, OSError) as exc:
            raise UpnpDescriptionError(f"{location}: {_why(exc)}") from exc
        if "InternetGatewayDevice" not in device.device_type:
            raise UpnpNoWANIPConnectionError(
                f"{location}: device type {device.device_type!r} is not an InternetGatewayDevice"
            )
        service = _find_wanip(device)
        if service is None:
            raise UpnpNoWANIPConnectionError(f"{location}: the gateway has no WANIPConnection")
        host = urllib.parse.urlsplit(service.control_url).hostname or ""
        local_ip = _local_ip_towards(host, source_ip)
    except BaseException:
        await session.close()
        raise
    return Gateway(
        location=location,
        control_url=service.control_url,
        service_type=service.service_type,
        friendly_name=str(device.friendly_name),
        local_ip=local_ip,
        timeout_s=timeout_s,
        _service=service,
        _session=session,
    )


async def discover(
    *, source_ip: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Gateway:
    """:func:`search` then :func:`open_gateway`, each bounded by ``timeout_s`` seconds.

    Raises:
        UpnpError: see :func:`search` and :func:`open_gateway`.
    """
    location = await search(source_ip=source_ip, timeout_s=timeout_s)
    return await open_gateway(location, source_ip=source_ip, timeout_s=timeout_s)


@dataclass(eq=False)
class Gateway:
    """A gateway's WANIPConnection service (behaviour.md §7.2), from :func:`open_gateway`.

    Attributes:
        location: the device description URL.
        control_url: the WANIPConnection control URL (absolute).
        service_type: e.g. ``urn:schemas-upnp-org:service:WANIPConnection:1``.
        friendly_name: the device's friendly name.
        local_ip: our address towards the gateway, the default internal client.
        timeout_s: the bound of each action, in seconds.
    """

    location: str
    control_url: str
    service_type: str
    friendly_name: str
    local_ip: str
    timeout_s: float
    _service: UpnpService
    _session: aiohttp.ClientSession

    @property
    def urn_domain(self) -> str:
        """The service type's domain, usually ``schemas-upnp-org`` (Go's ``urnDomain``)."""
        parts = self.service_type.split(":")
        return parts[1] if len(parts) > 1 else ""

    async def _call(self, action: str, **arguments: Any) -> dict[str, Any]:
        from async_upnp_client.exceptions import UpnpActionError, UpnpConnectionTimeoutError
        from async_upnp_client.exceptions import UpnpError as LibraryError

        if not self._service.has_action(action):
            raise UpnpActionRefusedError(action, f"{self.service_type} has no such action")
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self._service.action(action).async_call(**arguments)
        except (TimeoutError, UpnpConnectionTimeoutError):
            raise UpnpNoAnswerError(
                f"{action}: {self.control_url} did not answer within {self.timeout_s:g} s"
            ) from None
        except UpnpActionError as exc:
            raise UpnpActionRefusedError(
                action, f"UPnP error {exc.error_code} ({exc.error_desc})", exc.error_code
            ) from exc
        except (LibraryError, ValueError, OSError) as exc:
            raise UpnpActionRefusedError(action, _why(exc)) from exc
        return dict(result)

    async def get_external_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """``GetExternalIPAddress``: the gateway's external IP.

        Raises:
            UpnpActionRefusedError: the action failed, or the result is not an IP address.
            UpnpNoAnswerError: no answer within :attr:`timeout_s`.
        """
        result = await self._call("GetExternalIPAddress")
        text = str(result.get("NewExternalIPAddress") or "")
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise UpnpActionRefusedError(
                "GetExternalIPAddress", f"NewExternalIPAddress {text!r} is not an IP address"
            ) from None

    async def add_port_mapping(
        self,
        protocol: str,
        external_port: int,
        internal_port: int,
        description: str,
        lease_s: int,
        *,
        internal_client: str | None = None,
    ) -> int:
        """``AddPortMapping`` for any remote host, enabled, to ``internal_client``.

        Args:
            protocol: ``"tcp"`` or ``"udp"`` (any case).
            external_port: port on the gateway's external address.
            internal_port: port on the internal client.
            description: ``NewPortMappingDescription``.
            lease_s: ``NewLeaseDuration`` in seconds (0 = permanent; must be < 86400).
            internal_client: default :attr:`local_ip`.

        Returns:
            ``external_port``.

        Raises:
            LocalProtocolError: bad protocol, port or lease (nothing is sent).
            UpnpActionRefusedError: the gateway refused (e.g. 718 ConflictInMappingEntry).
            UpnpNoAnswerError: no answer within :attr:`timeout_s`.
        """
        proto = _protocol(protocol)
        _check_port(external_port)
        _check_port(internal_port)
        if not 0 <= lease_s < 86_400:
            raise LocalProtocolError(f"lease must be 0..86399 s, got {lease_s}")
        await self._call(
            "AddPortMapping",
            NewRemoteHost="",
            NewExternalPort=external_port,
            NewProtocol=proto,
            NewInternalPort=internal_port,
            NewInternalClient=internal_client or self.local_ip,
            NewEnabled=True,
            NewPortMappingDescription=description,
            NewLeaseDuration=lease_s,
        )
        return external_port

    async def delete_port_mapping(self, protocol: str, external_port: int) -> None:
        """``DeletePortMapping`` of ``external_port`` for any remote host.

        Raises:
            LocalProtocolError: bad protocol or port.
            UpnpActionRefusedError: refused (e.g. 714 NoSuchEntryInArray).
            UpnpNoAnswerError: no answer within :attr:`timeout_s`.
        """
        proto = _protocol(protocol)
        _check_port(external_port)
        await self._call(
            "DeletePortMapping", NewRemoteHost="", NewExternalPort=external_port, NewProtocol=proto
        )

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _protocol(protocol: str) -> str:
    proto = protocol.upper()
    if proto not in ("TCP", "UDP"):
        raise LocalProtocolError(f"protocol must be tcp or udp, got {protocol!r}")
    return proto


def _check_port(port: int) -> None:
    if not 1 <= port <= 65_535:
        raise LocalProtocolError(f"port must be 1..65535, got {port}")
