"""``[p2p] upnp = true``: keep the listen port mapped on the gateway while the node runs.

:meth:`PortMapper.start` discovers the gateway, reads its external IP and maps TCP
``port`` -> ``port`` to us with a lease; a task renews the mapping at half the lease;
:meth:`PortMapper.stop` deletes it. Failures never stop the node: a failure to start is
logged once (with its reason) and the node runs without UPnP; a failed renewal is
logged once per run of failures and retried at the next period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from cometp2p.upnp.client import DEFAULT_TIMEOUT_S, Gateway, discover, open_gateway
from cometp2p.upnp.errors import UpnpError

__all__ = ["DEFAULT_LEASE_S", "MAPPING_DESCRIPTION", "PortMapper"]

logger = logging.getLogger(__name__)

DEFAULT_LEASE_S: Final = 3600
"""Lease of the node's mapping, in seconds; renewed at half of it."""

MAPPING_DESCRIPTION: Final = "cometp2p"


class PortMapper:
    """Maps one TCP port on the UPnP gateway for as long as it runs.

    Args:
        port: internal = external TCP port (the node's listen port).
        lease_s: lease in seconds (1..86399); renewed every ``lease_s / 2``.
        timeout_s: bound of each UPnP step, in seconds.
        source_ip: search and connect from this address (default: the kernel's choice).
        location: a known gateway description URL (skips the SSDP search).
    """

    def __init__(
        self,
        port: int,
        *,
        lease_s: int = DEFAULT_LEASE_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        source_ip: str | None = None,
        location: str | None = None,
    ) -> None:
        self.port = port
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self.source_ip = source_ip
        self.location = location
        self.external_ip: str | None = None
        self.renew_every_s: float = lease_s / 2
        """Seconds between renewals (half the lease)."""
        self.renewals = 0
        self._gateway: Gateway | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> str | None:
        """Map the port. Returns the gateway's external IP, or None (failure logged once)."""
        try:
            if self.location:
                gateway = await open_gateway(
                    self.location, source_ip=self.source_ip, timeout_s=self.timeout_s
                )
            else:
                gateway = await discover(source_ip=self.source_ip, timeout_s=self.timeout_s)
        except UpnpError as exc:
            logger.warning("upnp disabled, running without it: %s", exc)
            return None
        try:
            external_ip = str(await gateway.get_external_address())
            await self._add(gateway)
        except UpnpError as exc:
            await gateway.aclose()
            logger.warning("upnp disabled, running without it: %s", exc)
            return None
        self._gateway = gateway
        self.external_ip = external_ip
        logger.info(
            "upnp: mapped TCP %s:%d -> %s:%d on %s (lease %d s)",
            external_ip,
            self.port,
            gateway.local_ip,
            self.port,
            gateway.friendly_name or gateway.location,
            self.lease_s,
        )
        self._renewer = asyncio.create_task(self._renew_forever(), name="upnp-renew")
        return external_ip

    async def _add(self, gateway: Gateway) -> None:
        await gateway.add_port_mapping(
            "tcp", self.port, self.port, MAPPING_DESCRIPTION, self.lease_s
        )

    async def _renew_forever(self) -> None:
        assert self._gateway is not None
        failing = False
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                await self._add(self._gateway)
            except UpnpError as exc:
                if not failing:
                    logger.warning(
                        "upnp: renewing the mapping of port %d failed: %s", self.port, exc
                    )
                failing = True
                continue
            if failing:
                logger.info("upnp: the mapping of port %d is renewed again", self.port)
            failing = False
            self.renewals += 1

    async def stop(self) -> None:
        """Stop renewing and delete the mapping (a failure is logged). Idempotent."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        gateway, self._gateway = self._gateway, None
        if gateway is None:
            return
        try:
            await gateway.delete_port_mapping("tcp", self.port)
            logger.info("upnp: deleted the mapping of TCP port %d", self.port)
        except UpnpError as exc:
            logger.warning("upnp: deleting the mapping of port %d failed: %s", self.port, exc)
        finally:
            await gateway.aclose()
