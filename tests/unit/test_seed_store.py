"""SeedStore: schedule across rounds, restart, and kill -9 losing at most one transaction."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from cometp2p.crawler.model import CrawlResult, FailureReason, NodeRecord, NodeState
from cometp2p.crypto.keys import NodeKey
from cometp2p.seed.schedule import SchedulePolicy
from cometp2p.seed.store import NodeStatus, SeedStore
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

POLICY = SchedulePolicy(
    min_interval_s=10, new_interval_s=30, stable_interval_s=600, failed_interval_s=3600
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def addr(port: int) -> NetAddress:
    return NetAddress.parse(f"{NodeKey.generate().node_id}@127.0.0.1:{port}", resolve=False)


def reached(a: NetAddress, *, told: int | None = 0, moniker: str = "n") -> NodeRecord:
    info = NodeInfo(
        node_id=a.id, listen_addr=f"tcp://{a.ip}:{a.port}", network="chain",
        channels=b"\x00", moniker=moniker,
    )  # fmt: skip
    return NodeRecord(
        node_id=a.id, addresses=[a], state=NodeState.REACHED, node_info=info, dialed=a,
        attempts=1, pex_addrs=told,
    )  # fmt: skip


def failed(a: NetAddress) -> NodeRecord:
    return NodeRecord(
        node_id=a.id, addresses=[a], state=NodeState.FAILED, error=FailureReason.REFUSED,
        error_detail="TCP connection refused", attempts=1,
    )  # fmt: skip


def result(nodes: list[NodeRecord], edges: list[tuple[str, str]] = ()) -> CrawlResult:  # type: ignore[assignment]
    return CrawlResult(
        network="chain", seeds=(), nodes=tuple(nodes),
        edges=tuple((a, b) for a, b in edges),  # type: ignore[misc]
        started_at=datetime.now(UTC), elapsed_s=0.1, peak_in_flight=1,
    )  # fmt: skip


def test_revisit_schedule_follows_answers_and_failures(tmp_path: Path) -> None:
    clock = Clock()
    store = SeedStore(tmp_path / "seed.db", POLICY, clock=clock)
    a, b, c = addr(1001), addr(1002), addr(1003)
    store.add_seeds([a])
    assert [x.id for x in store.due()] == [a.id]
    # a answers with b (new) and c; c is down.
    stats = store.record_round(
        result([reached(a, told=2), failed(c), NodeRecord(node_id=b.id, addresses=[b])],
               [(a.id, b.id), (a.id, c.id)]),
        started=clock.now,
    )  # fmt: skip
    assert (stats.visited, stats.reached, stats.new_nodes) == (2, 1, 2)
    rows = {r.node_id: r for r in store.nodes()}
    assert rows[a.id].status == NodeStatus.REACHABLE
    assert rows[a.id].next_visit == clock.now + 10  # its answer brought new IDs: re-ask soon
    assert rows[c.id].status == NodeStatus.FAILED
    assert rows[c.id].error == "refused"
    assert rows[c.id].next_visit == clock.now + 30
    assert rows[b.id].status == NodeStatus.NEW
    assert rows[b.id].next_visit == clock.now
    assert rows[a.id].seed
    assert not rows[b.id].seed
    assert {x.id for x in store.due()} == {b.id}
    assert not store.is_due(a.id)
    assert store.is_due(b.id)
    assert store.is_due(addr(9).id)
    # Three dry answers in a row: a settles on the stability schedule, doubling.
    delays = []
    for _ in range(5):
        clock.now += 1000
        store.record_round(result([reached(a, told=1)], [(a.id, b.id)]), started=clock.now)
        delays.append(store.nodes()[0].next_visit - clock.now)
    assert delays == [10, 10, 240, 480, 600]  # 30 s doubled per success (4th on), capped
    # c keeps failing: backs off up to failed_interval_s.
    for _ in range(10):
        store.record_round(result([failed(c)]), started=clock.now)
    row_c = next(r for r in store.nodes() if r.node_id == c.id)
    assert row_c.next_visit - clock.now == 3600
    assert [ok for _, ok, _ in store.history(c.id)] == [False] * 11
    assert [ok for _, ok, _ in store.history(a.id)] == [True] * 6
    # History older than the retention is dropped at the next round.
    store.history_s = 500
    clock.now += 501
    store.record_round(result([failed(c)]), started=clock.now)
    assert store.history(a.id) == []
    assert len(store.history(c.id)) == 1


def test_verified_is_fresh_and_reachable_only(tmp_path: Path) -> None:
    clock = Clock()
    store = SeedStore(tmp_path / "seed.db", POLICY, clock=clock)
    a, b = addr(1001), addr(1002)
    store.record_round(result([reached(a), reached(b)]), started=clock.now)
    assert {x.id for x, _ in store.verified()} == {a.id, b.id}
    clock.now += 500
    store.record_round(result([failed(b)]), started=clock.now)
    assert [(x.id, age) for x, age in store.verified()] == [(a.id, 500)]
    clock.now += 701  # a's verification is older than 2 x stable_interval_s
    assert store.verified() == []
    assert store.counts() == {"reachable": 1, "failed": 1}
    assert store.failure_counts() == {"refused": 1}


def test_restart_resumes_the_schedule_and_the_nodes(tmp_path: Path) -> None:
    clock = Clock()
    store = SeedStore(tmp_path / "seed.db", POLICY, clock=clock)
    a, b = addr(1001), addr(1002)
    store.set_meta("network", "chain")
    store.record_round(result([reached(a, moniker="alpha"), failed(b)]), started=clock.now)
    store.close()
    again = SeedStore(tmp_path / "seed.db", POLICY, clock=clock)
    assert again.get_meta("network") == "chain"
    assert again.due() == []  # nothing is due again right after a restart
    rows = {r.node_id: r for r in again.nodes()}
    info = rows[a.id].node_info
    assert info is not None
    assert info.moniker == "alpha"
    assert rows[b.id].error_detail == "TCP connection refused"
    assert again.rounds() == 1
    doc = again.to_crawl_result("chain").to_document()
    assert doc["summary"] == {
        "found": 2, "reached": 1, "failed": 1, "not_dialed": 0, "errors": {"refused": 1},
        "edges": 0, "peak_in_flight": 0,
    }  # fmt: skip
    clock.now += 31
    assert {x.id for x in again.due()} == {a.id, b.id}


_WRITER = textwrap.dedent(
    """
    import sys
    from cometp2p.seed.store import SeedStore
    from cometp2p.wire.netaddress import NetAddress
    store = SeedStore(sys.argv[1])
    i = 0
    while True:
        i += 1
        store.learn([NetAddress.parse(f"{i:040x}@127.0.0.1:{1 + i % 60000}", resolve=False)])
        print(i, flush=True)
    """
)


def test_kill_9_loses_at_most_the_last_transaction(tmp_path: Path) -> None:
    db = tmp_path / "seed.db"
    last = 0
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:  # bounded by the pytest timeout; the child never stops
                last = int(line)
                if last >= 300:
                    break
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SeedStore(db)
    count = len(store.nodes())
    # Every transaction reported as committed survived; at most the ones after it
    # (committed before the kill but not yet printed, or read ahead) are there too.
    assert count >= last
    ids = sorted(int(r.node_id, 16) for r in store.nodes())
    assert ids == list(range(1, count + 1))  # no gap: whole transactions only
    store.close()
