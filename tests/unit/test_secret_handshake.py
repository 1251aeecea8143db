"""The sans-IO SecretConnection handshake (wire.md §3.2-§3.5) pumped in memory."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from cometp2p.crypto.frames import SEALED_FRAME_BYTES, FrameSealer
from cometp2p.crypto.kdf import derive_secrets
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    AuthenticationError,
    FrameError,
    HandshakeError,
    HandshakeStage,
    LocalProtocolError,
    RemoteProtocolError,
)
from cometp2p.sansio.secret_connection import (
    LOW_ORDER_POINTS,
    HandshakeComplete,
    SecretHandshake,
    SecretHandshakeStage,
    compute_challenge,
    decode_auth_sig_message,
    encode_auth_sig_message,
)
from cometp2p.wire.proto.tendermint.p2p import conn_pb2
from cometp2p.wire.varint import encode_delimited, encode_uvarint

VECTORS = Path(__file__).parents[2] / "../shared/vectors"
KEY_A = NodeKey.from_seed(bytes(range(32)))
KEY_B = NodeKey.from_seed(bytes(range(32, 64)))


def _derived() -> dict[str, Any]:
    path = VECTORS / "secret-connection-handshake.derived.json"
    if not path.exists():
        pytest.skip(f"derived handshake vector not found at {path.resolve()}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _stage(handshake: SecretHandshake) -> SecretHandshakeStage:
    return handshake.stage  # a call, so mypy does not narrow the property across steps


def pump(a: SecretHandshake, b: SecretHandshake) -> tuple[HandshakeComplete, HandshakeComplete]:
    """Move bytes between two handshakes until both are quiet; return both events."""
    events: dict[int, HandshakeComplete] = {}
    for _ in range(10):
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if to_b:
            b.receive_data(to_b)
        if to_a:
            a.receive_data(to_a)
        for index, side in enumerate((a, b)):
            event = side.next_event()
            if event is not None:
                events[index] = event
        if len(events) == 2 and not to_a and not to_b:
            return events[0], events[1]
    raise AssertionError(f"handshake did not complete: {a.stage}, {b.stage}")


# -- the derived full-handshake vector --------------------------------------------------


def test_derived_vector_every_field() -> None:
    vector = _derived()
    va, vb = vector["A"], vector["B"]
    key_a = NodeKey.from_seed(_h(va["ed25519_seed"]))
    key_b = NodeKey.from_seed(_h(vb["ed25519_seed"]))
    a = SecretHandshake(key_a, ephemeral_private_key=_h(va["x25519_eph_priv"]))
    b = SecretHandshake(key_b, ephemeral_private_key=_h(vb["x25519_eph_priv"]))
    assert a.ephemeral_public_key.hex() == va["x25519_eph_pub"]
    assert b.ephemeral_public_key.hex() == vb["x25519_eph_pub"]

    eph_a, eph_b = a.data_to_send(), b.data_to_send()
    assert eph_a.hex() == va["eph_msg_wire"]
    assert eph_b.hex() == vb["eph_msg_wire"]
    assert _stage(a) is SecretHandshakeStage.AWAIT_EPHEMERAL_KEY

    # lo/hi ordering and loc_is_least as the vector states them.
    lo, hi = sorted([a.ephemeral_public_key, b.ephemeral_public_key])
    assert (lo.hex(), hi.hex()) == (vector["lo_eph_pub"], vector["hi_eph_pub"])
    assert (a.ephemeral_public_key == lo) is va["loc_is_least"]
    assert (b.ephemeral_public_key == lo) is vb["loc_is_least"]

    # Building blocks the handshake composes, on the vector's values.
    dh_secret = _h(vector["dh_secret"])
    assert compute_challenge(lo, hi, dh_secret).hex() == vector["challenge"]
    for v in (va, vb):
        recv_key, send_key = derive_secrets(dh_secret, v["loc_is_least"])
        assert (recv_key.hex(), send_key.hex()) == (v["recv_key"], v["send_key"])
    assert key_a.sign(_h(vector["challenge"])).hex() == va["signature"]
    auth_a = encode_auth_sig_message(key_a.public_key, _h(va["signature"]))
    assert auth_a.hex() == va["auth_sig_msg_wire_plaintext"]
    auth_b = encode_auth_sig_message(key_b.public_key, _h(vb["signature"]))
    assert auth_b.hex() == vb["auth_sig_msg_wire_plaintext"]

    # The whole composition: each side's first frame is exactly the vector's.
    a.receive_data(eph_b)
    b.receive_data(eph_a)
    frame_a, frame_b = a.data_to_send(), b.data_to_send()
    assert frame_a.hex() == va["first_sealed_frame_zero_padded"]
    assert frame_b.hex() == vb["first_sealed_frame_zero_padded"]
    assert _stage(a) is SecretHandshakeStage.AWAIT_AUTH_SIG

    a.receive_data(frame_b)
    b.receive_data(frame_a)
    event_a, event_b = a.next_event(), b.next_event()
    assert event_a is not None
    assert event_b is not None
    assert a.next_event() is None
    assert _stage(a) is SecretHandshakeStage.COMPLETE
    assert event_a.challenge.hex() == event_b.challenge.hex() == vector["challenge"]
    assert event_a.remote_public_key.hex() == vb["ed25519_pub"]
    assert event_a.remote_node_id == vb["node_id"]
    assert event_b.remote_public_key.hex() == va["ed25519_pub"]
    assert event_b.remote_node_id == va["node_id"]
    assert event_a.leftover_plaintext == b""

    # The sealer continues the counter: A's NodeInfo frame is the vector's second frame.
    node_info = _h(vector["encoding_examples"]["node_info_example"]["delimited_wire"])
    second = event_a.sealer.seal(node_info)
    assert second.hex() == va["second_sealed_frame_nodeinfo_nonce1"]
    assert event_b.opener.receive_data(second) == node_info


def test_nodeinfo_arriving_with_the_auth_sig_is_kept() -> None:
    vector = _derived()
    node_info = _h(vector["encoding_examples"]["node_info_example"]["delimited_wire"])
    second = _h(vector["A"]["second_sealed_frame_nodeinfo_nonce1"])
    wire_from_a = (
        _h(vector["A"]["eph_msg_wire"]) + _h(vector["A"]["first_sealed_frame_zero_padded"]) + second
    )
    b = SecretHandshake(KEY_B, ephemeral_private_key=_h(vector["B"]["x25519_eph_priv"]))
    b.receive_data(wire_from_a)  # one TCP segment carrying everything
    event = b.next_event()
    assert event is not None
    assert event.leftover_plaintext == b""
    assert event.leftover_ciphertext == second
    assert event.opener.counter == 1
    assert event.opener.receive_data(event.leftover_ciphertext) == node_info


def test_partial_frame_after_auth_sig_is_leftover_ciphertext() -> None:
    vector = _derived()
    node_info = _h(vector["encoding_examples"]["node_info_example"]["delimited_wire"])
    second = _h(vector["A"]["second_sealed_frame_nodeinfo_nonce1"])
    b = SecretHandshake(KEY_B, ephemeral_private_key=_h(vector["B"]["x25519_eph_priv"]))
    b.receive_data(
        _h(vector["A"]["eph_msg_wire"])
        + _h(vector["A"]["first_sealed_frame_zero_padded"])
        + second[:500]
    )
    event = b.next_event()
    assert event is not None
    assert event.leftover_plaintext == b""
    assert event.leftover_ciphertext == second[:500]
    assert event.opener.buffered_bytes == 0
    assert event.opener.receive_data(event.leftover_ciphertext) == b""
    assert event.opener.receive_data(second[500:]) == node_info


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(min_value=1, max_value=35 + 3 * 1044 - 1))
def test_bad_frame_after_auth_sig_fails_the_connection_not_the_handshake(cut: int) -> None:
    # Whether the tampered frame arrives with the AuthSig or later, the handshake
    # completes and the frame fails when it is opened.
    vector = _derived()
    tampered = bytearray(_h(vector["A"]["second_sealed_frame_nodeinfo_nonce1"]))
    tampered[7] ^= 0x04
    stream = (
        _h(vector["A"]["eph_msg_wire"])
        + _h(vector["A"]["first_sealed_frame_zero_padded"])
        + bytes(tampered)
        + bytes(1044)
    )
    b = SecretHandshake(KEY_B, ephemeral_private_key=_h(vector["B"]["x25519_eph_priv"]))
    b.receive_data(stream[:cut])
    event = b.next_event()
    if event is None:
        b.receive_data(stream[cut:])
        event = b.next_event()
        rest = b""
    else:
        rest = stream[cut:]
    assert event is not None
    with pytest.raises(FrameError, match="frame 1"):
        event.opener.receive_data(event.leftover_ciphertext + rest)


def test_auth_sig_and_node_info_in_one_frame() -> None:
    # A peer may write AuthSig and NodeInfo together; the remainder of that frame is
    # leftover plaintext.
    peer_eph = X25519PrivateKey.from_private_bytes(b"\x42" * 32)
    victim = SecretHandshake(KEY_A)
    wire, challenge, sealer = _peer_side(victim, peer_eph)
    auth = encode_auth_sig_message(KEY_B.public_key, KEY_B.sign(challenge))
    victim.receive_data(wire + sealer.seal(auth + b"\x05hello"))
    event = victim.next_event()
    assert event is not None
    assert event.leftover_plaintext == b"\x05hello"
    assert event.remote_node_id == KEY_B.node_id


# -- two honest ends --------------------------------------------------------------------


def test_two_ends_pumped_in_memory_then_exchange_data() -> None:
    a, b = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    event_a, event_b = pump(a, b)
    assert event_a.remote_node_id == KEY_B.node_id
    assert event_b.remote_node_id == KEY_A.node_id
    assert event_a.challenge == event_b.challenge
    payload = bytes(range(256)) * 20
    assert event_b.opener.receive_data(event_a.sealer.seal(payload)) == payload
    assert event_a.opener.receive_data(event_b.sealer.seal(b"back")) == b"back"


def test_fresh_ephemeral_keys_give_fresh_challenges() -> None:
    first, _ = pump(SecretHandshake(KEY_A), SecretHandshake(KEY_B))
    second, _ = pump(SecretHandshake(KEY_A), SecretHandshake(KEY_B))
    assert first.challenge != second.challenge


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1079), max_size=8))
def test_any_split_of_the_peer_stream_gives_the_same_result(cuts: list[int]) -> None:
    vector = _derived()
    stream = _h(vector["B"]["eph_msg_wire"]) + _h(vector["B"]["first_sealed_frame_zero_padded"])
    a = SecretHandshake(KEY_A, ephemeral_private_key=_h(vector["A"]["x25519_eph_priv"]))
    points = sorted({0, len(stream), *cuts})
    for start, end in itertools.pairwise(points):
        assert a.next_event() is None
        a.receive_data(stream[start:end])
    event = a.next_event()
    assert event is not None
    assert event.remote_node_id == vector["B"]["node_id"]
    assert event.challenge.hex() == vector["challenge"]


# -- an adversarial peer built from parts -----------------------------------------------


def _peer_side(
    victim: SecretHandshake, peer_eph: X25519PrivateKey
) -> tuple[bytes, bytes, FrameSealer]:
    """Play the peer by hand: return (its eph message, the challenge, its frame sealer)."""
    victim_eph = victim.data_to_send()[3:35]
    peer_pub = peer_eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    dh_secret = peer_eph.exchange(X25519PublicKey.from_public_bytes(victim_eph))
    lo, hi = sorted([peer_pub, victim_eph])
    _, send_key = derive_secrets(dh_secret, peer_pub == lo)
    return b"\x22\x0a\x20" + peer_pub, compute_challenge(lo, hi, dh_secret), FrameSealer(send_key)


def _auth_body(key_field: str | None, key: bytes, sig: bytes) -> bytes:
    message = conn_pb2.AuthSigMessage()
    if key_field is None:
        message.pub_key.SetInParent()
    else:
        setattr(message.pub_key, key_field, key)
    message.sig = sig
    return message.SerializeToString()


BodyMaker = Callable[[bytes], bytes]
"""Given the challenge, build the plaintext the forged peer seals as its AuthSig."""

_FORGERIES: dict[str, tuple[BodyMaker, type[HandshakeError]]] = {
    "signature-over-wrong-message": (
        lambda c: encode_delimited(_auth_body("ed25519", KEY_B.public_key, KEY_B.sign(c[::-1]))),
        AuthenticationError,
    ),
    "signature-by-another-key": (
        lambda c: encode_delimited(_auth_body("ed25519", KEY_B.public_key, KEY_A.sign(c))),
        AuthenticationError,
    ),
    "short-signature": (
        lambda c: encode_delimited(_auth_body("ed25519", KEY_B.public_key, KEY_B.sign(c)[:63])),
        AuthenticationError,
    ),
    "no-signature": (
        lambda c: encode_delimited(_auth_body("ed25519", KEY_B.public_key, b"")),
        AuthenticationError,
    ),
    "secp256k1-key": (
        lambda c: encode_delimited(_auth_body("secp256k1", b"\x02" * 33, KEY_B.sign(c))),
        AuthenticationError,
    ),
    "bls-key": (
        lambda c: encode_delimited(_auth_body("bls12381", b"\x01" * 48, KEY_B.sign(c))),
        AuthenticationError,
    ),
    "empty-public-key": (
        lambda c: encode_delimited(_auth_body(None, b"", KEY_B.sign(c))),
        AuthenticationError,
    ),
    "short-ed25519-key": (
        lambda c: encode_delimited(_auth_body("ed25519", KEY_B.public_key[:31], KEY_B.sign(c))),
        AuthenticationError,
    ),
    "not-protobuf": (lambda c: encode_delimited(b"\xff\xff\xff"), HandshakeError),
    "oversized-length": (lambda c: encode_uvarint(1024 * 1024 + 1), HandshakeError),
}


@pytest.mark.parametrize("name", sorted(_FORGERIES))
def test_forged_auth_sig_is_rejected(name: str) -> None:
    make_body, error = _FORGERIES[name]
    victim = SecretHandshake(KEY_A)
    wire, challenge, sealer = _peer_side(victim, X25519PrivateKey.generate())
    victim.receive_data(wire)
    assert victim.data_to_send()  # the victim's own AuthSig went out
    with pytest.raises(error) as info:
        victim.receive_data(sealer.seal(make_body(challenge)))
    assert info.value.stage is HandshakeStage.AUTH_SIG
    if error is HandshakeError:
        assert not isinstance(info.value, AuthenticationError)
    assert victim.stage is SecretHandshakeStage.FAILED
    assert victim.next_event() is None
    with pytest.raises(error) as again:  # the failure rule: the same error, every time
        victim.receive_data(b"\x00")
    assert again.value is info.value


def test_a_valid_forged_peer_is_accepted() -> None:
    # The control for the forgeries above: the same helper with an honest body passes.
    victim = SecretHandshake(KEY_A)
    wire, challenge, sealer = _peer_side(victim, X25519PrivateKey.generate())
    auth = encode_auth_sig_message(KEY_B.public_key, KEY_B.sign(challenge))
    victim.receive_data(wire + sealer.seal(auth))
    event = victim.next_event()
    assert event is not None
    assert event.remote_public_key == KEY_B.public_key


@pytest.mark.parametrize("position", [0, 4, 100, 1043])
def test_bit_flip_in_auth_sig_frame_is_handshake_error(position: int) -> None:
    a, b = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    b.receive_data(a.data_to_send())
    from_b = b.data_to_send()
    a.receive_data(from_b[:35])
    frame = bytearray(from_b[35:])
    assert len(frame) == SEALED_FRAME_BYTES
    frame[position] ^= 0x80
    with pytest.raises(HandshakeError) as info:
        a.receive_data(bytes(frame))
    assert info.value.stage is HandshakeStage.AUTH_SIG
    assert isinstance(info.value.__cause__, FrameError)


def test_replayed_auth_sig_frame_from_another_session_is_rejected() -> None:
    a1, b1 = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    b1.receive_data(a1.data_to_send())
    old_frame = b1.data_to_send()[35:]
    a2, b2 = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    b2.receive_data(a2.data_to_send())
    a2.receive_data(b2.data_to_send()[:35])
    with pytest.raises(HandshakeError):
        a2.receive_data(old_frame)


@pytest.mark.parametrize("point", sorted(LOW_ORDER_POINTS), ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_key_is_key_agreement_error(point: bytes) -> None:
    victim = SecretHandshake(KEY_A)
    with pytest.raises(HandshakeError) as info:
        victim.receive_data(b"\x22\x0a\x20" + point)
    assert info.value.stage is HandshakeStage.KEY_AGREEMENT
    assert victim.data_to_send() == b""  # no AuthSig is sent after a failure


def test_unlisted_point_giving_zero_dh_is_key_agreement_error() -> None:
    # X25519 ignores the top bit, so 0 with bit 255 set is not in the list but still
    # yields an all-zero shared secret.
    point = bytes(31) + b"\x80"
    assert point not in LOW_ORDER_POINTS
    with pytest.raises(HandshakeError) as info:
        SecretHandshake(KEY_A).receive_data(b"\x22\x0a\x20" + point)
    assert info.value.stage is HandshakeStage.KEY_AGREEMENT
    assert "all-zero" in str(info.value)


def test_reflected_ephemeral_key_is_key_agreement_error() -> None:
    victim = SecretHandshake(KEY_A)
    with pytest.raises(HandshakeError) as info:
        victim.receive_data(victim.data_to_send())
    assert info.value.stage is HandshakeStage.KEY_AGREEMENT


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\x23", id="wrong-length-byte"),
        pytest.param(b"\x22\x0a\x1f", id="31-byte-value"),
        pytest.param(b"\x22\x12\x20", id="wrong-field"),
        pytest.param(b"\x24\x0a\x22" + bytes(34), id="34-byte-value"),
        pytest.param(b"\x80\x80\x80\x01", id="over-1-MiB"),
    ],
)
def test_malformed_ephemeral_key_message_fails_at_once(wire: bytes) -> None:
    victim = SecretHandshake(KEY_A)
    with pytest.raises(HandshakeError) as info:
        victim.receive_data(wire)
    assert info.value.stage is HandshakeStage.EPHEMERAL_KEY
    assert "22 0a 20" in str(info.value)


def test_oversized_ephemeral_length_names_the_limit() -> None:
    with pytest.raises(HandshakeError, match="1048576"):
        SecretHandshake(KEY_A).receive_data(encode_uvarint(2 * 1024 * 1024))


def test_eof_during_ephemeral_key() -> None:
    victim = SecretHandshake(KEY_A)
    victim.receive_data(b"\x22\x0a\x20\x01")
    with pytest.raises(HandshakeError, match="4 of the 35") as info:
        victim.receive_data(b"")
    assert info.value.stage is HandshakeStage.EPHEMERAL_KEY


def test_eof_during_auth_sig() -> None:
    a, b = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send()[:100])
    with pytest.raises(HandshakeError) as info:
        a.receive_data(b"")
    assert info.value.stage is HandshakeStage.AUTH_SIG
    assert "65 ciphertext" in str(info.value)


def test_data_after_completion_is_local_error() -> None:
    a, b = SecretHandshake(KEY_A), SecretHandshake(KEY_B)
    pump(a, b)
    with pytest.raises(LocalProtocolError):
        a.receive_data(b"more")


def test_ephemeral_private_key_must_be_32_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        SecretHandshake(KEY_A, ephemeral_private_key=bytes(31))


def test_encode_auth_sig_rejects_wrong_lengths() -> None:
    with pytest.raises(LocalProtocolError):
        encode_auth_sig_message(bytes(31), bytes(64))
    with pytest.raises(LocalProtocolError):
        encode_auth_sig_message(bytes(32), bytes(65))


# -- hostile bytes raise only RemoteProtocolError ---------------------------------------


def _feed_until_error(victim: SecretHandshake, pieces: list[bytes]) -> None:
    try:
        for piece in [*pieces, b""]:
            victim.receive_data(piece)
    except RemoteProtocolError:
        assert victim.stage is SecretHandshakeStage.FAILED
        return
    raise AssertionError("a handshake fed only random bytes and EOF must fail")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=1200), max_size=4))
def test_random_bytes_raise_only_remote_protocol_errors(pieces: list[bytes]) -> None:
    _feed_until_error(SecretHandshake(KEY_A), pieces)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.lists(st.binary(max_size=1200), max_size=4))
def test_valid_prefix_then_random_bytes_raise_only_remote_protocol_errors(
    key: bytes, pieces: list[bytes]
) -> None:
    _feed_until_error(SecretHandshake(KEY_A), [b"\x22\x0a\x20" + key, *pieces])


@given(st.binary(max_size=300))
def test_random_auth_sig_bodies_raise_only_remote_protocol_errors(body: bytes) -> None:
    with contextlib.suppress(HandshakeError):  # anything else fails the test
        public_key, _ = decode_auth_sig_message(body)
        assert len(public_key) == 32
