"""Trust wiring without sockets: stop reasons, the reactor's verdicts, PEX's use of them,
the ``[trust]`` config keys and ``cometp2p trust``."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from click.testing import CliRunner
from google.protobuf.message import DecodeError

from cometp2p.cli.main import main
from cometp2p.config import (
    Config,
    TrustConfig,
    load_config,
    render_config_toml,
    unknown_keys,
    write_config,
)
from cometp2p.errors import ConfigError, ConnectionBrokenError, RemoteProtocolError
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.config import PexConfig
from cometp2p.pex.core import DialVerdict, Offence, PeerRef, PexCore, PexMisbehaviourError
from cometp2p.pex.reactor import PEXReactor
from cometp2p.switch.peer import Peer
from cometp2p.switch.reactor import Envelope
from cometp2p.switch.switch import Switch
from cometp2p.testing.network import make_switch
from cometp2p.trust.reactor import TrustReactor
from cometp2p.trust.reasons import BadReason, classify_stop_reason
from cometp2p.trust.store import TrustMetricStore
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

NOW = datetime(2024, 5, 1, tzinfo=UTC)
CFG = TrustConfig(min_score=50, ban_time_s=100.0, interval_length_s=1.0, tracking_window_s=60.0)


def addr(n: int) -> NetAddress:
    return NetAddress.parse(f"{n:040x}@10.0.{n // 250}.{n % 250 + 1}:26656", resolve=False)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (None, None),
        (ConnectionBrokenError("the peer closed the connection"), None),
        (
            RemoteProtocolError("pong timeout: no Pong within 45 s of our Ping"),
            BadReason.PONG_TIMEOUT,
        ),
        (
            RemoteProtocolError("received message exceeds available capacity on channel 0x00"),
            BadReason.OVERSIZED_OR_UNDECODABLE,
        ),
        (PexMisbehaviourError(Offence.UNDECODABLE, "x"), BadReason.OVERSIZED_OR_UNDECODABLE),
        (PexMisbehaviourError(Offence.REQUEST_TOO_SOON, "x"), BadReason.PEX_VIOLATION),
        (DecodeError("truncated"), BadReason.OVERSIZED_OR_UNDECODABLE),
        (RemoteProtocolError("unknown channel 0x42"), BadReason.PROTOCOL_ERROR),
        (ValueError("a reactor choked on the message"), BadReason.PROTOCOL_ERROR),
    ],
)
def test_stop_reasons(reason: BaseException | None, expected: BadReason | None) -> None:
    assert classify_stop_reason(reason) is expected


@dataclass
class FakePeer:
    """What TrustReactor reads of a Peer."""

    id: NodeID
    socket_address: NetAddress
    is_running: bool = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def wired() -> AsyncIterator[tuple[Switch, PEXReactor, TrustReactor, Clock]]:
    clock = Clock()
    book = AddrBook(strict=False, rng=random.Random(1))
    pex = PEXReactor(book, PexConfig(), rng=random.Random(2), clock=lambda: NOW)
    trust = TrustReactor(CFG, clock=clock)
    switch = make_switch([("PEX", pex), ("TRUST", trust)])
    await trust.start()
    try:
        yield switch, pex, trust, clock
    finally:
        await trust.stop()


async def misbehave(trust: TrustReactor, peer: FakePeer) -> None:
    await trust.add_peer(cast(Peer, peer))
    await trust.remove_peer(cast(Peer, peer), RemoteProtocolError("garbage"))


async def test_bad_event_distrusts_bans_and_expires(
    wired: tuple[Switch, PEXReactor, TrustReactor, Clock],
) -> None:
    switch, pex, trust, clock = wired
    bad, good = FakePeer(addr(1).id, addr(1)), FakePeer(addr(2).id, addr(2))
    for a in (addr(1), addr(2)):
        pex.book.add_address(a, addr(3), NOW)
    await misbehave(trust, bad)
    await trust.add_peer(cast(Peer, good))
    assert trust.score(bad.id) == 0
    assert not trust.allows(bad.id)
    assert pex.book.is_banned(addr(1))
    assert trust.bad_events == {BadReason.PROTOCOL_ERROR: 1}
    assert trust.allows(good.id)
    assert trust.score(NodeID("f" * 40)) == 100  # never seen: perfect
    # PEX: never dialed, never handed out.
    assert pex.core.check_dial(addr(1), persistent=False, now=NOW) is DialVerdict.UNTRUSTED
    requester = PeerRef(NodeID("e" * 40), False, addr(9), None)
    reply = pex.core.on_request(requester, NOW).reply or ()
    assert addr(2) in reply
    assert addr(1) not in reply
    # After the ban: on probation, dialable again until its next bad event.
    clock.now += CFG.ban_time_s + 1
    assert trust.allows(bad.id)
    assert trust.allows(bad.id)
    await misbehave(trust, bad)
    assert not trust.allows(bad.id)
    assert switch.reactor("TRUST") is trust


async def test_persistent_and_unconditional_peers_are_never_distrusted(
    wired: tuple[Switch, PEXReactor, TrustReactor, Clock],
) -> None:
    switch, _, trust, _ = wired
    persistent, unconditional = addr(5), addr(6)
    switch.add_persistent_peers([persistent])
    switch.add_unconditional_peer_ids([unconditional.id])
    for a in (persistent, unconditional):
        await misbehave(trust, FakePeer(a.id, a))
        assert trust.score(a.id) == 0  # still scored and shown
        assert trust.allows(a.id)
        assert not trust.is_distrusted(a.id)


async def test_dial_plan_prefers_higher_trust() -> None:
    book = AddrBook(strict=False, rng=random.Random(7))
    core = PexCore(book, PexConfig(), rng=random.Random(8))
    addrs = [addr(i) for i in range(10, 40)]
    for a in addrs:
        book.add_address(a, addr(3), NOW)
    scores = {a.id: 10 + i for i, a in enumerate(addrs)}  # all allowed, distinct scores

    class Ranked:
        def allows(self, node_id: NodeID) -> bool:
            return scores[node_id] != 20  # one distrusted

        def score(self, node_id: NodeID) -> int:
            return scores[node_id]

    core.trust = Ranked()
    picked = core.plan_dials(3, 0, lambda _: False)
    assert len(picked) == 3
    got = [scores[a.id] for a in picked]
    assert got == sorted(got, reverse=True)
    assert 20 not in got
    # Without trust, the plan is v0.38's: the first three distinct picks, in pick order.
    core.trust = None
    assert len(core.plan_dials(3, 0, lambda _: False)) == 3


async def test_misbehaviour_weighs_more_than_a_pong_timeout(
    wired: tuple[Switch, PEXReactor, TrustReactor, Clock],
) -> None:
    _, _, trust, _ = wired
    scores = {}
    for n, reason in (
        (11, RemoteProtocolError("pong timeout: no Pong within 45 s of our Ping")),
        (12, RemoteProtocolError("garbage")),
    ):
        peer = FakePeer(addr(n).id, addr(n))
        await trust.add_peer(cast(Peer, peer))
        for _ in range(9):  # nine messages delivered
            trust._on_delivered(Envelope(0x42, cast(Peer, peer), b"ok"))
        await trust.remove_peer(cast(Peer, peer), reason)
        scores[n] = trust.score(peer.id)
    # R = 9/10 after the pong timeout (one bad event), 9/19 after the protocol error (ten).
    assert scores[11] == 86  # 0.4*0.9 + 0.6 - 0.1
    assert scores[12] == 26  # 0.4*9/19 + 0.6 - (1 - 9/19)
    assert trust.allows(addr(11).id)
    assert not trust.allows(addr(12).id)


def test_trust_config_keys_round_trip(tmp_path: Path) -> None:
    cfg = Config(
        home=tmp_path,
        trust=TrustConfig(
            min_score=30, interval_length_s=30.0, ban_time_s=7200.0, misbehaviour_events=4
        ),
    )
    text = render_config_toml(cfg)
    assert "[trust]" in text
    assert 'interval_length = "30s"' in text
    write_config(cfg)
    assert load_config(tmp_path).trust == cfg.trust
    assert Config(home=tmp_path).trust_db_path == tmp_path / "data" / "trust_metric.sqlite"
    with pytest.raises(ConfigError, match=r"trust\.min_score"):
        TrustConfig(min_score=101)
    with pytest.raises(ConfigError, match="trust metric"):
        TrustReactor(TrustConfig(interval_length_s=60.0, tracking_window_s=30.0))


def test_init_writes_the_trust_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    text = (home / "config" / "config.toml").read_text()
    assert "[trust]" in text
    assert "min_score = 50" in text
    assert 'db_file = "data/trust_metric.sqlite"' in text


def test_trust_cli_show_export_import(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    missing = runner.invoke(main, ["trust", "show", "--home", str(home)])
    assert missing.exit_code == 1
    assert "no trust store" in missing.output
    store = TrustMetricStore(Config(home=home).trust_db_path)
    for _ in range(5):
        store.metric("a" * 40).good_events(3)
        store.metric("b" * 40).bad_events(3)
        for node_id in store:
            store.metric(node_id).next_time_interval()
    store.set_ban("b" * 40, 4_102_444_800.0)  # 2100-01-01
    store.close()
    shown = runner.invoke(main, ["trust", "show", "--home", str(home)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert shown.output.index("a" * 40) < shown.output.index("b" * 40)  # by score
    assert "2 peers" in shown.output
    assert f"until 2100-01-01 00:00 UTC: {'b' * 40}" in shown.output
    out = tmp_path / "go.json"
    exported = runner.invoke(main, ["trust", "export", "--home", str(home), "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    doc = json.loads(out.read_text())
    assert doc["a" * 40]["intervals"] == 5
    other = tmp_path / "other"
    imported = runner.invoke(main, ["trust", "import", "--home", str(other), str(out)])
    assert imported.exit_code == 0, imported.output
    assert "Imported 2 peers" in imported.output
    again = TrustMetricStore(Config(home=other).trust_db_path)
    assert json.loads(again.export_go_json()) == doc
    again.close(save=False)
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": {"intervals": -3}}')
    refused = runner.invoke(main, ["trust", "import", "--home", str(other), str(bad)])
    assert refused.exit_code == 1
    assert "intervals" in refused.output


async def test_a_corrupt_store_does_not_stop_the_node(tmp_path: Path) -> None:
    db = tmp_path / "data" / "trust_metric.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"\x00garbage" * 500)
    trust = TrustReactor(CFG, db_path=db)
    make_switch([("TRUST", trust)])
    await trust.start()
    try:
        assert trust.store_error is not None
        assert trust.store is not None
        assert len(trust.store) == 0
        peer = FakePeer(addr(1).id, addr(1))
        await trust.add_peer(cast(Peer, peer))
        await trust.remove_peer(cast(Peer, peer), None)
    finally:
        await trust.stop()
    assert [p.name for p in db.parent.iterdir() if ".corrupt-" in p.name]
    reopened = TrustMetricStore(db)
    assert addr(1).id in list(reopened)
    reopened.close(save=False)


def test_trust_keys_are_known_and_typos_are_named() -> None:
    doc = {"trust": {"min_score": 10, "min_scor": 3}, "p2p": {}}
    assert unknown_keys(doc) == ["trust.min_scor"]
