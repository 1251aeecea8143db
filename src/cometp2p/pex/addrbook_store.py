"""``addrbook.json``: save and load an AddrBook in CometBFT's format (behaviour.md §5.12).

The file is CometBFT's, byte for byte in layout: Go's ``json.MarshalIndent(book, "", "\\t")`` of
``{"key", "addrs": [{addr, src, buckets, attempts, bucket_type, last_attempt, last_success,
last_ban_time}]}`` with times as Go's ``time.Time`` JSON (RFC 3339, fraction trimmed of
trailing zeros, zero value ``"0001-01-01T00:00:00Z"``). A CometBFT node can load what we write
and we load what it writes. Banned entries are not saved (bans are forgotten on restart) and
neither is the bucket hash key (behaviour.md §5.13 Q5.6).

Differences from CometBFT's loader, on purpose:

* A corrupt file is renamed to ``addrbook.json.corrupt-<UTC time>`` and
  :class:`~cometp2p.pex.errors.AddrBookFileError` is raised (Go panics); a book is never
  silently emptied.
* Entries that make no sense (bad ID or IP, unknown bucket type, bucket index out of range,
  duplicate ID, full bucket, unparsable time) are skipped and counted in a
  :class:`LoadReport` instead of corrupting the book. A missing or malformed ``key`` is
  replaced by a fresh one (it only salts the bucket hash).
* Python datetimes hold microseconds: nanosecond digits written by Go are truncated.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cometp2p.errors import NetAddressError
from cometp2p.fileio import atomic_write_bytes, remove_stale_temp_files
from cometp2p.pex.addrbook import ZERO_TIME, AddrBook, BucketType, KnownAddress
from cometp2p.pex.errors import AddrBookError, AddrBookFileError
from cometp2p.wire.netaddress import NetAddress, parse_ip, validate_node_id

__all__ = [
    "LoadReport",
    "dump_addrbook",
    "format_go_time",
    "load_addrbook",
    "load_addrbook_with_report",
    "parse_go_time",
    "save_addrbook",
]

_log = logging.getLogger(__name__)

_MAX_PROBLEMS: Final = 20
_KEY_RE: Final = re.compile(r"[0-9a-f]{24}")
# RFC 3339 as Go's time.Time.UnmarshalJSON accepts it: optional fraction of 1..9 digits
# ("," is accepted as a separator, like Go's parser), "Z" or a numeric offset.
_GO_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d must not match other scripts' digits, which int() would accept
)
_ZERO_TEXT: Final = "0001-01-01T00:00:00Z"
_MIN_TIME: Final = ZERO_TIME
_MAX_TIME: Final = datetime.max.replace(tzinfo=UTC)


# -- Go time.Time JSON ------------------------------------------------------------------


def format_go_time(t: datetime) -> str:
    """Format an aware datetime as Go's ``time.Time`` JSON text, in UTC.

    Go's layout is RFC 3339 with up to nine fraction digits, trailing zeros (and an empty
    fraction) dropped: ``2024-05-01T10:20:30.1234Z``, ``0001-01-01T00:00:00Z``.

    Raises:
        ValueError: if ``t`` is naive.
    """
    if t.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got naive {t!r}")
    t = t.astimezone(UTC)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_go_time(text: str) -> datetime:
    """Parse Go ``time.Time`` JSON text (RFC 3339) into an aware UTC datetime.

    Accepts 0..9 fraction digits (digits past microseconds are truncated) and ``Z`` or
    ``±hh:mm`` offsets. Instants before year 1 or after year 9999 in UTC (only reachable
    through an offset) are clamped to :data:`~cometp2p.pex.addrbook.ZERO_TIME` and
    ``datetime.max``.

    Raises:
        ValueError: if ``text`` is not an RFC 3339 timestamp.
    """
    if text == _ZERO_TEXT:  # most saved times are "never"
        return ZERO_TIME
    m = _GO_TIME_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"expected an RFC 3339 time like 2006-01-02T15:04:05Z, got {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "").ljust(6, "0")[:6])
    if second == 60:  # RFC 3339 leap second; Python has none
        raise ValueError(f"leap second not supported: {text!r}")
    local = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    if m.group(8) is not None:
        return local
    offset_h, offset_m = int(m.group(10)), int(m.group(11))
    if offset_h > 23 or offset_m > 59:
        raise ValueError(f"expected a UTC offset up to 23:59, got {text!r}")
    offset = timedelta(hours=offset_h, minutes=offset_m)
    try:
        return local - offset if m.group(9) == "+" else local + offset
    except OverflowError:
        return _MIN_TIME if m.group(9) == "+" else _MAX_TIME


# -- saving ---------------------------------------------------------------------------


_str: Final = json.encoder.encode_basestring_ascii


def _address_text(addr: NetAddress) -> str:
    # a NetAddress object as the value of a member at depth 3
    return (
        f'{{\n\t\t\t\t"id": {_str(addr.id)},\n\t\t\t\t"ip": "{addr.ip.compressed}",\n'
        f'\t\t\t\t"port": {addr.port}\n\t\t\t}}'
    )


def _time_text(t: datetime) -> str:
    return _ZERO_TEXT if t == ZERO_TIME else format_go_time(t)


def _entry_text(ka: KnownAddress) -> str:
    # The layout of Go's MarshalIndent(v, "", "\t") for one element of "addrs" (depth 2).
    if ka.buckets:
        buckets = "[\n\t\t\t\t" + ",\n\t\t\t\t".join(map(str, ka.buckets)) + "\n\t\t\t]"
    else:
        buckets = "[]"
    return (
        f'\t\t{{\n\t\t\t"addr": {_address_text(ka.addr)},\n'
        f'\t\t\t"src": {_address_text(ka.src)},\n'
        f'\t\t\t"buckets": {buckets},\n'
        f'\t\t\t"attempts": {ka.attempts},\n'
        f'\t\t\t"bucket_type": {int(ka.bucket_type)},\n'
        f'\t\t\t"last_attempt": "{_time_text(ka.last_attempt)}",\n'
        f'\t\t\t"last_success": "{_time_text(ka.last_success)}",\n'
        f'\t\t\t"last_ban_time": "{_time_text(ka.last_ban_time)}"\n'
        f"\t\t}}"
    )


def dump_addrbook(book: AddrBook) -> bytes:
    """The ``addrbook.json`` bytes for ``book``, exactly as CometBFT lays them out.

    Go's ``json.MarshalIndent(v, "", "\\t")``: one member per line, tab indentation,
    ``"name": value`` separators, ``[]`` for an empty list and no final newline. The text
    is assembled directly (Python's indenting encoder is pure Python and several times
    slower); ``tests/unit/test_addrbook_store.py`` checks it against Go's own output.
    """
    entries = [_entry_text(ka) for ka in book.known_addresses()]
    addrs = "[\n" + ",\n".join(entries) + "\n\t]" if entries else "[]"
    return f'{{\n\t"key": {_str(book.key)},\n\t"addrs": {addrs}\n}}'.encode("ascii")


def save_addrbook(book: AddrBook, path: str | os.PathLike[str]) -> None:
    """Write ``book`` to ``path`` atomically with mode 0644 (behaviour.md §5.12).

    Raises:
        OSError: if the file cannot be written (the previous file stays intact).
    """
    atomic_write_bytes(path, dump_addrbook(book), mode=0o644)


# -- loading --------------------------------------------------------------------------


@dataclass(slots=True)
class LoadReport:
    """What :func:`load_addrbook_with_report` found in the file.

    Attributes:
        loaded: entries now in the book.
        skipped: entries dropped because they made no sense.
        key_replaced: the file's ``key`` was missing or malformed and a fresh one was drawn.
        problems: the first 20 reasons for skipping, for the log.
        temp_files_removed: leftover ``.addrbook.json.*.tmp`` files of a save that
            crashed, deleted before loading.
    """

    loaded: int = 0
    skipped: int = 0
    key_replaced: bool = False
    problems: list[str] = field(default_factory=list)
    temp_files_removed: list[Path] = field(default_factory=list)

    def _skip(self, index: int, why: str) -> None:
        self.skipped += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"addrs[{index}]: {why}")


class _EntryError(ValueError):
    pass


def _int(value: object, what: str) -> int:
    # bool is an int in Python but not a JSON number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _EntryError(f"{what}: expected an integer, got {value!r}")
    return value


_AddressCache = dict[tuple[object, object, object], NetAddress]


def _address(value: object, what: str, cache: _AddressCache) -> NetAddress:
    if not isinstance(value, dict):
        raise _EntryError(f"{what}: expected an object, got {value!r}")
    node_id, ip_text, port = value.get("id"), value.get("ip"), value.get("port")
    cache_key = (node_id, ip_text, port)
    if type(node_id) is str and type(ip_text) is str and type(port) is int:
        cached = cache.get(cache_key)  # sources repeat a lot in a big book
        if cached is not None:
            return cached
    if not isinstance(node_id, str):
        raise _EntryError(f"{what}.id: expected a string, got {node_id!r}")
    try:
        checked_id = validate_node_id(node_id)
    except NetAddressError as exc:
        raise _EntryError(f"{what}.id: {exc}") from exc
    if not isinstance(ip_text, str):
        raise _EntryError(f"{what}.ip: expected a string, got {ip_text!r}")
    ip = parse_ip(ip_text)
    if ip is None:
        raise _EntryError(f"{what}.ip: expected an IP literal, got {ip_text!r}")
    port_number = _int(port, f"{what}.port")
    if not 0 <= port_number <= 0xFFFF:
        raise _EntryError(f"{what}.port: expected 0..65535, got {port_number}")
    addr = NetAddress(checked_id, ip, port_number)
    cache[cache_key] = addr
    return addr


def _time(value: object, what: str) -> datetime:
    if value is None:  # absent field: Go leaves the zero time
        return ZERO_TIME
    if not isinstance(value, str):
        raise _EntryError(f"{what}: expected an RFC 3339 string, got {value!r}")
    try:
        return parse_go_time(value)
    except ValueError as exc:
        raise _EntryError(f"{what}: {exc}") from exc


def _known_address(value: object, cache: _AddressCache) -> KnownAddress:
    if not isinstance(value, dict):
        raise _EntryError(f"expected an object, got {type(value).__name__}")
    buckets = value.get("buckets")
    if not isinstance(buckets, list):
        raise _EntryError(f"buckets: expected a list, got {buckets!r}")
    bucket_type = _int(value.get("bucket_type"), "bucket_type")
    if bucket_type not in (BucketType.NEW, BucketType.OLD):
        raise _EntryError(f"bucket_type: expected 1 (new) or 2 (old), got {bucket_type}")
    return KnownAddress(
        addr=_address(value.get("addr"), "addr", cache),
        src=_address(value.get("src"), "src", cache),
        buckets=tuple(_int(b, "buckets[]") for b in buckets),
        attempts=_int(value.get("attempts", 0), "attempts"),
        bucket_type=BucketType(bucket_type),
        last_attempt=_time(value.get("last_attempt"), "last_attempt"),
        last_success=_time(value.get("last_success"), "last_success"),
        last_ban_time=_time(value.get("last_ban_time"), "last_ban_time"),
    )


def _backup_name(path: Path, now: datetime) -> Path:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return candidate


def _corrupt(path: Path, message: str, now: datetime | None) -> AddrBookFileError:
    """Move the corrupt file aside and build the error to raise."""
    backup = _backup_name(path, now or datetime.now(UTC))
    try:
        os.rename(path, backup)
    except OSError as exc:
        _log.error("could not move corrupt address book %s aside: %s", path, exc)
        return AddrBookFileError(path, f"{message} (could not move it aside: {exc})")
    return AddrBookFileError(path, message, backup)


def load_addrbook_with_report(
    path: str | os.PathLike[str],
    *,
    strict: bool,
    rng: random.Random,
    now: datetime | None = None,
) -> tuple[AddrBook, LoadReport]:
    """Load ``addrbook.json`` into a new book, and say what was skipped.

    Args:
        path: the file (CometBFT default ``config/addrbook.json`` under the home).
        strict: ``addr_book_strict`` for the new book.
        rng: the new book's randomness (its hash key is drawn from it; Q5.6).
        now: time used to name a corrupt file's backup; the wall clock when ``None``.

    Returns:
        The book (empty if the file does not exist) and a :class:`LoadReport`. Leftover
        temporary files of an interrupted save are deleted first.

    Raises:
        AddrBookFileError: if the file cannot be read (left in place), or is not JSON, or is
            not an address book object (moved to ``<path>.corrupt-<time>``, see
            ``backup_path``).
    """
    file = Path(path)
    report = LoadReport()
    report.temp_files_removed = remove_stale_temp_files(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return AddrBook(strict=strict, rng=rng), report
    except OSError as exc:
        raise AddrBookFileError(file, f"cannot read: {exc}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _corrupt(file, f"not valid JSON ({exc})", now) from exc
    if not isinstance(doc, dict):
        raise _corrupt(file, f"expected a JSON object, got {type(doc).__name__}", now)
    addrs = doc.get("addrs")
    if addrs is None:
        addrs = []
    if not isinstance(addrs, list):
        raise _corrupt(file, f"'addrs': expected a list, got {type(addrs).__name__}", now)

    key = doc.get("key")
    if isinstance(key, str) and _KEY_RE.fullmatch(key) is not None:
        book = AddrBook(key, strict=strict, rng=rng)
    else:
        book = AddrBook(strict=strict, rng=rng)
        report.key_replaced = True
    cache: _AddressCache = {}
    for index, value in enumerate(addrs):
        try:
            book.restore(_known_address(value, cache))
        except (_EntryError, AddrBookError) as exc:
            report._skip(index, str(exc))
        else:
            report.loaded += 1
    return book, report


def load_addrbook(path: str | os.PathLike[str], *, strict: bool, rng: random.Random) -> AddrBook:
    """Load ``addrbook.json``; a missing file gives an empty book (behaviour.md §5.12).

    Skipped entries and a replaced key are logged as warnings; see
    :func:`load_addrbook_with_report` for the details.

    Raises:
        AddrBookFileError: as :func:`load_addrbook_with_report`.
    """
    book, report = load_addrbook_with_report(path, strict=strict, rng=rng)
    for tmp in report.temp_files_removed:
        _log.info("address book %s: removed %s left by an interrupted save", path, tmp.name)
    if report.skipped:
        _log.warning(
            "address book %s: skipped %d of %d entries: %s",
            path,
            report.skipped,
            report.skipped + report.loaded,
            "; ".join(report.problems),
        )
    if report.key_replaced:
        _log.warning("address book %s: missing or malformed key, using a new one", path)
    return book
