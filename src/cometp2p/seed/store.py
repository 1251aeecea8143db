"""The seed's state in SQLite: nodes, addresses, NodeInfo, edges and reachability history.

One file (``<home>/data/seed.db``), stdlib :mod:`sqlite3` in WAL mode. Every change is
one transaction (``with self._db:``), so a process killed at any point (kill -9) reopens
on the last committed transaction; a restart resumes the schedule where it stopped
(``next_visit`` is stored). Times are wall-clock seconds since the epoch (UTC) from the
injected clock.

Tables:

* ``nodes``: one row per node ID: NodeInfo (protobuf body, as
  :meth:`~cometp2p.wire.nodeinfo.NodeInfo.encode`), status (``new``, ``reachable``,
  ``failed``), the address that answered, first/last seen, last attempt, the last
  failure reason and detail, the schedule counters and ``next_visit``;
* ``addresses``: every ``id@ip:port`` learnt per node, with first/last seen;
* ``edges``: "from told us about to", with first/last seen;
* ``history``: one row per visit: time, reachable, failure reason and detail;
* ``rounds``: one row per crawl round: start, duration, visits, reached, new nodes;
* ``meta``: key/value (the network, the creation time).

Not thread-safe: use one store from one thread (the event loop).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cometp2p.crawler.model import (
    CrawlResult,
    FailureReason,
    NodeRecord,
    NodeState,
)
from cometp2p.errors import CometP2PError, ConfigError
from cometp2p.seed.schedule import NodeCounters, SchedulePolicy, next_visit_delay
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = ["SEED_DB", "NodeRow", "NodeStatus", "RoundStats", "SeedStore"]

SEED_DB: Final = "seed.db"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    seed INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'new',
    node_info BLOB,
    dialed TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL,
    last_attempt REAL,
    error TEXT,
    error_detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    flaps INTEGER NOT NULL DEFAULT 0,
    pex_dry INTEGER NOT NULL DEFAULT 0,
    pex_addrs INTEGER,
    pex_error TEXT,
    next_visit REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_next_visit ON nodes (next_visit);
CREATE TABLE IF NOT EXISTS addresses (
    node_id TEXT NOT NULL,
    addr TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (node_id, addr)
);
CREATE TABLE IF NOT EXISTS edges (
    from_id TEXT NOT NULL,
    to_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (from_id, to_id)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    at REAL NOT NULL,
    reachable INTEGER NOT NULL,
    error TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_node ON history (node_id, at);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    elapsed_s REAL NOT NULL,
    visited INTEGER NOT NULL,
    reached INTEGER NOT NULL,
    new_nodes INTEGER NOT NULL
);
"""


class NodeStatus:
    """The ``status`` column: never dialed, answered at the last visit, or failed."""

    NEW: Final = "new"
    REACHABLE: Final = "reachable"
    FAILED: Final = "failed"


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One ``nodes`` row, decoded.

    Attributes mirror the columns; times are epoch seconds (``None``: never).
    """

    node_id: NodeID
    seed: bool
    status: str
    node_info: NodeInfo | None
    dialed: NetAddress | None
    addresses: tuple[NetAddress, ...]
    first_seen: float
    last_seen: float | None
    last_attempt: float | None
    error: str | None
    error_detail: str | None
    attempts: int
    successes: int
    failures: int
    pex_addrs: int | None
    pex_error: str | None
    next_visit: float

    def to_record(self) -> NodeRecord:
        """This row as a crawl :class:`~cometp2p.crawler.model.NodeRecord`."""
        if self.status == NodeStatus.REACHABLE:
            state = NodeState.REACHED
        elif self.status == NodeStatus.FAILED:
            state = NodeState.FAILED
        else:
            state = NodeState.NOT_DIALED
        return NodeRecord(
            node_id=self.node_id,
            addresses=list(self.addresses),
            state=state,
            seed=self.seed,
            node_info=self.node_info,
            dialed=self.dialed,
            error=FailureReason(self.error) if self.error else None,
            error_detail=self.error_detail,
            attempts=self.attempts,
            pex_addrs=self.pex_addrs,
            pex_error=self.pex_error,
        )


@dataclass(frozen=True, slots=True)
class RoundStats:
    """What one round changed.

    Attributes:
        visited: nodes dialed in the round.
        reached: of those, the ones that answered.
        new_nodes: node IDs the store did not know before the round.
        elapsed_s: the round's duration (seconds).
    """

    visited: int
    reached: int
    new_nodes: int
    elapsed_s: float


def _addr(text: str) -> NetAddress | None:
    try:
        return NetAddress.parse(text, resolve=False)
    except CometP2PError:
        return None


class SeedStore:
    """The SQLite state of a seed (or of a multi-round crawl).

    Args:
        path: the database file, or ``":memory:"`` (for ``crawl --rounds``).
        policy: the revisit schedule.
        clock: wall-clock epoch seconds.
        history_s: visits older than this (seconds; default 7 days) are dropped from
            ``history`` at each round, so the file does not grow without bound.

    Raises:
        ConfigError: the file cannot be opened as a database.
    """

    def __init__(
        self,
        path: str | Path,
        policy: SchedulePolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        history_s: float = 7 * 24 * 3600.0,
    ) -> None:
        self.path = str(path)
        self.history_s = history_s
        self._version = 0  # committed transactions so far (invalidates _reachable)
        self._reachable: tuple[int, list[tuple[NetAddress, float]]] | None = None
        self.policy = policy or SchedulePolicy()
        self._clock = clock
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._tx():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)",
                    (repr(self._clock()),),
                )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the seed database {self.path}: {exc}") from exc

    def _tx(self) -> _Transaction:
        """A context manager for one transaction (BEGIN ... COMMIT / ROLLBACK)."""
        return _Transaction(self)

    def close(self) -> None:
        """Close the database (the WAL is checkpointed)."""
        self._db.close()

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        """A ``meta`` value, or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a ``meta`` value (one transaction)."""
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ learning

    def add_seeds(self, seeds: Iterable[NetAddress]) -> None:
        """Record ``seeds`` (due now if new; already-known nodes keep their schedule)."""
        now = self._clock()
        with self._tx():
            for seed in seeds:
                self._learn(seed, now, seed=True)

    def learn(self, addrs: Iterable[NetAddress]) -> int:
        """Record addresses heard of (one transaction); returns how many node IDs are new."""
        now = self._clock()
        with self._tx():
            return sum(self._learn(addr, now) for addr in addrs)

    def _learn(self, addr: NetAddress, now: float, *, seed: bool = False) -> bool:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO nodes (id, seed, first_seen, next_visit) VALUES (?, ?, ?, ?)",
            (addr.id, int(seed), now, now),
        )
        new = cur.rowcount == 1
        if seed and not new:
            self._db.execute("UPDATE nodes SET seed = 1 WHERE id = ?", (addr.id,))
        self._db.execute(
            "INSERT INTO addresses (node_id, addr, first_seen, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (node_id, addr) DO UPDATE SET last_seen = excluded.last_seen",
            (addr.id, str(addr), now, now),
        )
        return new

    # ------------------------------------------------------------------ rounds

    def due(self, limit: int = 10_000) -> list[NetAddress]:
        """The addresses of the nodes due for a visit (earliest first), last good one first."""
        now = self._clock()
        rows = self._db.execute(
            "SELECT id, dialed FROM nodes WHERE next_visit <= ? ORDER BY next_visit LIMIT ?",
            (now, limit),
        ).fetchall()
        out: list[NetAddress] = []
        for node_id, dialed in rows:
            addrs = [
                a
                for (text,) in self._db.execute(
                    "SELECT addr FROM addresses WHERE node_id = ? ORDER BY last_seen DESC",
                    (node_id,),
                )
                if (a := _addr(text)) is not None
            ]
            addrs.sort(key=lambda a: str(a) != dialed)
            out.extend(addrs)
        return out

    def next_due_in(self) -> float | None:
        """Seconds until the next node is due (0 if one is due now; None if none ever)."""
        row = self._db.execute("SELECT MIN(next_visit) FROM nodes").fetchone()
        if row is None or row[0] is None or row[0] == float("inf"):
            return None
        return max(0.0, float(row[0]) - self._clock())

    def is_due(self, node_id: str) -> bool:
        """Whether ``node_id`` should be dialed now: unknown to the store, or due."""
        row = self._db.execute("SELECT next_visit FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return row is None or float(row[0]) <= self._clock()

    def known_ids(self) -> set[NodeID]:
        """Every node ID in the store."""
        return {NodeID(r[0]) for r in self._db.execute("SELECT id FROM nodes")}

    def record_round(self, result: CrawlResult, started: float) -> RoundStats:
        """Take in one round's crawl: one transaction per visited node, then the round row.

        Nodes the round learnt of but did not dial are added (due now). A reached node's
        PEX answer counts as "dry" when it named no node ID unknown before the round.
        """
        known_before = self.known_ids()
        now = self._clock()
        told: dict[NodeID, set[NodeID]] = {}
        for src, dst in result.edges:
            told.setdefault(src, set()).add(dst)
        visited = reached = 0
        for record in result.nodes:
            if record.state not in (NodeState.REACHED, NodeState.FAILED):
                continue
            visited += 1
            reached += record.reachable
            new_ids = len(told.get(record.node_id, set()) - known_before)
            with self._tx():
                self._record_visit(record, now, new_ids, told.get(record.node_id, set()))
        with self._tx():
            for record in result.nodes:
                for addr in record.addresses:
                    self._learn(addr, now)
            elapsed = now - started
            new_nodes = len(self.known_ids() - known_before)
            self._db.execute("DELETE FROM history WHERE at < ?", (now - self.history_s,))
            self._db.execute(
                "INSERT INTO rounds (started, elapsed_s, visited, reached, new_nodes) "
                "VALUES (?, ?, ?, ?, ?)",
                (started, elapsed, visited, reached, new_nodes),
            )
        return RoundStats(visited, reached, new_nodes, elapsed)

    def _record_visit(
        self, record: NodeRecord, now: float, new_ids: int, told: set[NodeID]
    ) -> None:
        """Store one visit: the addresses it taught, the node's new state, its history row
        and the edges to the IDs it told us about."""
        db = self._db
        for addr in record.addresses:
            self._learn(addr, now)
        new_status, counters = self._visit_counters(record, new_ids)
        delay = next_visit_delay(self.policy, counters)
        ok = record.reachable
        info = record.node_info.encode() if record.node_info is not None else None
        error = record.error.value if record.error else None
        db.execute(
            "UPDATE nodes SET status = ?, node_info = COALESCE(?, node_info),"
            " dialed = CASE WHEN ? THEN ? ELSE dialed END,"
            " last_seen = CASE WHEN ? THEN ? ELSE last_seen END,"
            " last_attempt = ?, error = ?, error_detail = ?, attempts = attempts + ?,"
            " successes = ?, failures = ?, flaps = ?, pex_dry = ?,"
            " pex_addrs = CASE WHEN ? THEN ? ELSE pex_addrs END,"
            " pex_error = ?, next_visit = ? WHERE id = ?",
            (
                new_status,
                info,
                ok,
                str(record.dialed) if record.dialed else None,
                ok,
                now,
                now,
                error,
                record.error_detail,
                record.attempts,
                counters.successes,
                counters.failures,
                counters.flaps,
                counters.pex_dry,
                counters.pex_answered,
                record.pex_addrs,
                record.pex_error if ok else None,
                now + delay,
                record.node_id,
            ),
        )
        db.execute(
            "INSERT INTO history (node_id, at, reachable, error, detail) VALUES (?, ?, ?, ?, ?)",
            (record.node_id, now, int(ok), error, record.error_detail),
        )
        for dst in told:
            db.execute(
                "INSERT INTO edges (from_id, to_id, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (from_id, to_id) DO UPDATE SET last_seen = excluded.last_seen",
                (record.node_id, dst, now, now),
            )

    def _visit_counters(self, record: NodeRecord, new_ids: int) -> tuple[str, NodeCounters]:
        """The node's status and counters after ``record`` (``new_ids``: IDs it taught us)."""
        row = self._db.execute(
            "SELECT status, successes, failures, flaps, pex_dry FROM nodes WHERE id = ?",
            (record.node_id,),
        ).fetchone()
        status, successes, failures, flaps, pex_dry = row
        ok = record.reachable
        new_status = NodeStatus.REACHABLE if ok else NodeStatus.FAILED
        if status != NodeStatus.NEW and status != new_status:
            flaps += 1
        successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
        answered = ok and record.pex_addrs is not None
        if answered:
            pex_dry = 0 if new_ids else pex_dry + 1
        return new_status, NodeCounters(ok, successes, failures, flaps, pex_dry, answered)

    # ------------------------------------------------------------------ reading

    def nodes(self) -> list[NodeRow]:
        """Every node, in the order first seen."""
        addrs: dict[str, list[NetAddress]] = {}
        for node_id, text in self._db.execute(
            "SELECT node_id, addr FROM addresses ORDER BY first_seen, rowid"
        ):
            if (a := _addr(text)) is not None:
                addrs.setdefault(node_id, []).append(a)
        rows = self._db.execute(
            "SELECT id, seed, status, node_info, dialed, first_seen, last_seen, last_attempt,"
            " error, error_detail, attempts, successes, failures, pex_addrs, pex_error,"
            " next_visit FROM nodes ORDER BY first_seen, rowid"
        )
        return [
            NodeRow(
                node_id=NodeID(r[0]),
                seed=bool(r[1]),
                status=r[2],
                node_info=_decode_info(r[3]),
                dialed=_addr(r[4]) if r[4] else None,
                addresses=tuple(addrs.get(r[0], ())),
                first_seen=r[5],
                last_seen=r[6],
                last_attempt=r[7],
                error=r[8],
                error_detail=r[9],
                attempts=r[10],
                successes=r[11],
                failures=r[12],
                pex_addrs=r[13],
                pex_error=r[14],
                next_visit=r[15],
            )
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        """``{status: nodes}`` for every status present."""
        return {
            str(status): int(n)
            for status, n in self._db.execute("SELECT status, COUNT(*) FROM nodes GROUP BY status")
        }

    def failure_counts(self) -> dict[str, int]:
        """``{reason: nodes}`` over the nodes whose last visit failed."""
        return {
            str(error): int(n)
            for error, n in self._db.execute(
                "SELECT error, COUNT(*) FROM nodes WHERE status = 'failed' AND error IS NOT NULL"
                " GROUP BY error"
            )
        }

    def verified(self) -> list[tuple[NetAddress, float]]:
        """``(address, age_s)`` of every node reachable at its last visit, verified within
        the policy's freshness window; the address is the one that answered."""
        if self._reachable is None or self._reachable[0] != self._version:
            # Parsed once per change of the store, not once per /peers or PEX request.
            rows = [
                (a, float(last_seen))
                for dialed, last_seen in self._db.execute(
                    "SELECT dialed, last_seen FROM nodes"
                    " WHERE status = 'reachable' AND dialed IS NOT NULL"
                )
                if (a := _addr(dialed)) is not None
            ]
            self._reachable = (self._version, rows)
        now = self._clock()
        cutoff = now - self.policy.freshness_s
        return [(a, now - seen) for a, seen in self._reachable[1] if seen >= cutoff]

    def history(self, node_id: str) -> list[tuple[float, bool, str | None]]:
        """``(at, reachable, error)`` of every visit of ``node_id``, oldest first."""
        return [
            (float(at), bool(ok), err)
            for at, ok, err in self._db.execute(
                "SELECT at, reachable, error FROM history WHERE node_id = ? ORDER BY at, id",
                (node_id,),
            )
        ]

    def rounds(self) -> int:
        """How many rounds were recorded."""
        return int(self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])

    def edges(self) -> list[tuple[NodeID, NodeID]]:
        """Every "told us about" edge, in the order first seen."""
        return [
            (NodeID(a), NodeID(b))
            for a, b in self._db.execute(
                "SELECT from_id, to_id FROM edges ORDER BY first_seen, rowid"
            )
        ]

    def to_crawl_result(self, network: str, seeds: Iterable[NetAddress] = ()) -> CrawlResult:
        """Everything in the store as a :class:`CrawlResult` (for ``network.json`` and
        ``addrbook.json``): the last visit of every node."""
        created = float(self.get_meta("created") or self._clock())
        rows = self.nodes()
        seed_list = tuple(seeds) or tuple(a for r in rows if r.seed for a in r.addresses[:1])
        return CrawlResult(
            network=network,
            seeds=seed_list,
            nodes=tuple(r.to_record() for r in rows),
            edges=tuple(self.edges()),
            started_at=datetime.fromtimestamp(created, UTC),
            elapsed_s=max(0.0, self._clock() - created),
            peak_in_flight=0,
        )


def _decode_info(blob: bytes | None) -> NodeInfo | None:
    if blob is None:
        return None
    try:
        return NodeInfo.decode(blob)
    except CometP2PError:
        return None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (counted in the store's version), or ROLLBACK."""

    def __init__(self, store: SeedStore) -> None:
        self._store = store
        self._db = store._db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
            self._store._version += 1
        else:
            self._db.execute("ROLLBACK")
