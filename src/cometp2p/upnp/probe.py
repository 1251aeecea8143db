"""The UPnP probe of ``cometp2p probe-upnp`` (behaviour.md §7.3).

As tendermint's ``upnp.Probe``: discover the gateway, read its external IP, map TCP
``port`` -> ``port`` ("Tendermint UPnP Probe", permanent lease), listen on ``port``
(then ``PortMapping`` is true), and test hairpinning: dial ``external_ip:port`` from
here and see whether ``test data`` reaches our own listener.

Fixed quirks: Hairpin compares only the bytes received (Go compares its whole 1024-byte
buffer, so it is never true); the mapping is removed whatever happened after it was
added (Go leaks it when the listener cannot be opened); the hairpin wait ends as soon as
the data arrives (Go always sleeps 1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cometp2p.upnp.client import DEFAULT_TIMEOUT_S, Gateway, discover, open_gateway
from cometp2p.upnp.errors import UpnpError

__all__ = [
    "HAIRPIN_DATA",
    "PROBE_DESCRIPTION",
    "PROBE_PORT",
    "Capabilities",
    "ProbeResult",
    "hairpin_test",
    "probe",
]

PROBE_PORT: Final = 8001
PROBE_DESCRIPTION: Final = "Tendermint UPnP Probe"
HAIRPIN_DATA: Final = b"test data"
_READ_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the gateway can do for us (Go's ``upnp.Capabilities``)."""

    port_mapping: bool = False
    hairpin: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Everything a probe learnt, and the error that stopped it (``None`` = complete).

    Attributes:
        gateway: friendly name, ``""`` if none was found.
        location: the description URL, ``""`` if none was found.
        control_url: the WANIPConnection control URL, ``""`` if none.
        local_ip: our address towards the gateway, ``""`` if none.
        external_ip: the gateway's external IP, ``""`` if unknown.
        capabilities: PortMapping and Hairpin.
        error: the failure, if the probe stopped early.
        cleanup_error: a failure to delete the probe's mapping, if any.
    """

    gateway: str = ""
    location: str = ""
    control_url: str = ""
    local_ip: str = ""
    external_ip: str = ""
    capabilities: Capabilities = Capabilities()
    error: UpnpError | OSError | None = None
    cleanup_error: UpnpError | None = None


async def hairpin_test(
    listen_host: str, port: int, external_ip: str, *, timeout_s: float = 1.0
) -> bool:
    """Listen on ``listen_host:port``, dial ``external_ip:port``, send :data:`HAIRPIN_DATA`.

    Returns:
        True if exactly that data reached our listener within ``timeout_s`` seconds.

    Raises:
        OSError: ``listen_host:port`` cannot be bound.
    """
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while len(data) < len(HAIRPIN_DATA):
                chunk = await reader.read(_READ_LIMIT - len(data))
                if not chunk:
                    break
                data += chunk
        if not received.done():
            received.set_result(data)
        writer.close()

    server = await asyncio.start_server(on_connection, listen_host, port, reuse_address=True)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(external_ip, port)
            writer.write(HAIRPIN_DATA)
            await writer.drain()
            return await received == HAIRPIN_DATA
    except (TimeoutError, OSError):
        return False
    finally:
        if writer is not None:
            writer.close()
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await server.wait_closed()


async def probe(
    *,
    port: int = PROBE_PORT,
    source_ip: str | None = None,
    location: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    hairpin_timeout_s: float = 1.0,
    log: Callable[[str], None] = lambda _line: None,
) -> ProbeResult:
    """Probe the gateway (see the module docstring). Never raises a UPnP or OS error.

    Args:
        port: internal = external TCP port to map and listen on.
        source_ip: our address to search and connect from (default: the kernel's choice).
        location: a known description URL; skips the SSDP search.
        timeout_s: bound of each UPnP step, in seconds.
        hairpin_timeout_s: how long the hairpin data may take, in seconds.
        log: receives one line per step.
    """
    try:
        if location:
            gateway = await open_gateway(location, source_ip=source_ip, timeout_s=timeout_s)
        else:
            gateway = await discover(source_ip=source_ip, timeout_s=timeout_s)
    except UpnpError as exc:
        return ProbeResult(error=exc)
    async with gateway:
        return await _probe_gateway(gateway, port, source_ip, hairpin_timeout_s, log)


async def _probe_gateway(
    gateway: Gateway,
    port: int,
    source_ip: str | None,
    hairpin_timeout_s: float,
    log: Callable[[str], None],
) -> ProbeResult:
    found = ProbeResult(
        gateway=gateway.friendly_name,
        location=gateway.location,
        control_url=gateway.control_url,
        local_ip=gateway.local_ip,
    )
    log(f"gateway {gateway.friendly_name!r} at {gateway.location}, our IP {gateway.local_ip}")
    try:
        external_ip = str(await gateway.get_external_address())
    except UpnpError as exc:
        return dataclasses.replace(found, error=exc)
    log(f"external address {external_ip}")
    try:
        await gateway.add_port_mapping("tcp", port, port, PROBE_DESCRIPTION, 0)
    except UpnpError as exc:
        return dataclasses.replace(found, external_ip=external_ip, error=exc)
    log(f"mapped TCP {external_ip}:{port} -> {gateway.local_ip}:{port}")
    error: OSError | None = None
    caps = Capabilities()
    cleanup_error: UpnpError | None = None
    try:
        caps = Capabilities(port_mapping=True)
        hairpin = await hairpin_test(
            source_ip or "0.0.0.0", port, external_ip, timeout_s=hairpin_timeout_s
        )
        caps = Capabilities(port_mapping=True, hairpin=hairpin)
    except OSError as exc:
        caps = Capabilities()  # Go: no PortMapping without the listener
        error = exc
    finally:
        try:
            await gateway.delete_port_mapping("tcp", port)
            log(f"deleted the mapping of TCP port {port}")
        except UpnpError as exc:
            cleanup_error = exc
    return dataclasses.replace(
        found,
        external_ip=external_ip,
        capabilities=caps,
        error=error,
        cleanup_error=cleanup_error,
    )
