"""Merlin transcript and Keccak-f[1600] (wire.md §3.8) against published known answers.

Every test runs twice, once per permutation backend: the pure-Python one and the optional C
extension (cometp2p.crypto._keccak). The native run skips only where the extension was not
built, and never under CI=true, where ``pip install -e`` has a compiler to build it with.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.crypto import merlin
from cometp2p.crypto.merlin import Transcript, keccak_f1600
from cometp2p.errors import LocalProtocolError

VECTORS = Path(__file__).parents[2] / "../shared/vectors"


def _native_permute() -> Any:
    try:
        from cometp2p.crypto import _keccak
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        return None
    return _keccak.permute


@pytest.fixture(autouse=True, params=["python", "native"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with ``merlin``'s permutation set to one backend."""
    name: str = request.param
    if name == "python":
        monkeypatch.setattr(merlin, "_permute_in_place", merlin._python_permute_in_place)
    else:
        native = _native_permute()
        if native is None:
            pytest.skip("the C extension cometp2p.crypto._keccak is not built (no compiler?)")
        monkeypatch.setattr(merlin, "_permute_in_place", native)
    return name


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


@pytest.mark.parametrize("size", [0, 199, 201])
def test_keccak_rejects_wrong_state_size(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        keccak_f1600(bytearray(size))


@given(st.binary(min_size=200, max_size=200))
def test_selected_permutation_matches_pure_python(state: bytes) -> None:
    ours, reference = bytearray(state), bytearray(state)
    keccak_f1600(ours)
    merlin.keccak_f1600_python(reference)
    assert ours == reference


@pytest.mark.parametrize("backend", ["native"], indirect=True)  # its own argument checks
def test_native_permutation_rejects_bad_buffers(backend: str) -> None:
    native = _native_permute()
    assert native is not None  # the backend fixture skipped already if it is not built
    with pytest.raises(ValueError, match="200 bytes"):
        native(bytearray(199))
    with pytest.raises((TypeError, BufferError)):
        native(bytes(200))  # read-only


def test_initial_strobe_state_is_the_same_on_this_backend() -> None:
    assert merlin._merlin_initial_state() == (
        merlin._MERLIN_INITIAL_STATE,
        merlin._MERLIN_INITIAL_POS,
        merlin._MERLIN_INITIAL_POS_BEGIN,
        merlin._MERLIN_INITIAL_FLAGS,
    )


def test_backend_is_native_under_ci() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("the native backend is required only under CI=true")
    assert merlin.PERMUTATION_BACKEND == "native"


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


@given(
    st.lists(
        st.tuples(st.binary(max_size=200), st.binary(max_size=400), st.integers(0, 70)),
        max_size=8,
    )
)
def test_fused_append_matches_the_stepwise_strobe_operations(
    steps: list[tuple[bytes, bytes, int]],
) -> None:
    fused, stepwise = Transcript(b"app"), Transcript(b"app")
    for label, message, challenge in steps:
        fused.append_message(label, message)
        stepwise._append_message_stepwise(label, message)
        assert fused._state == stepwise._state
        assert (fused._pos, fused._pos_begin) == (stepwise._pos, stepwise._pos_begin)
        if challenge:
            assert fused.challenge_bytes(b"c", challenge) == stepwise.challenge_bytes(
                b"c", challenge
            )
