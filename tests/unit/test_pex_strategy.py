"""The adaptive strategy without IO (behaviour.md §9.1): size estimate, interval, round robin."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cometp2p.cli.start import apply_flags
from cometp2p.config import Config, P2PConfig, load_config, render_config_toml, write_config
from cometp2p.errors import ConfigError
from cometp2p.pex.config import PexConfig, RequestStrategy
from cometp2p.pex.strategy import (
    NetworkSizeEstimator,
    RoundRobinScheduler,
    Sample,
    adaptive_interval_s,
    v035_growth_interval_s,
)
from cometp2p.types import NodeID

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CFG = PexConfig(
    strategy=RequestStrategy.ADAPTIVE,
    adaptive_min_interval_s=0.2,
    adaptive_max_interval_s=600.0,
    adaptive_no_peers_retry_s=1.0,
)


def pid(n: int) -> NodeID:
    return NodeID(f"{n:040x}")


def always(_: NodeID) -> bool:
    return True


# -- network size estimate --------------------------------------------------------------------


def test_estimate_is_unknown_until_a_sample_meets_a_non_empty_book() -> None:
    est = NetworkSizeEstimator(8)
    assert est.estimate() is None
    est.observe(known_before=0, received=20, recaptured=0)  # first answer: no marks yet
    assert est.estimate() is None
    est.observe(known_before=10, received=0, recaptured=0)  # empty answers are ignored
    assert est.samples == (Sample(0, 20, 0),)


def test_estimate_is_schnabels() -> None:
    est = NetworkSizeEstimator(8)
    est.observe(known_before=100, received=50, recaptured=24)
    assert est.estimate() == pytest.approx(100 * 50 / 25)
    est.observe(known_before=126, received=40, recaptured=20)
    assert est.estimate() == pytest.approx((100 * 50 + 126 * 40) / (24 + 20 + 1))


def test_estimate_clamps_impossible_recaptures() -> None:
    est = NetworkSizeEstimator(8)
    est.observe(known_before=3, received=10, recaptured=50)
    assert est.samples == (Sample(3, 10, 3),)


def test_estimate_window_forgets_old_samples() -> None:
    est = NetworkSizeEstimator(2)
    est.observe(10, 10, 0)
    est.observe(20, 10, 9)
    est.observe(30, 10, 9)
    assert [s.known_before for s in est.samples] == [20, 30]


@pytest.mark.parametrize("population", [50, 300, 2000])
def test_estimate_finds_the_size_of_a_uniformly_sampled_network(population: int) -> None:
    """Simulated PEX: each answer is a uniform sample of the network; the book grows."""
    rng = random.Random(population)
    known: set[int] = set(rng.sample(range(population), 5))
    est = NetworkSizeEstimator(8)
    for _ in range(8):
        answer = set(rng.sample(range(population), min(population, 60)))
        recaptured = len(answer & known)
        est.observe(len(known), len(answer), recaptured)
        known |= answer
    estimate = est.estimate()
    assert estimate is not None
    assert 0.75 * population <= estimate <= 1.25 * population


# -- interval --------------------------------------------------------------------------------


def test_interval_floor_while_unknown_and_ceiling_when_book_is_full() -> None:
    assert adaptive_interval_s(CFG, known=0, estimate=None) == 0.2
    assert adaptive_interval_s(CFG, known=5000, estimate=5000.0, need_more=False) == 600.0


def test_interval_stays_near_the_floor_while_most_of_the_network_is_unknown() -> None:
    assert adaptive_interval_s(CFG, known=10, estimate=1000.0) == pytest.approx(0.2 * 1001 / 991)


def test_interval_grows_as_the_book_covers_the_estimate() -> None:
    intervals = [adaptive_interval_s(CFG, known=k, estimate=100.0) for k in (0, 50, 90, 99, 100)]
    assert intervals == sorted(intervals)
    # Covered: one expected discovery per interval, i.e. min * (K + 1).
    assert intervals[-1] == pytest.approx(0.2 * 101)
    # An estimate below what we already know counts as covered.
    assert adaptive_interval_s(CFG, known=100, estimate=40.0) == pytest.approx(0.2 * 101)
    assert adaptive_interval_s(CFG, known=10_000, estimate=10.0) == 600.0


@given(
    known=st.integers(min_value=0, max_value=100_000),
    estimate=st.none() | st.floats(min_value=0.0, max_value=1e7),
    need_more=st.booleans(),
)
def test_interval_is_always_within_bounds(
    known: int, estimate: float | None, need_more: bool
) -> None:
    value = adaptive_interval_s(CFG, known=known, estimate=estimate, need_more=need_more)
    assert CFG.adaptive_min_interval_s <= value <= CFG.adaptive_max_interval_s


# -- round robin --------------------------------------------------------------------------------


def test_peers_are_asked_in_fifo_order_and_requeued_after_answering() -> None:
    sched = RoundRobinScheduler(CFG)
    for n in (1, 2, 3):
        sched.add_peer(pid(n))
    assert sched.get_timer() is None
    assert sched.next_request(NOW, always) == pid(1)
    assert sched.queue == (pid(2), pid(3))
    # Nobody else before the interval has passed.
    assert sched.next_request(NOW + timedelta(seconds=0.1), always) is None
    assert sched.get_timer() == NOW + timedelta(seconds=0.2)
    t = NOW + timedelta(seconds=0.2)
    assert sched.next_request(t, always) == pid(2)
    sched.on_response(pid(1), known_before=0, received=5, recaptured=0, known_after=5)
    assert sched.queue == (pid(3), pid(1))
    t += timedelta(seconds=0.2)
    assert sched.next_request(t, always) == pid(3)
    t += timedelta(seconds=0.2)
    assert sched.next_request(t, always) == pid(1)


def test_ineligible_peers_keep_their_place() -> None:
    sched = RoundRobinScheduler(CFG)
    for n in (1, 2, 3):
        sched.add_peer(pid(n))
    assert sched.next_request(NOW, lambda p: p != pid(1)) == pid(2)
    assert sched.queue == (pid(1), pid(3))


def test_no_peer_to_ask_retries_later() -> None:
    sched = RoundRobinScheduler(CFG)
    assert sched.next_request(NOW, always) is None
    assert sched.get_timer() == NOW + timedelta(seconds=1.0)
    sched.add_peer(pid(1))
    assert sched.next_request(NOW + timedelta(seconds=0.5), always) is None  # still waiting
    assert sched.next_request(NOW + timedelta(seconds=1.0), always) == pid(1)


def test_full_book_asks_nobody_for_the_maximum_interval() -> None:
    sched = RoundRobinScheduler(CFG)
    sched.add_peer(pid(1))
    assert sched.next_request(NOW, always, need_more=False) is None
    assert sched.get_timer() == NOW + timedelta(seconds=600.0)


def test_removed_peers_are_never_asked_and_a_late_answer_does_not_requeue_them() -> None:
    sched = RoundRobinScheduler(CFG)
    sched.add_peer(pid(1))
    sched.add_peer(pid(2))
    assert sched.next_request(NOW, always) == pid(1)
    sched.remove_peer(pid(1))
    sched.remove_peer(pid(2))
    sched.on_response(pid(1), known_before=0, received=0, recaptured=0, known_after=0)
    assert sched.queue == ()


def test_a_request_that_could_not_be_sent_keeps_its_turn() -> None:
    sched = RoundRobinScheduler(CFG)
    for n in (1, 2):
        sched.add_peer(pid(n))
    assert sched.next_request(NOW, always) == pid(1)
    sched.request_not_sent(pid(1))
    assert sched.queue == (pid(1), pid(2))


def test_interval_lengthens_as_answers_stop_bringing_news() -> None:
    sched = RoundRobinScheduler(CFG)
    sched.add_peer(pid(1))
    t = NOW
    known = 0
    intervals = []
    # A network of 40 nodes: the first answers are mostly new, later ones all known.
    for received, new in ((20, 20), (30, 12), (30, 6), (30, 1), (30, 0), (30, 0)):
        assert sched.next_request(t, always) == pid(1)
        intervals.append(
            sched.on_response(
                pid(1),
                known_before=known,
                received=received,
                recaptured=received - new,
                known_after=known + new,
            )
        )
        known += new
        t = sched.get_timer() or t
    assert intervals[0] == CFG.adaptive_min_interval_s
    assert intervals == sorted(intervals)
    assert intervals[-1] >= 5 * CFG.adaptive_min_interval_s
    estimate = sched.estimator.estimate()
    assert estimate is not None
    assert 30 <= estimate <= 45


class SchedulerMachine(RuleBasedStateMachine):
    """Every connected peer is either queued or awaiting an answer, never both, never twice."""

    def __init__(self) -> None:
        super().__init__()
        self.sched = RoundRobinScheduler(CFG)
        self.connected: set[NodeID] = set()
        self.asked: set[NodeID] = set()
        self.now = NOW

    @rule(n=st.integers(min_value=1, max_value=6))
    def connect(self, n: int) -> None:
        if pid(n) in self.connected:
            return
        self.connected.add(pid(n))
        self.sched.add_peer(pid(n))

    @rule(n=st.integers(min_value=1, max_value=6))
    def disconnect(self, n: int) -> None:
        self.connected.discard(pid(n))
        self.asked.discard(pid(n))
        self.sched.remove_peer(pid(n))

    @rule(dt=st.floats(min_value=0.0, max_value=5.0))
    def tick(self, dt: float) -> None:
        self.now += timedelta(seconds=dt)
        chosen = self.sched.next_request(self.now, always)
        if chosen is not None:
            assert chosen in self.connected
            assert chosen not in self.asked
            self.asked.add(chosen)

    @precondition(lambda self: bool(self.asked))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        peer_id = data.draw(st.sampled_from(sorted(self.asked)))
        self.asked.discard(peer_id)
        self.sched.on_response(peer_id, known_before=5, received=5, recaptured=3, known_after=7)

    @invariant()
    def queue_and_asked_partition_the_connected_peers(self) -> None:
        queue = self.sched.queue
        assert len(queue) == len(set(queue))
        assert set(queue) | self.asked == self.connected
        assert not set(queue) & self.asked


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=100, stateful_step_count=40)


def test_an_evicting_book_still_thins_out_its_requests() -> None:
    # Every answer brings 5 addresses the book does not hold, but the book evicts as many
    # (all of them in a few buckets): the estimate never sees the book cover the network,
    # and v0.35's growth term is what spaces the requests out.
    sched = RoundRobinScheduler(CFG)
    sched.add_peer(pid(1))
    t = NOW
    intervals = []
    for _ in range(50):
        assert sched.next_request(t, always) == pid(1)
        intervals.append(
            sched.on_response(pid(1), known_before=100, received=30, recaptured=25, known_after=100)
        )
        t = sched.get_timer() or t
    estimate_only = adaptive_interval_s(CFG, known=100, estimate=sched.estimator.estimate())
    assert estimate_only < 10 * CFG.adaptive_min_interval_s
    assert intervals[10:] == sorted(intervals[10:])  # once T dominates, it only grows
    assert intervals[-1] >= 100 * CFG.adaptive_min_interval_s
    assert intervals[-1] == pytest.approx(
        v035_growth_interval_s(CFG, total_added=250, added=5, available=1)
    )


@given(st.integers(0, 10**6), st.integers(0, 10**4), st.integers(0, 1000))
def test_growth_interval_is_within_bounds(total: int, added: int, available: int) -> None:
    value = v035_growth_interval_s(CFG, total_added=total, added=added, available=available)
    assert CFG.adaptive_min_interval_s <= value <= CFG.adaptive_max_interval_s


# -- selecting the strategy (config.toml, start flag) -----------------------------------------


def test_strategy_comes_from_config_toml_default_v038(tmp_path: Path) -> None:
    assert PexConfig.from_p2p(P2PConfig()).strategy is RequestStrategy.V038
    assert "pex_strategy" not in render_config_toml(Config(home=tmp_path))  # default: not written
    write_config(Config(home=tmp_path, p2p=P2PConfig(pex_strategy="adaptive")))
    loaded = load_config(tmp_path)
    assert loaded.p2p.pex_strategy == "adaptive"
    assert PexConfig.from_p2p(loaded.p2p).strategy is RequestStrategy.ADAPTIVE


def test_unknown_strategy_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pex_strategy"):
        P2PConfig(pex_strategy="v0.35")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('[p2p]\npex_strategy = "fast"\n')
    with pytest.raises(ConfigError, match="pex_strategy"):
        load_config(tmp_path)


def test_start_flag_overrides_config_toml(tmp_path: Path) -> None:
    config = Config(home=tmp_path, p2p=P2PConfig(pex_strategy="adaptive"))
    assert apply_flags(config).p2p.pex_strategy == "adaptive"
    assert apply_flags(config, pex_strategy="v0.38").p2p.pex_strategy == "v0.38"
