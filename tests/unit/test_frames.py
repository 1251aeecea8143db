"""SecretConnection frame sealing and opening (wire.md §3.6)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.crypto.frames import (
    FRAME_PAYLOAD_MAX_BYTES,
    MAX_FRAME_COUNTER,
    SEALED_FRAME_BYTES,
    FrameOpener,
    FrameSealer,
    frame_nonce,
)
from cometp2p.errors import FrameError, LocalProtocolError

VECTORS = Path(__file__).parents[2] / "../shared/vectors"
KEY = bytes(range(32))


def _vector(name: str) -> dict[str, Any]:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"vector file not found at {path.resolve()}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _raw_frame(key: bytes, counter: int, plaintext: bytes) -> bytes:
    """Seal an arbitrary 1028-byte plaintext, bypassing FrameSealer's rules."""
    return ChaCha20Poly1305(key).encrypt(frame_nonce(counter), plaintext, None)


def test_nonce_increment_vectors_from_tendermint_rs() -> None:
    vector = _vector("known-answers.json")["nonce_increment"]
    for name, expected in vector.items():
        if name.startswith("after_"):
            assert frame_nonce(int(name.removeprefix("after_"))).hex() == expected


def test_nonce_examples_from_derived_vector() -> None:
    examples = _vector("secret-connection-handshake.derived.json")["nonce_examples"]
    assert len(examples) == 5
    for counter, expected in examples.items():
        assert frame_nonce(int(counter)).hex() == expected


@pytest.mark.parametrize("counter", [-1, 2**64])
def test_nonce_counter_out_of_range(counter: int) -> None:
    with pytest.raises(LocalProtocolError):
        frame_nonce(counter)


def test_first_frames_match_derived_vector() -> None:
    vector = _vector("secret-connection-handshake.derived.json")
    node_info = bytes.fromhex(vector["encoding_examples"]["node_info_example"]["delimited_wire"])
    for side in ("A", "B"):
        sealer = FrameSealer(bytes.fromhex(vector[side]["send_key"]))
        auth_sig = bytes.fromhex(vector[side]["auth_sig_msg_wire_plaintext"])
        assert len(auth_sig) == 103
        assert sealer.seal(auth_sig).hex() == vector[side]["first_sealed_frame_zero_padded"]
        if side == "A":
            second = sealer.seal(node_info)
            assert second.hex() == vector["A"]["second_sealed_frame_nodeinfo_nonce1"]
    # And B opens A's two frames back to the plaintext stream.
    opener = FrameOpener(bytes.fromhex(vector["B"]["recv_key"]))
    wire = bytes.fromhex(vector["A"]["first_sealed_frame_zero_padded"]) + bytes.fromhex(
        vector["A"]["second_sealed_frame_nodeinfo_nonce1"]
    )
    expected = bytes.fromhex(vector["A"]["auth_sig_msg_wire_plaintext"]) + node_info
    assert opener.receive_data(wire) == expected
    assert opener.counter == 2


@pytest.mark.parametrize(
    ("size", "frames"), [(0, 0), (1, 1), (1023, 1), (1024, 1), (1025, 2), (4096, 4), (5000, 5)]
)
def test_sealed_size_is_1044_per_started_kilobyte(size: int, frames: int) -> None:
    sealer = FrameSealer(KEY)
    assert len(sealer.seal(bytes(size))) == frames * SEALED_FRAME_BYTES
    assert sealer.counter == frames


def test_frame_plaintext_layout() -> None:
    data = bytes(range(256)) * 5  # 1280 bytes: one full frame and a 256-byte tail
    sealed = FrameSealer(KEY).seal(data)
    aead = ChaCha20Poly1305(KEY)
    first = aead.decrypt(frame_nonce(0), sealed[:SEALED_FRAME_BYTES], None)
    second = aead.decrypt(frame_nonce(1), sealed[SEALED_FRAME_BYTES:], None)
    assert first == b"\x00\x04\x00\x00" + data[:1024]
    assert second == b"\x00\x01\x00\x00" + data[1024:] + bytes(768)


def test_seal_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(200)) * 11
    expected = FrameSealer(KEY).seal(data)
    assert FrameSealer(KEY).seal(bytearray(data)) == expected
    assert FrameSealer(KEY).seal(memoryview(data)) == expected


def test_opener_buffers_partial_frames() -> None:
    wire = FrameSealer(KEY).seal(b"hello")
    opener = FrameOpener(KEY)
    assert opener.receive_data(wire[:1000]) == b""
    assert opener.buffered_bytes == 1000
    assert opener.receive_data(wire[1000:]) == b"hello"
    assert opener.buffered_bytes == 0


def test_opener_skips_empty_frames() -> None:
    empty = _raw_frame(KEY, 0, bytes(1028))
    sealer = FrameSealer(KEY, counter=1)
    opener = FrameOpener(KEY)
    assert opener.receive_data(empty + sealer.seal(b"after")) == b"after"
    assert opener.counter == 2


def test_opener_ignores_padding_content() -> None:
    frame = _raw_frame(KEY, 0, b"\x03\x00\x00\x00abc" + b"\xee" * 1021)
    assert FrameOpener(KEY).receive_data(frame) == b"abc"


@pytest.mark.parametrize("length", [1025, 2**32 - 1])
def test_oversized_length_field_is_frame_error(length: int) -> None:
    frame = _raw_frame(KEY, 0, length.to_bytes(4, "little") + bytes(1024))
    opener = FrameOpener(KEY)
    with pytest.raises(FrameError) as info:
        opener.receive_data(frame)
    assert "1024" in str(info.value)
    with pytest.raises(LocalProtocolError):
        opener.receive_data(b"x")


@pytest.mark.parametrize("position", [0, 3, 500, 1027, 1028, 1043])
def test_bit_flip_is_frame_error(position: int) -> None:
    wire = bytearray(FrameSealer(KEY).seal(b"payload"))
    wire[position] ^= 0x01
    with pytest.raises(FrameError):
        FrameOpener(KEY).receive_data(bytes(wire))


def test_replayed_frame_is_frame_error() -> None:
    sealer = FrameSealer(KEY)
    first = sealer.seal(b"one")
    opener = FrameOpener(KEY)
    assert opener.receive_data(first) == b"one"
    with pytest.raises(FrameError, match="frame 1"):
        opener.receive_data(first)


def test_reordered_frames_are_frame_error() -> None:
    sealer = FrameSealer(KEY)
    first, second = sealer.seal(b"one"), sealer.seal(b"two")
    with pytest.raises(FrameError):
        FrameOpener(KEY).receive_data(second + first)


def test_wrong_key_is_frame_error() -> None:
    wire = FrameSealer(KEY).seal(b"secret")
    with pytest.raises(FrameError):
        FrameOpener(bytes(32)).receive_data(wire)


def test_truncated_frame_is_frame_error_at_eof() -> None:
    wire = FrameSealer(KEY).seal(b"x" * 1500)
    opener = FrameOpener(KEY)
    assert opener.receive_data(wire[:-1]) == b"x" * 1024
    with pytest.raises(FrameError, match="1043 of 1044"):
        opener.receive_data(b"")


def test_clean_eof_then_use_is_local_error() -> None:
    opener = FrameOpener(KEY)
    assert opener.receive_data(FrameSealer(KEY).seal(b"bye")) == b"bye"
    assert opener.receive_data(b"") == b""
    with pytest.raises(LocalProtocolError):
        opener.receive_data(b"more")


def test_sealer_counter_overflow_is_local_error_and_atomic() -> None:
    sealer = FrameSealer(KEY, counter=MAX_FRAME_COUNTER - 1)
    with pytest.raises(LocalProtocolError):
        sealer.seal(bytes(3 * FRAME_PAYLOAD_MAX_BYTES))
    assert sealer.counter == MAX_FRAME_COUNTER - 1
    sealed = sealer.seal(bytes(2 * FRAME_PAYLOAD_MAX_BYTES))
    assert len(sealed) == 2 * SEALED_FRAME_BYTES
    with pytest.raises(LocalProtocolError):
        sealer.seal(b"x")
    assert sealer.seal(b"") == b""


def test_opener_counter_overflow_is_frame_error() -> None:
    last = FrameSealer(KEY, counter=MAX_FRAME_COUNTER).seal(b"last")
    opener = FrameOpener(KEY, counter=MAX_FRAME_COUNTER)
    assert opener.receive_data(last) == b"last"
    beyond = _raw_frame(KEY, 2**64 - 1, b"\x01\x00\x00\x00z" + bytes(1023))
    with pytest.raises(FrameError, match="counter"):
        opener.receive_data(beyond)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_wrong_key_length_is_local_error(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        FrameSealer(bytes(size))
    with pytest.raises(LocalProtocolError):
        FrameOpener(bytes(size))


@given(
    writes=st.lists(st.binary(max_size=3000), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=12),
)
def test_round_trip_under_any_split(writes: list[bytes], cuts: list[int]) -> None:
    sealer = FrameSealer(KEY)
    wire = b"".join(sealer.seal(w) for w in writes)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    opener = FrameOpener(KEY)
    received = b"".join(opener.receive_data(wire[a:b]) for a, b in itertools.pairwise(points))
    assert received == b"".join(writes)
    assert opener.buffered_bytes == 0
    assert opener.counter == sealer.counter
    assert opener.receive_data(b"") == b""


@given(st.lists(st.binary(min_size=1, max_size=2500), min_size=1, max_size=4))
def test_random_ciphertext_raises_only_frame_error(pieces: list[bytes]) -> None:
    # Forged frames never authenticate and a short tail is a truncated frame at EOF, so
    # any non-empty random stream must end in FrameError and nothing else.
    opener = FrameOpener(KEY)

    def feed_all() -> None:
        for piece in pieces:
            assert opener.receive_data(piece) == b""
        opener.receive_data(b"")

    with pytest.raises(FrameError):
        feed_all()
