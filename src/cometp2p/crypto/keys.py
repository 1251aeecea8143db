"""Ed25519 node keys, node IDs and CometBFT's ``node_key.json`` (wire.md §6.1, §10.1).

One responsibility: the node's long-term identity. A :class:`NodeKey` signs the
SecretConnection challenge (§3.2 step 10); its node ID is the lowercase hex of the first
20 bytes of SHA-256 of the 32-byte public key (§6.1). ``node_key.json`` is read and written
byte-for-byte as CometBFT does (§10.1). Ed25519 comes from ``cryptography`` only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cometp2p.errors import KeyFileError, LocalProtocolError
from cometp2p.fileio import atomic_write_bytes
from cometp2p.types import NodeID

__all__ = [
    "ED25519_PUBLIC_KEY_BYTES",
    "ED25519_SEED_BYTES",
    "ED25519_SIGNATURE_BYTES",
    "NODE_KEY_JSON_TYPE",
    "NodeKey",
    "load_node_key",
    "load_or_generate_node_key",
    "node_id_from_public_key",
    "node_key_json",
    "save_node_key",
    "verify_signature",
]

ED25519_SEED_BYTES: Final = 32
ED25519_PUBLIC_KEY_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64
NODE_ID_BYTES: Final = 20
"""``crypto.AddressSize``: the node ID is this many bytes of SHA-256, hex-encoded."""

NODE_KEY_JSON_TYPE: Final = "tendermint/PrivKeyEd25519"
"""The amino-JSON type tag of the private key in ``node_key.json`` (v0.38 and v1.0)."""

_NODE_KEY_FILE_MODE: Final = 0o600


def node_id_from_public_key(public_key: bytes) -> NodeID:
    """Return the node ID of an Ed25519 public key (wire.md §6.1).

    Args:
        public_key: the 32-byte Ed25519 public key.

    Returns:
        40 lowercase hex characters: ``hex(SHA-256(public_key)[:20])``.

    Raises:
        LocalProtocolError: if ``public_key`` is not 32 bytes.
    """
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        raise LocalProtocolError(
            f"Ed25519 public key must be {ED25519_PUBLIC_KEY_BYTES} bytes, got {len(public_key)}"
        )
    return NodeID(hashlib.sha256(public_key).digest()[:NODE_ID_BYTES].hex())


@dataclass(frozen=True, slots=True)
class NodeKey:
    """A node's Ed25519 identity key.

    Build one with :meth:`from_seed`, :meth:`generate` or :func:`load_node_key`; the
    constructor is internal. The seed is kept out of ``repr``.
    """

    _seed: bytes = field(repr=False)
    _public_key: bytes
    _node_id: NodeID
    _signer: Ed25519PrivateKey = field(repr=False, compare=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """Build the key whose RFC 8032 private seed is ``seed``.

        Args:
            seed: 32 bytes (the first half of Go's 64-byte Ed25519 private key).

        Raises:
            LocalProtocolError: if ``seed`` is not 32 bytes.
        """
        if len(seed) != ED25519_SEED_BYTES:
            raise LocalProtocolError(
                f"Ed25519 seed must be {ED25519_SEED_BYTES} bytes, got {len(seed)}"
            )
        signer = Ed25519PrivateKey.from_private_bytes(bytes(seed))
        public_key = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(bytes(seed), public_key, node_id_from_public_key(public_key), signer)

    @classmethod
    def generate(cls) -> NodeKey:
        """Generate a fresh key from the operating system's CSPRNG."""
        return cls.from_seed(os.urandom(ED25519_SEED_BYTES))

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed. Secret."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._public_key

    @property
    def node_id(self) -> NodeID:
        """The node ID: 40 lowercase hex characters (wire.md §6.1)."""
        return self._node_id

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte deterministic Ed25519 (RFC 8032) signature of ``message``."""
        return self._signer.sign(message)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature.

    Verification follows RFC 8032 as implemented by OpenSSL; Go's ZIP-215 rules accept a
    few extra non-canonical encodings that no standard signer produces (wire.md §14).

    Args:
        public_key: the signer's 32-byte public key.
        message: the signed bytes.
        signature: the 64-byte signature.

    Returns:
        True if the signature is valid; False for a wrong length, an invalid public key
        encoding or a signature that does not verify.
    """
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES or len(signature) != ED25519_SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_node_key(path: str | os.PathLike[str]) -> NodeKey:
    """Read CometBFT's ``node_key.json`` (wire.md §10.1).

    Go takes the public key from bytes 32..63 of the stored 64-byte key instead of
    recomputing it from the seed, so a file whose halves disagree would give Go and us
    different node IDs; such a file is rejected rather than silently trusted.

    Args:
        path: the file to read.

    Raises:
        KeyFileError: the file is missing or unreadable, is not JSON, lacks
            ``priv_key.type``/``priv_key.value``, has a type other than
            ``tendermint/PrivKeyEd25519``, a value that is not standard padded base64 of
            64 bytes, an all-zero public half, or a public half that does not match the seed.
    """
    where = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{where}: cannot read node key file: {exc}") from exc
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{where}: node key file is not valid JSON: {exc}") from exc
    priv_key = document.get("priv_key") if isinstance(document, dict) else None
    if not isinstance(priv_key, dict):
        raise KeyFileError(f"{where}: expected an object with a 'priv_key' object")
    key_type = priv_key.get("type")
    if key_type != NODE_KEY_JSON_TYPE:
        raise KeyFileError(
            f"{where}: expected priv_key.type {NODE_KEY_JSON_TYPE!r}, got {key_type!r}"
        )
    value = priv_key.get("value")
    if not isinstance(value, str):
        raise KeyFileError(f"{where}: expected priv_key.value to be a base64 string")
    try:
        key_bytes = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise KeyFileError(f"{where}: priv_key.value is not standard base64: {exc}") from exc
    expected_len = ED25519_SEED_BYTES + ED25519_PUBLIC_KEY_BYTES
    if len(key_bytes) != expected_len:
        raise KeyFileError(
            f"{where}: expected a {expected_len}-byte Ed25519 private key, got {len(key_bytes)}"
        )
    seed, stored_public = key_bytes[:ED25519_SEED_BYTES], key_bytes[ED25519_SEED_BYTES:]
    if stored_public == bytes(ED25519_PUBLIC_KEY_BYTES):
        raise KeyFileError(f"{where}: the public-key half of priv_key.value is all zero")
    key = NodeKey.from_seed(seed)
    if key.public_key != stored_public:
        raise KeyFileError(
            f"{where}: the public-key half of priv_key.value ({stored_public.hex()}) does not "
            f"match the key derived from its seed ({key.public_key.hex()})"
        )
    return key


def node_key_json(key: NodeKey) -> bytes:
    """Return ``node_key.json`` bytes exactly as CometBFT writes them (compact, no newline)."""
    value = base64.b64encode(key.seed + key.public_key).decode("ascii")
    document = {"priv_key": {"type": NODE_KEY_JSON_TYPE, "value": value}}
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def save_node_key(key: NodeKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` to ``path`` atomically with mode 0600 (wire.md §10.1).

    Raises:
        KeyFileError: if the file cannot be written.
    """
    try:
        atomic_write_bytes(path, node_key_json(key), mode=_NODE_KEY_FILE_MODE)
    except OSError as exc:
        raise KeyFileError(f"{os.fspath(path)}: cannot write node key file: {exc}") from exc


def load_or_generate_node_key(path: str | os.PathLike[str]) -> NodeKey:
    """Load ``path`` if it exists, else generate a key and save it there.

    Raises:
        KeyFileError: the existing file is invalid (see :func:`load_node_key`) or the new
            one cannot be written.
    """
    if os.path.lexists(path):
        return load_node_key(path)
    key = NodeKey.generate()
    save_node_key(key, path)
    return key
