"""HKDF split of the DH secret (wire.md §3.2 step 7) against CometBFT's golden file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cometp2p.crypto.kdf import derive_secrets, hkdf_okm
from cometp2p.errors import LocalProtocolError

VECTORS = Path(__file__).parents[2] / "../shared/vectors"
GOLDEN = VECTORS / "cometbft-v0.38.25_p2p-conn_TestDeriveSecretsAndChallengeGolden.golden"


def _golden_lines() -> list[str]:
    if not GOLDEN.exists():
        return []
    return GOLDEN.read_text().splitlines()


@pytest.mark.skipif(not GOLDEN.exists(), reason=f"golden HKDF file not found at {GOLDEN}")
def test_golden_file_has_32_lines() -> None:
    assert len(_golden_lines()) == 32


@pytest.mark.skipif(not GOLDEN.exists(), reason=f"golden HKDF file not found at {GOLDEN}")
@pytest.mark.parametrize("index", range(32))
def test_golden_line(index: int) -> None:
    dh_hex, loc_is_least, recv_hex, send_hex, legacy_challenge_hex = _golden_lines()[index].split(
        ","
    )
    assert loc_is_least in ("true", "false")
    dh_secret = bytes.fromhex(dh_hex)
    recv_key, send_key = derive_secrets(dh_secret, loc_is_least == "true")
    assert recv_key.hex() == recv_hex
    assert send_key.hex() == send_hex
    assert hkdf_okm(dh_secret, 96)[64:96].hex() == legacy_challenge_hex


def test_derived_vector_split() -> None:
    path = VECTORS / "secret-connection-handshake.derived.json"
    if not path.exists():
        pytest.skip(f"derived handshake vector not found at {path.resolve()}")
    vector = json.loads(path.read_text())
    dh_secret = bytes.fromhex(vector["dh_secret"])
    assert hkdf_okm(dh_secret).hex() == vector["hkdf_okm_64"]
    for side in ("A", "B"):
        recv_key, send_key = derive_secrets(dh_secret, vector[side]["loc_is_least"])
        assert recv_key.hex() == vector[side]["recv_key"]
        assert send_key.hex() == vector[side]["send_key"]


def test_the_two_sides_get_mirrored_keys() -> None:
    dh_secret = bytes(range(32))
    low_recv, low_send = derive_secrets(dh_secret, True)
    high_recv, high_send = derive_secrets(dh_secret, False)
    assert (low_recv, low_send) == (high_send, high_recv)
    assert low_recv != low_send


@pytest.mark.parametrize("size", [0, 31, 33])
def test_wrong_dh_length_is_local_error(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        derive_secrets(bytes(size), True)


@pytest.mark.parametrize("length", [0, 8161])
def test_okm_length_out_of_range_is_local_error(length: int) -> None:
    with pytest.raises(LocalProtocolError):
        hkdf_okm(bytes(32), length)
