"""TrustMetricStore on SQLite (behaviour.md §6.4): round trips, Go JSON, damage, crashes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cometp2p.trust.config import TrustMetricConfig
from cometp2p.trust.metric import TrustHistory
from cometp2p.trust.store import (
    SAVE_PERIOD_S,
    TrustMetricStore,
    TrustStoreError,
    open_trust_store,
    parse_go_json,
)

A = "a" * 40
B = "b" * 40


def fill(store: TrustMetricStore, intervals: int = 30) -> None:
    for i in range(intervals):
        store.metric(A).good_events(5)
        store.metric(A).bad_events(i % 3)
        store.metric(B).bad_events(1 if i % 5 == 0 else 0)
        store.metric(B).good_events(1)
        for node_id in store:
            store.metric(node_id).next_time_interval()


def test_sqlite_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "data" / "trust.sqlite"
    store = TrustMetricStore(path, wall_clock=lambda: 1_700_000_000.5)
    fill(store)
    before = {k: (m.history_json(), m.trust_value()) for k, m in store.items()}
    store.close()
    store.close()  # idempotent
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    again = TrustMetricStore(path)
    after = {k: (m.history_json(), m.trust_value()) for k, m in again.items()}
    assert after == before
    assert again.updated_at() == {A: 1_700_000_000.5, B: 1_700_000_000.5}
    again.close()


def test_periodic_save_every_minute(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    store = TrustMetricStore(path, now=0.0)
    store.metric(A).bad_events(3)
    assert store.get_timer() == pytest.approx(SAVE_PERIOD_S)
    reader = sqlite3.connect(path)
    store.handle_timer(SAVE_PERIOD_S - 0.1)
    assert reader.execute("SELECT COUNT(*) FROM trust_metric").fetchone() == (0,)
    store.handle_timer(SAVE_PERIOD_S)  # the metric's interval ends, then the save
    rows = reader.execute("SELECT node_id, intervals FROM trust_metric").fetchall()
    assert rows == [(A, 1)]
    store.close()
    reader.close()


def test_go_json_export_and_import(tmp_path: Path) -> None:
    store = TrustMetricStore(None)
    fill(store, 40)
    store.metric("fresh")  # never ticked: Go writes its nil history as null
    exported = store.export_go_json()
    doc = json.loads(exported)
    assert doc["fresh"] == {"intervals": 0, "history": None}
    assert doc[A]["intervals"] == 40
    assert len(doc[A]["history"]) == TrustMetricConfig().history_max_size
    assert list(doc) == sorted(doc)
    other = TrustMetricStore(tmp_path / "t.sqlite")
    assert other.import_go_json(exported) == 3
    for key, m in store.items():
        assert other.metric(key).history_json() == m.history_json()
        assert other.metric(key).trust_value() == m.trust_value()
    assert other.export_go_json() == exported
    other.close()
    store.close()
    with TrustMetricStore(tmp_path / "t.sqlite") as reopened:
        assert len(reopened) == 3


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[]",
        b'{"": {"intervals": 1, "history": [1.0]}}',
        b'{"x": []}',
        b'{"x": {"intervals": -1, "history": []}}',
        b'{"x": {"intervals": true, "history": []}}',
        b'{"x": {"intervals": 1, "history": "1.0"}}',
        b'{"x": {"intervals": 1, "history": [NaN]}}',
        b'{"x": {"intervals": 1, "history": ["0.5"]}}',
    ],
)
def test_malformed_go_json_is_a_clear_error(bad: bytes) -> None:
    with TrustMetricStore(None) as store:
        with pytest.raises(TrustStoreError):
            store.import_go_json(bad)
        assert len(store) == 0


def test_go_json_intervals_zero_is_not_nan() -> None:
    parsed = parse_go_json(b'{"p": {"intervals": 0, "history": null}}')
    assert parsed == {"p": TrustHistory(0, ())}
    with TrustMetricStore(None) as store:
        store.import_go_json(b'{"p": {"intervals": 0, "history": [0.5]}}')
        assert store.metric("p").trust_score() == 100


@pytest.mark.parametrize("damage", ["garbage", "bad_row"])
def test_corrupt_database_is_moved_aside(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "trust.sqlite"
    if damage == "garbage":
        path.write_bytes(b"this is not an sqlite database at all" * 200)
    else:
        s = TrustMetricStore(path)
        s.close()
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("INSERT INTO trust_metric VALUES ('x', 1, '{not json', 0)")
    original = path.read_bytes()
    with pytest.raises(TrustStoreError, match="trust database"):
        TrustMetricStore(path)
    store, error = open_trust_store(path)
    assert error is not None
    assert not error.locked
    assert len(store) == 0
    aside = [
        p
        for p in tmp_path.iterdir()
        if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == 1
    if damage == "garbage":
        assert aside[0].read_bytes() == original
    store.metric(A).good_events(1)  # the new store works and persists
    store.close()
    with TrustMetricStore(path) as reopened:
        assert A in list(reopened)


def test_locked_database_goes_on_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    TrustMetricStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store, error = open_trust_store(path, lock_timeout_s=0.05)
        assert error is not None
        assert error.locked
        assert "locked by another process" in str(error)
        assert store.path is None
        store.metric(A).bad_events(1)
        store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert path.exists()
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cometp2p.trust.store import TrustMetricStore

    now = 0.0
    store = TrustMetricStore(Path(sys.argv[1]), now=now, wall_clock=lambda: now)
    for step in range(10_000_000):
        now = float(step)
        store.metric("peer").good_events(2)
        if step % 7 == 0:
            store.metric("peer").bad_events(1)
        store.handle_timer(now)
        if step and step % 60 == 0:  # the store saves every 60 s of its clock
            m = store.metric("peer").history_json()
            print(f"saved {now} {m.intervals} {list(m.history)!r}", flush=True)
        print(f"at {now}", flush=True)
    """
)


def test_kill_9_between_saves_loses_at_most_the_last_minute(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    saves: list[tuple[float, int, str]] = []
    last_at = 0.0

    def record(line: str) -> None:
        nonlocal last_at
        if line.startswith("saved"):
            _, t, count, hist = line.split(" ", 3)
            saves.append((float(t), int(count), hist.strip()))
        elif line.startswith("at"):
            last_at = float(line.split()[1])

    try:
        assert child.stdout is not None
        for line in child.stdout:  # bounded by the test timeout; the child prints every step
            record(line)
            if len(saves) >= 4 and last_at % 60 == 37:
                break
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    for line in rest.splitlines():
        record(line)
    assert child.returncode == -signal.SIGKILL
    store = TrustMetricStore(path)
    updated = store.updated_at()["peer"]
    # What is on disk is exactly one of the saves the child completed (or one it was
    # committing when killed), never a torn mix, and at most a minute (one save period
    # plus the step in flight) behind what the child had done.
    saved_at, intervals, history = max(s for s in saves if s[0] <= updated)
    assert updated - saved_at <= SAVE_PERIOD_S
    assert last_at - updated <= SAVE_PERIOD_S + 1
    if updated == saved_at:
        snap = store.metric("peer").history_json()
        assert snap.intervals == intervals
        assert repr(list(snap.history)) == history
    store.close()


def test_bans_are_saved_and_expire(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    clock = [1000.0]
    with TrustMetricStore(path, wall_clock=lambda: clock[0]) as store:
        store.set_ban(A, 1500.0)
        store.set_ban(B, 1100.0)
    with TrustMetricStore(path, wall_clock=lambda: clock[0]) as store:
        assert store.bans() == {A: 1500.0, B: 1100.0}
        clock[0] = 1200.0  # B's ban is over by the next save
        store.set_ban(A, None)
        store.save()
        assert store.bans() == {}
    with TrustMetricStore(path) as store:
        assert store.bans() == {}
