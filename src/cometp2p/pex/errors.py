"""Errors of the address book and its ``addrbook.json`` store (behaviour.md §4.8, §5.5, §5.12).

:class:`AddrBookError` carries an :class:`AddrBookErrorReason`. ``AddrBook.add_address``
raises it for every address it refuses (behaviour.md §4.8); the PEX reactor logs it and goes
on (at debug level when :attr:`AddrBookError.private` is true, as CometBFT does).
:class:`AddrBookFileError` is the store's "the file on disk is unusable" error.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING

from cometp2p.errors import CometP2PError

if TYPE_CHECKING:
    from cometp2p.wire.netaddress import NetAddress

__all__ = ["AddrBookError", "AddrBookErrorReason", "AddrBookFileError"]


class AddrBookErrorReason(enum.Enum):
    """Why the address book refused something (behaviour.md §4.8, §5.5, §5.12)."""

    NIL = "nil address or source"
    INVALID = "invalid address"
    BANNED = "address is banned"
    PRIVATE = "private ID"
    PRIVATE_SRC = "source has a private ID"
    SELF = "our own address"
    NON_ROUTABLE = "non-routable address"
    BAD_ENTRY = "inconsistent known address"
    CORRUPT_FILE = "corrupt address book file"


class AddrBookError(CometP2PError):
    """The address book refused an address or entry.

    Attributes:
        reason: the :class:`AddrBookErrorReason`.
        addr: the refused address, when there is one.
        src: the source that offered it, when there is one.
    """

    def __init__(
        self,
        reason: AddrBookErrorReason,
        message: str,
        addr: NetAddress | None = None,
        src: NetAddress | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.addr = addr
        self.src = src

    @property
    def private(self) -> bool:
        """True for the "private ID" refusals, which CometBFT logs at debug level only."""
        return self.reason in (AddrBookErrorReason.PRIVATE, AddrBookErrorReason.PRIVATE_SRC)


class AddrBookFileError(AddrBookError):
    """``addrbook.json`` exists but cannot be read or is not an address book.

    The store never empties a book silently: when the file is corrupt it is renamed aside
    (``backup_path``) before this error is raised, so the operator can inspect it and the
    next start begins empty on purpose.

    Attributes:
        path: the address book file.
        backup_path: where the corrupt file was moved, or ``None`` if it was left in place
            (unreadable file, or the rename itself failed).
    """

    def __init__(self, path: Path, message: str, backup_path: Path | None = None) -> None:
        kept = f"; the file was kept as {backup_path}" if backup_path is not None else ""
        super().__init__(AddrBookErrorReason.CORRUPT_FILE, f"{path}: {message}{kept}")
        self.path = path
        self.backup_path = backup_path
