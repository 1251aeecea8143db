"""Typed UPnP failures, one subclass per reason (behaviour.md §7).

All derive from :class:`UpnpError`, itself a :class:`~cometp2p.errors.CometP2PError`, so
callers that catch the library's root error catch these too.
"""

from __future__ import annotations

import enum

from cometp2p.errors import CometP2PError

__all__ = [
    "UpnpActionRefusedError",
    "UpnpDescriptionError",
    "UpnpError",
    "UpnpFailure",
    "UpnpNoAnswerError",
    "UpnpNoWANIPConnectionError",
    "UpnpUnavailableError",
]


class UpnpFailure(enum.Enum):
    """Why a UPnP step failed."""

    NO_ANSWER = "no answer"
    """No gateway answered the SSDP search, or the gateway did not answer in time."""
    DESCRIPTION_UNREADABLE = "description unreadable"
    """The device description could not be fetched or parsed."""
    NO_WAN_IP_CONNECTION = "no WANIPConnection"
    """The device is not an IGD with a WANIPConnection:1 service."""
    ACTION_REFUSED = "action refused"
    """A SOAP action failed: a SOAP fault, an HTTP error status, or a bad result."""
    UNAVAILABLE = "unavailable"
    """The optional ``cometp2p[upnp]`` dependencies are not installed."""


class UpnpError(CometP2PError):
    """A UPnP step failed.

    Attributes:
        reason: the :class:`UpnpFailure`.
    """

    reason: UpnpFailure = UpnpFailure.NO_ANSWER

    def __init__(self, message: str) -> None:
        super().__init__(f"upnp {self.reason.value}: {message}")


class UpnpNoAnswerError(UpnpError):
    """Nothing answered within the timeout (SSDP search, or an HTTP request timed out)."""

    reason = UpnpFailure.NO_ANSWER


class UpnpDescriptionError(UpnpError):
    """The device description at the LOCATION URL is unreachable, an HTTP error or not XML."""

    reason = UpnpFailure.DESCRIPTION_UNREADABLE


class UpnpNoWANIPConnectionError(UpnpError):
    """The description has no InternetGatewayDevice with a WANIPConnection:1 service."""

    reason = UpnpFailure.NO_WAN_IP_CONNECTION


class UpnpActionRefusedError(UpnpError):
    """The gateway refused or failed a SOAP action (fault, HTTP status >= 400, bad value).

    Attributes:
        action: the SOAP action name, e.g. ``"AddPortMapping"``.
        error_code: the UPnP error code of a SOAP fault (e.g. 718 ConflictInMappingEntry),
            else ``None``.
    """

    reason = UpnpFailure.ACTION_REFUSED

    def __init__(self, action: str, message: str, error_code: int | None = None) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.error_code = error_code


class UpnpUnavailableError(UpnpError):
    """``async-upnp-client`` is not installed: ``pip install 'cometp2p[upnp]'``."""

    reason = UpnpFailure.UNAVAILABLE
