"""The one failure rule of the sans-IO objects (cometp2p.sansio.failure).

After any exception escapes an input method, the object is FAILED and raises that same
error on every later input call; an unexpected exception is wrapped in a
LocalProtocolError and still leaves the object FAILED, never OPEN.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import CometP2PError, LocalProtocolError, RemoteProtocolError
from cometp2p.sansio import receiver as receiver_module
from cometp2p.sansio.mconnection import (
    ChannelDescriptor,
    ConnectionTerminated,
    MConnection,
    MConnectionConfig,
    MConnectionState,
)
from cometp2p.sansio.scheduler import SendScheduler
from cometp2p.sansio.secret_connection import SecretHandshake, SecretHandshakeStage

CHANNELS = (ChannelDescriptor(0x30, priority=5, send_queue_capacity=10),)
CONFIG = MConnectionConfig(send_rate_bytes_per_s=0, recv_rate_bytes_per_s=0)


def _conn() -> MConnection:
    return MConnection(CHANNELS, CONFIG, 0.0)


def _terminations(conn: MConnection) -> list[ConnectionTerminated]:
    return [e for e in conn.drain_events() if isinstance(e, ConnectionTerminated)]


def test_mconnection_repeats_the_peer_error() -> None:
    conn = _conn()
    with pytest.raises(RemoteProtocolError) as first:
        conn.receive_data(b"\x03\x1a\x01\xff")  # a PacketMsg whose body is cut off
    assert conn.state is MConnectionState.FAILED
    (ended,) = _terminations(conn)
    assert ended.error is first.value
    assert ended.by_peer
    with pytest.raises(RemoteProtocolError) as again:
        conn.receive_data(b"\x02\x0a\x00")
    assert again.value is first.value
    with pytest.raises(RemoteProtocolError) as again:
        conn.handle_timer(1e9)
    assert again.value is first.value
    assert conn.data_to_send(1.0) == b""
    assert conn.get_timer() is None


def test_mconnection_unexpected_exception_in_receive_fails_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> tuple[int, int, bool, int, int]:
        raise ValueError("a bug")

    monkeypatch.setattr(receiver_module, "scan_packet", broken)
    conn = _conn()
    with pytest.raises(LocalProtocolError, match="internal error") as first:
        conn.receive_data(b"\x02\x0a\x00")
    assert isinstance(first.value.__cause__, ValueError)
    assert conn.state is MConnectionState.FAILED  # not OPEN
    (ended,) = _terminations(conn)
    assert ended.error is first.value
    assert not ended.by_peer
    with pytest.raises(LocalProtocolError) as again:
        conn.receive_data(b"\x02\x0a\x00")
    assert again.value is first.value
    assert not conn.can_send(0x30)


def test_mconnection_unexpected_exception_in_send_path_fails_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> int:
        raise RuntimeError("scheduler bug")

    conn = _conn()
    assert conn.send(0x30, b"hello")
    monkeypatch.setattr(SendScheduler, "_schedule", broken)
    with pytest.raises(LocalProtocolError, match="scheduler bug"):
        conn.data_to_send(0.0)
    assert conn.state is MConnectionState.FAILED
    assert len(_terminations(conn)) == 1
    with pytest.raises(LocalProtocolError, match="scheduler bug"):
        conn.handle_timer(0.0)


@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=6))
def test_mconnection_once_failed_always_the_same_error(pieces: list[bytes]) -> None:
    conn = _conn()
    failures: list[CometP2PError] = []
    for piece in [*pieces, b""]:
        try:
            conn.receive_data(piece)
        except CometP2PError as exc:
            failures.append(exc)
        else:
            assert not failures, "a FAILED connection accepted data"
    if failures:
        assert conn.state is MConnectionState.FAILED
        assert all(exc is failures[0] for exc in failures)
    assert conn.state is not MConnectionState.OPEN


def test_handshake_repeats_its_error() -> None:
    hs = SecretHandshake(NodeKey.generate())
    with pytest.raises(RemoteProtocolError) as first:
        hs.receive_data(b"\x00" * 35)  # not the ephemeral key prefix
    assert hs.stage is SecretHandshakeStage.FAILED
    with pytest.raises(RemoteProtocolError) as again:
        hs.receive_data(b"\x00")
    assert again.value is first.value
    assert hs.data_to_send() == b""


def test_handshake_unexpected_exception_fails_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: SecretHandshake) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(SecretHandshake, "_read_ephemeral_key", broken)
    hs = SecretHandshake(NodeKey.generate())
    with pytest.raises(LocalProtocolError, match="internal error") as first:
        hs.receive_data(b"\x22")
    assert isinstance(first.value.__cause__, KeyError)
    assert hs.stage is SecretHandshakeStage.FAILED
    with pytest.raises(LocalProtocolError) as again:
        hs.receive_data(b"\x0a")
    assert again.value is first.value
