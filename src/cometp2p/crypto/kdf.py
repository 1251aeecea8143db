"""The HKDF split of the SecretConnection DH secret into two frame keys (wire.md §3.2 step 7).

One responsibility: turn the 32-byte X25519 shared secret into the receive and send
ChaCha20-Poly1305 keys, HKDF-SHA256 from ``cryptography`` with no salt and the fixed info
string. Which half is which depends only on whose ephemeral key sorted lower, so the two
peers end up with mirrored keys.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cometp2p.errors import LocalProtocolError

__all__ = ["HKDF_INFO", "derive_secrets", "hkdf_okm"]

HKDF_INFO: Final = b"TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN"
"""HKDF ``info`` (50 ASCII bytes, wire.md §3.1)."""

_DH_SECRET_BYTES: Final = 32
_KEY_BYTES: Final = 32


def hkdf_okm(dh_secret: bytes, length_bytes: int = 2 * _KEY_BYTES) -> bytes:
    """Return ``length_bytes`` of HKDF-SHA256 output keyed by ``dh_secret``.

    Salt is absent (RFC 5869's default of 32 zero bytes) and info is :data:`HKDF_INFO`.
    Go reads 96 bytes and uses the first 64; the last 32 are the pre-v0.33 challenge, kept
    only so the golden vectors can be checked in full (wire.md §3.9).

    Args:
        dh_secret: the 32-byte X25519 shared secret.
        length_bytes: output length, 1..8160 bytes.

    Raises:
        LocalProtocolError: if ``dh_secret`` is not 32 bytes or ``length_bytes`` is out of range.
    """
    if len(dh_secret) != _DH_SECRET_BYTES:
        raise LocalProtocolError(
            f"DH secret must be {_DH_SECRET_BYTES} bytes, got {len(dh_secret)}"
        )
    if not 1 <= length_bytes <= 255 * 32:
        raise LocalProtocolError(f"HKDF-SHA256 output must be 1..8160 bytes, got {length_bytes}")
    return HKDF(algorithm=SHA256(), length=length_bytes, salt=None, info=HKDF_INFO).derive(
        bytes(dh_secret)
    )


def derive_secrets(dh_secret: bytes, loc_is_least: bool) -> tuple[bytes, bytes]:
    """Split the DH secret into this side's ``(recv_key, send_key)`` (wire.md §3.2 step 7).

    ``okm[0:32]`` always protects traffic from the higher ephemeral key to the lower one,
    ``okm[32:64]`` the other direction.

    Args:
        dh_secret: the 32-byte X25519 shared secret.
        loc_is_least: whether our ephemeral public key sorted lower than the peer's.

    Returns:
        ``(recv_key, send_key)``, 32 bytes each.

    Raises:
        LocalProtocolError: if ``dh_secret`` is not 32 bytes.
    """
    okm = hkdf_okm(dh_secret)
    first, second = okm[:_KEY_BYTES], okm[_KEY_BYTES:]
    if loc_is_least:
        return first, second
    return second, first
