"""``TrustMetricStore``: every peer's trust metric, persisted in SQLite (behaviour.md §6.4).

Go keeps the whole store as one JSON value under the key ``trustMetricStore`` in a
goleveldb database. We keep one row per peer in an SQLite database (stdlib ``sqlite3``, WAL
journal) in the home's ``data/`` directory::

    trust_metric(node_id TEXT PRIMARY KEY, intervals INTEGER, history TEXT, updated_at REAL)

plus our own ``trust_ban(node_id, until)``: the wiring's distrust verdicts, so that a
restart keeps them (Go has no such thing; the AddrBook forgets its bans on restart).
``history`` is the JSON array of Go's ``MetricHistoryJSON.history``; ``updated_at`` is the
wall-clock UNIX time of the save that wrote the row. The store is loaded when opened,
saved every :data:`SAVE_PERIOD_S` (driven by :meth:`TrustMetricStore.handle_timer`) and on
:meth:`TrustMetricStore.close`; each save is one transaction, so a crash loses at most the
events since the previous save. Go's JSON layout is imported and exported as is
(:meth:`TrustMetricStore.import_go_json`, :meth:`TrustMetricStore.export_go_json`).

Differences from Go, on purpose: a corrupt database is moved aside and replaced by an empty
one (Go panics), see :func:`open_trust_store`; an ``intervals = 0`` history loads with the
perfect history value 1.0 (Go: NaN).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cometp2p.errors import CometP2PError
from cometp2p.trust.config import TrustMetricConfig
from cometp2p.trust.metric import TrustHistory, TrustMetric

__all__ = [
    "DEFAULT_TRUST_DB_FILE",
    "SAVE_PERIOD_S",
    "TrustMetricStore",
    "TrustStoreError",
    "open_trust_store",
    "parse_go_json",
]

_log = logging.getLogger(__name__)

SAVE_PERIOD_S: Final = 60.0
"""Go's ``defaultStorePeriodicSaveInterval``: 1 minute."""
DEFAULT_TRUST_DB_FILE: Final = "data/trust_metric.sqlite"
"""Where a home keeps the store, relative to the home (config key ``[p2p] trust_db_file``)."""
LOCK_TIMEOUT_S: Final = 2.0
"""How long a write waits for another process's lock before the database counts as locked."""

_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS trust_metric (
    node_id TEXT PRIMARY KEY NOT NULL,
    intervals INTEGER NOT NULL CHECK (intervals >= 0),
    history TEXT NOT NULL,
    updated_at REAL NOT NULL
)
""",
    # Our own: distrust verdicts of the wiring (trust/reactor.py), so a restart keeps them.
    """
CREATE TABLE IF NOT EXISTS trust_ban (
    node_id TEXT PRIMARY KEY NOT NULL,
    until REAL NOT NULL
)
""",
)


class TrustStoreError(CometP2PError):
    """The trust database (or an imported Go JSON store) is unusable.

    Attributes:
        path: the database file, or None for in-memory data.
        locked: True when another process holds the database locked.
    """

    def __init__(self, message: str, path: Path | None = None, *, locked: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.locked = locked


def _parse_history(node_id: str, entry: object) -> TrustHistory:
    if not isinstance(entry, dict):
        raise TrustStoreError(f"peer {node_id!r}: expected an object, got {type(entry).__name__}")
    intervals = entry.get("intervals", 0)
    history = entry.get("history")
    if isinstance(intervals, bool) or not isinstance(intervals, int) or intervals < 0:
        raise TrustStoreError(
            f"peer {node_id!r}: intervals must be an integer >= 0, got {intervals!r}"
        )
    if history is None:  # Go marshals a never-ticked metric's nil slice as null
        history = []
    if not isinstance(history, list):
        raise TrustStoreError(f"peer {node_id!r}: history must be an array, got {history!r}")
    values: list[float] = []
    for value in history:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise TrustStoreError(f"peer {node_id!r}: history holds {value!r}, not a finite number")
        values.append(float(value))
    return TrustHistory(intervals, tuple(values))


def parse_go_json(data: bytes | str) -> dict[str, TrustHistory]:
    """Parse Go's store value ``{"<peer>": {"intervals": n, "history": [...]}, ...}``.

    Raises:
        TrustStoreError: if it is not JSON of that shape (empty keys, negative or
            non-integer intervals, non-finite history values).
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustStoreError(f"trust store JSON does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise TrustStoreError(f"trust store JSON must be an object, got {type(doc).__name__}")
    out: dict[str, TrustHistory] = {}
    for node_id, entry in doc.items():
        if not node_id:
            raise TrustStoreError("trust store JSON has an empty peer key")
        out[node_id] = _parse_history(node_id, entry)
    return out


class TrustMetricStore:
    """Trust metrics by peer key, backed by one SQLite file (or memory when ``path`` is None).

    Args:
        path: the database file; created with its parent directory if absent. ``None``
            keeps everything in memory (nothing survives :meth:`close`).
        config: configuration of every metric.
        now: the current monotonic time, seconds (metric intervals and the save period).
        wall_clock: UNIX time for ``updated_at``; injected for tests.
        lock_timeout_s: how long to wait for another process's lock, seconds.

    Raises:
        TrustStoreError: the file is not an SQLite database, is corrupt, holds rows that
            make no sense, or is locked by another process for over :data:`LOCK_TIMEOUT_S`.
            :func:`open_trust_store` turns this into a logged error and an empty store.
    """

    def __init__(
        self,
        path: Path | None,
        config: TrustMetricConfig | None = None,
        *,
        now: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.config = config if config is not None else TrustMetricConfig()
        self._wall_clock = wall_clock
        self._metrics: dict[str, TrustMetric] = {}
        self._next_save = now + SAVE_PERIOD_S
        self._now = now
        self._closed = False
        self._pause_pending: set[str] = set()
        self._bans: dict[str, float] = {}
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(target, timeout=lock_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA:
                    self._db.execute(statement)
            rows = self._db.execute(
                "SELECT node_id, intervals, history FROM trust_metric"
            ).fetchall()
            ban_rows = self._db.execute("SELECT node_id, until FROM trust_ban").fetchall()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error("cannot read", exc) from exc
        try:
            for node_id, intervals, history in rows:
                hist = _parse_history(
                    str(node_id), {"intervals": intervals, "history": json.loads(history)}
                )
                self._metrics[str(node_id)] = TrustMetric(self.config, now=now, history=hist)
            for node_id, until in ban_rows:
                self._bans[str(node_id)] = float(until)
        except (TrustStoreError, ValueError, TypeError) as exc:
            self._db.close()
            raise TrustStoreError(f"trust database {path} holds a bad row: {exc}", path) from exc

    def _error(self, what: str, exc: sqlite3.Error) -> TrustStoreError:
        locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        reason = "locked by another process" if locked else str(exc)
        return TrustStoreError(
            f"{what} trust database {self.path}: {reason}", self.path, locked=locked
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # -- metrics --------------------------------------------------------------------------

    def metric(self, node_id: str) -> TrustMetric:
        """The metric of ``node_id``, created (perfect, starting now) if absent."""
        m = self._metrics.get(node_id)
        if m is None:
            m = TrustMetric(self.config, now=self._now)
            self._metrics[node_id] = m
        return m

    def get(self, node_id: str) -> TrustMetric | None:
        """The metric of ``node_id`` if the store has one; never creates."""
        return self._metrics.get(node_id)

    def add(self, node_id: str, metric: TrustMetric) -> None:
        """Store ``metric`` under ``node_id`` (Go's ``AddPeerTrustMetric``; empty key ignored)."""
        if node_id:
            self._metrics[node_id] = metric

    def peer_connected(self, node_id: str) -> TrustMetric:
        """The metric of a peer that just connected (created if absent); a pause still
        pending from its last disconnect is dropped."""
        self._pause_pending.discard(node_id)
        return self.metric(node_id)

    def peer_disconnected(self, node_id: str, *, at_interval_end: bool = False) -> None:
        """Pause the metric of ``node_id``, if any (Go's ``PeerDisconnected``).

        Args:
            node_id: the peer.
            at_interval_end: pause when the current interval ends instead of now, so the
                events of the interval in which the peer left (the errors it was stopped
                for) still enter its history. Go pauses at once, and its next event
                clears the interval's counts: a peer that misbehaves and is dropped
                within one interval would never have a bad interval recorded.
        """
        m = self._metrics.get(node_id)
        if m is None:
            return
        if at_interval_end:
            self._pause_pending.add(node_id)
        else:
            m.pause()

    def set_ban(self, node_id: str, until: float | None) -> None:
        """Record that ``node_id`` is distrusted until UNIX time ``until`` (None: lift it).

        Saved with the metrics (table ``trust_ban``).
        """
        if until is None:
            self._bans.pop(node_id, None)
        else:
            self._bans[node_id] = until

    def bans(self) -> dict[str, float]:
        """Distrust verdicts by peer: UNIX time each ends (expired ones included until the
        next save drops them)."""
        return dict(self._bans)

    def __len__(self) -> int:
        return len(self._metrics)

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def items(self) -> list[tuple[str, TrustMetric]]:
        """``(node_id, metric)`` pairs, a snapshot."""
        return list(self._metrics.items())

    # -- time -----------------------------------------------------------------------------

    def get_timer(self) -> float:
        """The earliest deadline: a metric's interval end or the next periodic save."""
        deadline = self._next_save
        for m in self._metrics.values():
            deadline = min(deadline, m.get_timer())
        return deadline

    def handle_timer(self, now: float) -> None:
        """End due intervals; save if the save period has passed.

        Raises:
            TrustStoreError: the save failed (the metrics in memory are kept).
        """
        self._now = now
        for node_id, m in self._metrics.items():
            due = now >= m.get_timer()
            m.handle_timer(now)
            if due and node_id in self._pause_pending:
                self._pause_pending.discard(node_id)
                m.pause()
        if now >= self._next_save:
            self._next_save = now + SAVE_PERIOD_S
            self.save()

    # -- persistence ----------------------------------------------------------------------

    def save(self) -> None:
        """Write every metric in one transaction.

        Raises:
            TrustStoreError: the write failed or the database stayed locked.
        """
        updated_at = self._wall_clock()
        for node_id in [k for k, until in self._bans.items() if until <= updated_at]:
            del self._bans[node_id]
        bans = list(self._bans.items())
        rows = [
            (node_id, snap.intervals, json.dumps(list(snap.history)), updated_at)
            for node_id, snap in ((k, m.history_json()) for k, m in self._metrics.items())
        ]
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO trust_metric (node_id, intervals, history, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
                    "intervals = excluded.intervals, history = excluded.history, "
                    "updated_at = excluded.updated_at",
                    rows,
                )
                self._db.execute("DELETE FROM trust_ban")
                self._db.executemany("INSERT INTO trust_ban (node_id, until) VALUES (?, ?)", bans)
        except sqlite3.Error as exc:
            raise self._error("cannot write", exc) from exc

    def updated_at(self) -> dict[str, float]:
        """``updated_at`` of every stored row, as saved (UNIX seconds)."""
        try:
            rows = self._db.execute("SELECT node_id, updated_at FROM trust_metric").fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return {str(k): float(v) for k, v in rows}

    def close(self, *, save: bool = True) -> None:
        """Save (unless ``save`` is False: a read-only look) and close. Idempotent; the
        store is unusable afterwards.

        Raises:
            TrustStoreError: the final save failed (the connection is closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if save:
                self.save()
        finally:
            self._db.close()

    def __enter__(self) -> TrustMetricStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def export_go_json(self) -> bytes:
        """The store as Go's ``trustMetricStore`` value: ``{id: {intervals, history}}``.

        Keys sorted and compact, as Go's ``json.Marshal`` writes a map; an empty history is
        ``null`` as Go writes a nil slice.
        """
        doc: dict[str, object] = {}
        for node_id in sorted(self._metrics):
            snap = self._metrics[node_id].history_json()
            doc[node_id] = {
                "intervals": snap.intervals,
                "history": list(snap.history) if snap.history else None,
            }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()

    def import_go_json(self, data: bytes | str) -> int:
        """Load Go's store value, replacing the metrics of the peers it names; then save.

        Returns:
            how many peers were imported.

        Raises:
            TrustStoreError: the JSON is malformed (nothing is imported then) or the save fails.
        """
        parsed = parse_go_json(data)
        for node_id, hist in parsed.items():
            self._metrics[node_id] = TrustMetric(self.config, now=self._now, history=hist)
        self.save()
        return len(parsed)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(aside)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(aside.with_name(aside.name + suffix))
    return aside


def open_trust_store(
    path: Path,
    config: TrustMetricConfig | None = None,
    *,
    now: float = 0.0,
    wall_clock: Callable[[], float] = time.time,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> tuple[TrustMetricStore, TrustStoreError | None]:
    """Open the store at ``path``; never fails on a bad database.

    * Corrupt (not SQLite, malformed, bad rows): the file (and its ``-wal``/``-shm``) is
      renamed to ``<name>.corrupt-<UTC time>`` and a new empty database takes its place.
    * Locked by another process: the file is left alone (it is not bad, someone else owns
      it) and the store runs in memory, so nothing is saved this run.

    Either way the error is logged and returned with the empty store, and the node goes on.

    Returns:
        the store and the error that was recovered from, or None.
    """

    def store(at: Path | None) -> TrustMetricStore:
        return TrustMetricStore(
            at, config, now=now, wall_clock=wall_clock, lock_timeout_s=lock_timeout_s
        )

    try:
        return store(path), None
    except TrustStoreError as exc:
        error = exc
    if error.locked:
        _log.error("%s; trust metrics are kept in memory only this run", error)
        return store(None), error
    aside = _move_aside(path)
    _log.error("%s; moved it to %s and started an empty trust store", error, aside)
    try:
        return store(path), error
    except TrustStoreError as again:
        _log.error("%s; trust metrics are kept in memory only this run", again)
        return store(None), error
