"""Merlin transcript and Keccak-f[1600] (wire.md §3.8) against published known answers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.crypto.merlin import Transcript, keccak_f1600
from cometp2p.errors import LocalProtocolError

VECTORS = Path(__file__).parents[2] / "../shared/vectors"


def _known_answers() -> dict[str, Any]:
    path = VECTORS / "known-answers.json"
    if not path.exists():
        pytest.skip(f"known-answer vectors not found at {path.resolve()}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _sha3_256(message: bytes) -> bytes:
    """A minimal FIPS 202 sponge over our permutation, to check it against hashlib."""
    rate = 136
    padded = bytearray(message) + b"\x06" + bytes((-len(message) - 1) % rate)
    padded[-1] |= 0x80
    state = bytearray(200)
    for offset in range(0, len(padded), rate):
        block = padded[offset : offset + rate]
        mixed = int.from_bytes(state[:rate], "little") ^ int.from_bytes(block, "little")
        state[:rate] = mixed.to_bytes(rate, "little")
        keccak_f1600(state)
    return bytes(state[:32])


@pytest.mark.parametrize("size", [0, 1, 135, 136, 137, 500])
def test_keccak_permutation_matches_hashlib_sha3(size: int) -> None:
    message = bytes(range(256)) * 2
    assert _sha3_256(message[:size]) == hashlib.sha3_256(message[:size]).digest()


@given(st.binary(max_size=400))
def test_keccak_permutation_matches_hashlib_sha3_property(message: bytes) -> None:
    assert _sha3_256(message) == hashlib.sha3_256(message).digest()


def test_keccak_rejects_wrong_state_size() -> None:
    with pytest.raises(LocalProtocolError):
        keccak_f1600(bytearray(199))


def test_simple_transcript_known_answer() -> None:
    vector = _known_answers()["merlin_simple"]
    transcript = Transcript(b"test protocol")
    transcript.append_message(b"some label", b"some data")
    assert transcript.challenge_bytes(b"challenge", 32).hex() == vector["expected"]


def test_complex_transcript_known_answer() -> None:
    vector = _known_answers()["merlin_complex"]
    transcript = Transcript(b"test protocol")
    transcript.append_message(b"step1", b"some data")
    challenge = b""
    for _ in range(32):
        challenge = transcript.challenge_bytes(b"challenge", 32)
        transcript.append_message(b"bigdata", b"\x63" * 1024)
        transcript.append_message(b"challengedata", challenge)
    assert challenge.hex() == vector["expected"]


def _handshake_challenge(lo: bytes, hi: bytes, dh: bytes) -> bytes:
    transcript = Transcript(b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH")
    transcript.append_message(b"EPHEMERAL_LOWER_PUBLIC_KEY", lo)
    transcript.append_message(b"EPHEMERAL_UPPER_PUBLIC_KEY", hi)
    transcript.append_message(b"DH_SECRET", dh)
    return transcript.challenge_bytes(b"SECRET_CONNECTION_MAC", 32)


def test_handshake_transcript_matches_derived_vector() -> None:
    path = VECTORS / "secret-connection-handshake.derived.json"
    if not path.exists():
        pytest.skip(f"derived handshake vector not found at {path.resolve()}")
    vector = json.loads(path.read_text())
    challenge = _handshake_challenge(
        bytes.fromhex(vector["lo_eph_pub"]),
        bytes.fromhex(vector["hi_eph_pub"]),
        bytes.fromhex(vector["dh_secret"]),
    )
    assert challenge.hex() == vector["challenge"]


def test_every_input_changes_the_challenge() -> None:
    base = _handshake_challenge(bytes(32), bytes(range(32)), b"\x01" * 32)
    assert _handshake_challenge(b"\x00" * 31 + b"\x01", bytes(range(32)), b"\x01" * 32) != base
    assert _handshake_challenge(bytes(32), bytes(range(32)), b"\x02" * 32) != base
    assert _handshake_challenge(bytes(range(32)), bytes(32), b"\x01" * 32) != base


def test_long_challenge_spans_several_permutations() -> None:
    first = Transcript(b"app")
    second = Transcript(b"app")
    long_out = first.challenge_bytes(b"c", 1000)
    assert len(long_out) == 1000
    # The output length is bound into the transcript, so a shorter request differs.
    assert second.challenge_bytes(b"c", 32) != long_out[:32]
    assert len({long_out[i : i + 166] for i in range(0, 1000, 166)}) == 7


def test_message_boundaries_are_bound() -> None:
    joined = Transcript(b"app")
    joined.append_message(b"m", b"ab")
    split = Transcript(b"app")
    split.append_message(b"m", b"a")
    split.append_message(b"m", b"b")
    assert joined.challenge_bytes(b"c", 32) != split.challenge_bytes(b"c", 32)


@pytest.mark.parametrize("length", [-1, 2**32])
def test_challenge_length_out_of_range_is_local_error(length: int) -> None:
    with pytest.raises(LocalProtocolError):
        Transcript(b"app").challenge_bytes(b"c", length)


def test_zero_length_challenge_is_allowed() -> None:
    assert Transcript(b"app").challenge_bytes(b"c", 0) == b""
