"""Node keys, node IDs and node_key.json (wire.md §6.1, §10.1)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cometp2p.crypto.keys import (
    NodeKey,
    load_node_key,
    load_or_generate_node_key,
    node_id_from_public_key,
    node_key_json,
    save_node_key,
    verify_signature,
)
from cometp2p.errors import KeyFileError, LocalProtocolError

VECTORS = Path(__file__).parents[2] / "../shared/vectors"

SEED_A = bytes(range(32))
EXAMPLE_JSON = (
    b'{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXG'
    b'BkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA=="}}'
)
EXAMPLE_NODE_ID = "56475aa75463474c0285df5dbf2bcab73da65135"


def _vector(name: str) -> dict[str, Any]:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"vector file not found at {path.resolve()}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_node_id_known_answer_from_tendermint_rs() -> None:
    vector = _vector("known-answers.json")["node_id_from_pubkey"]
    public_key = bytes.fromhex(vector["ed25519_pub_hex"])
    assert node_id_from_public_key(public_key) == vector["expected_node_id"]


def test_node_id_rejects_wrong_key_length() -> None:
    with pytest.raises(LocalProtocolError):
        node_id_from_public_key(bytes(31))


def test_spec_example_seed_gives_spec_node_id_and_json() -> None:
    key = NodeKey.from_seed(SEED_A)
    assert key.node_id == EXAMPLE_NODE_ID
    assert key.seed == SEED_A
    assert len(key.public_key) == 32
    assert node_key_json(key) == EXAMPLE_JSON


def test_derived_vector_public_keys_and_ids() -> None:
    vector = _vector("secret-connection-handshake.derived.json")
    for side in ("A", "B"):
        key = NodeKey.from_seed(bytes.fromhex(vector[side]["ed25519_seed"]))
        assert key.public_key.hex() == vector[side]["ed25519_pub"]
        assert key.node_id == vector[side]["node_id"]
        signature = key.sign(bytes.fromhex(vector["challenge"]))
        assert signature.hex() == vector[side]["signature"]


def test_from_seed_rejects_wrong_length() -> None:
    with pytest.raises(LocalProtocolError):
        NodeKey.from_seed(bytes(33))


def test_generate_gives_distinct_keys() -> None:
    assert NodeKey.generate().public_key != NodeKey.generate().public_key


def test_repr_hides_the_seed() -> None:
    key = NodeKey.from_seed(SEED_A)
    assert SEED_A.hex() not in repr(key)
    assert repr(SEED_A) not in repr(key)
    assert key.node_id in repr(key)


def test_keys_compare_by_value() -> None:
    assert NodeKey.from_seed(SEED_A) == NodeKey.from_seed(SEED_A)
    assert NodeKey.from_seed(SEED_A) != NodeKey.from_seed(bytes(32))


def test_sign_and_verify() -> None:
    key = NodeKey.from_seed(SEED_A)
    signature = key.sign(b"challenge")
    assert len(signature) == 64
    assert verify_signature(key.public_key, b"challenge", signature)
    assert not verify_signature(key.public_key, b"challengf", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(key.public_key, b"challenge", flipped)
    assert not verify_signature(key.public_key, b"challenge", signature[:63])
    assert not verify_signature(key.public_key[:31], b"challenge", signature)
    other = NodeKey.from_seed(bytes(32))
    assert not verify_signature(other.public_key, b"challenge", signature)


def test_save_writes_exact_bytes_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "config" / "node_key.json"
    save_node_key(NodeKey.from_seed(SEED_A), path)
    assert path.read_bytes() == EXAMPLE_JSON
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["node_key.json"]


def test_load_spec_example(tmp_path: Path) -> None:
    path = tmp_path / "node_key.json"
    path.write_bytes(EXAMPLE_JSON)
    key = load_node_key(path)
    assert key.node_id == EXAMPLE_NODE_ID
    assert key == NodeKey.from_seed(SEED_A)


def test_load_accepts_whitespace_and_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "node_key.json"
    path.write_text(json.dumps(json.loads(EXAMPLE_JSON), indent=2) + "\n")
    assert load_node_key(path).node_id == EXAMPLE_NODE_ID


def test_load_or_generate_creates_then_reloads(tmp_path: Path) -> None:
    path = tmp_path / "node_key.json"
    first = load_or_generate_node_key(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_generate_node_key(path)
    assert first == second


def test_load_or_generate_does_not_overwrite_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "node_key.json"
    path.write_bytes(b"garbage")
    with pytest.raises(KeyFileError):
        load_or_generate_node_key(path)
    assert path.read_bytes() == b"garbage"


def _doc(value: object, key_type: object = "tendermint/PrivKeyEd25519") -> bytes:
    return json.dumps({"priv_key": {"type": key_type, "value": value}}).encode()


_GOOD_VALUE = base64.b64encode(SEED_A + NodeKey.from_seed(SEED_A).public_key).decode()
_OTHER_PUB = NodeKey.from_seed(bytes(32)).public_key


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"{not json", "not valid JSON", id="bad-json"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
        pytest.param(b"[]", "'priv_key'", id="not-object"),
        pytest.param(b'{"priv_key": 5}', "'priv_key'", id="priv-key-not-object"),
        pytest.param(_doc(_GOOD_VALUE, "tendermint/PrivKeySecp256k1"), "type", id="wrong-type"),
        pytest.param(_doc(_GOOD_VALUE, None), "type", id="missing-type"),
        pytest.param(_doc(None), "base64 string", id="missing-value"),
        pytest.param(_doc("!!!!"), "base64", id="bad-base64"),
        pytest.param(_doc(_GOOD_VALUE[:-4]), "64-byte", id="too-short"),
        pytest.param(_doc(base64.b64encode(SEED_A).decode()), "64-byte", id="seed-only"),
        pytest.param(_doc(base64.b64encode(SEED_A + bytes(32)).decode()), "all zero", id="zero"),
        pytest.param(
            _doc(base64.b64encode(SEED_A + _OTHER_PUB).decode()), "does not match", id="mismatch"
        ),
    ],
)
def test_load_rejects_malformed_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "node_key.json"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        load_node_key(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(KeyFileError) as info:
        load_node_key(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_save_where_parent_is_a_file_is_key_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "config"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(KeyFileError) as info:
        save_node_key(NodeKey.from_seed(SEED_A), blocker / "node_key.json")
    assert isinstance(info.value.__cause__, OSError)
