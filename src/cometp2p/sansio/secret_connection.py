"""The SecretConnection handshake as a sans-IO state machine (wire.md §3.2-§3.5, §11).

One responsibility: authenticate the peer and agree on the two frame keys. Bytes go in
with :meth:`SecretHandshake.receive_data`, bytes to write come out of
:meth:`SecretHandshake.data_to_send`, and one :class:`HandshakeComplete` event comes out of
:meth:`SecretHandshake.next_event` carrying the peer's identity and the frame
sealer/opener for the rest of the connection. No IO, no clock.

Stages, one per message awaited from the peer::

    AWAIT_EPHEMERAL_KEY --35-byte eph key--> AWAIT_AUTH_SIG --sealed AuthSig--> COMPLETE
            \\______________________ any error ______________________/--> FAILED

Our ephemeral key is queued at construction and our AuthSigMessage as soon as the peer's
ephemeral key arrives, so both sides may write before reading (§3.2 notes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError

from cometp2p.crypto.frames import SEALED_FRAME_BYTES, FrameOpener, FrameSealer
from cometp2p.crypto.kdf import derive_secrets
from cometp2p.crypto.keys import (
    ED25519_PUBLIC_KEY_BYTES,
    ED25519_SIGNATURE_BYTES,
    NodeKey,
    node_id_from_public_key,
    verify_signature,
)
from cometp2p.crypto.merlin import Transcript
from cometp2p.errors import (
    AuthenticationError,
    CometP2PError,
    FrameError,
    HandshakeError,
    HandshakeStage,
    LocalProtocolError,
    RemoteProtocolError,
)
from cometp2p.sansio.failure import as_failure, raise_again
from cometp2p.types import NodeID
from cometp2p.wire.proto.tendermint.p2p import conn_pb2
from cometp2p.wire.varint import DelimitedReader, decode_uvarint, encode_delimited

__all__ = [
    "AUTH_SIG_MESSAGE_BYTES",
    "EPHEMERAL_KEY_MESSAGE_BYTES",
    "LOW_ORDER_POINTS",
    "HandshakeComplete",
    "SecretHandshake",
    "SecretHandshakeStage",
    "compute_challenge",
    "decode_auth_sig_message",
    "encode_auth_sig_message",
]

X25519_KEY_BYTES: Final = 32
EPHEMERAL_KEY_PREFIX: Final = b"\x22\x0a\x20"
"""uvarint(34), then BytesValue field 1 (wire type 2) of length 32 (§3.3)."""
EPHEMERAL_KEY_MESSAGE_BYTES: Final = len(EPHEMERAL_KEY_PREFIX) + X25519_KEY_BYTES
AUTH_SIG_MESSAGE_BYTES: Final = 103
"""uvarint(102) || AuthSigMessage{pub_key{ed25519}, sig} (§3.5)."""
HANDSHAKE_MESSAGE_MAX_BYTES: Final = 1024 * 1024
"""Go's read limit for the ephemeral key and AuthSigMessage (§3.1)."""

TRANSCRIPT_LABEL: Final = b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH"
LABEL_EPHEMERAL_LOWER: Final = b"EPHEMERAL_LOWER_PUBLIC_KEY"
LABEL_EPHEMERAL_UPPER: Final = b"EPHEMERAL_UPPER_PUBLIC_KEY"
LABEL_DH_SECRET: Final = b"DH_SECRET"
LABEL_CHALLENGE: Final = b"SECRET_CONNECTION_MAC"
CHALLENGE_BYTES: Final = 32

LOW_ORDER_POINTS: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)
"""X25519 public keys refused up front, as tendermint-rs does (§3.4): 0, 1, two points of
order 8, and p-1, p, p+1. Other small-order inputs are caught by the all-zero DH check."""

_AUTH_SIG_PREFIX: Final = b"\x66\x0a\x22\x0a\x20"
_AUTH_SIG_SIG_TAG: Final = b"\x12\x40"


class SecretHandshakeStage(enum.Enum):
    """Where a :class:`SecretHandshake` is; each waiting stage names what it waits for."""

    AWAIT_EPHEMERAL_KEY = "awaiting the peer's ephemeral key"
    AWAIT_AUTH_SIG = "awaiting the peer's AuthSigMessage"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The peer is authenticated; the connection continues encrypted.

    Attributes:
        remote_public_key: the peer's 32-byte Ed25519 node key.
        remote_node_id: its node ID (wire.md §6.1). The caller still compares it with the
            dialed ID and the NodeInfo ID (§7).
        sealer: seals what we send next; its counter continues after our AuthSig frame.
        opener: opens what the peer sends next; its counter continues after the frame
            that completed the peer's AuthSig, and it holds no buffered bytes.
        leftover_plaintext: decrypted bytes that followed the peer's AuthSigMessage inside
            its last frame (for example the start of its NodeInfo). They come first.
        leftover_ciphertext: bytes received after that frame, not yet opened. Feed them to
            ``opener`` before anything read from the socket. They are left sealed so that a
            bad frame after a good AuthSig fails the connection, not the handshake, however
            the stream was split.
        challenge: the 32-byte Merlin challenge both sides signed.
    """

    remote_public_key: bytes
    remote_node_id: NodeID
    sealer: FrameSealer
    opener: FrameOpener
    leftover_plaintext: bytes
    leftover_ciphertext: bytes
    challenge: bytes


def compute_challenge(lo: bytes, hi: bytes, dh_secret: bytes) -> bytes:
    """Return the 32-byte challenge of §3.2 steps 4, 6 and 8.

    Args:
        lo: the lexicographically lower 32-byte ephemeral public key.
        hi: the higher one.
        dh_secret: the 32-byte X25519 shared secret.
    """
    transcript = Transcript(TRANSCRIPT_LABEL)
    transcript.append_message(LABEL_EPHEMERAL_LOWER, lo)
    transcript.append_message(LABEL_EPHEMERAL_UPPER, hi)
    transcript.append_message(LABEL_DH_SECRET, dh_secret)
    return transcript.challenge_bytes(LABEL_CHALLENGE, CHALLENGE_BYTES)


def encode_auth_sig_message(public_key: bytes, signature: bytes) -> bytes:
    """Return the 103-byte delimited AuthSigMessage of §3.5.

    Args:
        public_key: our 32-byte Ed25519 public key.
        signature: our 64-byte signature over the challenge.

    Raises:
        LocalProtocolError: if the key or signature has the wrong length, or the protobuf
            encoder did not produce the exact bytes Go does.
    """
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES or len(signature) != ED25519_SIGNATURE_BYTES:
        raise LocalProtocolError(
            f"AuthSigMessage needs a 32-byte key and a 64-byte signature, got "
            f"{len(public_key)} and {len(signature)} bytes"
        )
    message = conn_pb2.AuthSigMessage()
    message.pub_key.ed25519 = public_key
    message.sig = signature
    wire = encode_delimited(message.SerializeToString())
    if wire != _AUTH_SIG_PREFIX + public_key + _AUTH_SIG_SIG_TAG + signature:
        raise LocalProtocolError(f"protobuf produced a non-canonical AuthSigMessage: {wire.hex()}")
    return wire


def decode_auth_sig_message(body: bytes) -> tuple[bytes, bytes]:
    """Decode the peer's AuthSigMessage body (without its length prefix), §3.5 checks 1-2.

    Returns:
        ``(public_key, signature)``: a 32-byte Ed25519 key and the signature bytes as sent
        (its length is checked by the caller together with the signature itself).

    Raises:
        HandshakeError: the body is not a valid protobuf AuthSigMessage (AUTH_SIG stage).
        AuthenticationError: the key is missing, not Ed25519, or not 32 bytes.
    """
    try:
        message = conn_pb2.AuthSigMessage.FromString(body)
    except DecodeError as exc:
        raise HandshakeError(
            HandshakeStage.AUTH_SIG, f"AuthSigMessage is not valid protobuf: {exc}"
        ) from exc
    key_type = message.pub_key.WhichOneof("sum")
    if key_type != "ed25519":
        raise AuthenticationError(f"expected an ed25519 public key, got {key_type or 'no key'}")
    public_key = message.pub_key.ed25519
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        raise AuthenticationError(
            f"expected a {ED25519_PUBLIC_KEY_BYTES}-byte ed25519 public key, "
            f"got {len(public_key)} bytes"
        )
    return public_key, message.sig


class SecretHandshake:
    """One side of the SecretConnection handshake (wire.md §3.2), sans-IO.

    Both peers run the same code; there is no initiator/responder distinction. Write
    whatever :meth:`data_to_send` returns (our ephemeral key is ready at once), feed every
    received byte to :meth:`receive_data`, and poll :meth:`next_event` until it returns
    :class:`HandshakeComplete`. After that, use the event's sealer and opener; the
    handshake object accepts no more data. A handshake that raised stays FAILED and raises
    that same error on every later :meth:`receive_data`.

    Args:
        node_key: our Ed25519 node key; signs the challenge.
        ephemeral_private_key: a fixed 32-byte X25519 scalar, for vectors and tests only;
            by default a fresh one comes from the operating system's CSPRNG.

    Raises:
        LocalProtocolError: if ``ephemeral_private_key`` is not 32 bytes.
    """

    __slots__ = (
        "_buffer",
        "_challenge",
        "_ciphertext",
        "_eph_private",
        "_eph_public",
        "_error",
        "_event",
        "_node_key",
        "_opener",
        "_outgoing",
        "_plaintext",
        "_sealer",
        "_stage",
    )

    def __init__(self, node_key: NodeKey, *, ephemeral_private_key: bytes | None = None) -> None:
        if ephemeral_private_key is None:
            self._eph_private = X25519PrivateKey.generate()
        elif len(ephemeral_private_key) != X25519_KEY_BYTES:
            raise LocalProtocolError(
                f"ephemeral X25519 private key must be {X25519_KEY_BYTES} bytes, "
                f"got {len(ephemeral_private_key)}"
            )
        else:
            self._eph_private = X25519PrivateKey.from_private_bytes(bytes(ephemeral_private_key))
        self._eph_public = self._eph_private.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        self._node_key = node_key
        self._stage = SecretHandshakeStage.AWAIT_EPHEMERAL_KEY
        self._outgoing = bytearray(EPHEMERAL_KEY_PREFIX + self._eph_public)
        self._buffer = bytearray()
        self._ciphertext = bytearray()
        self._plaintext = DelimitedReader(HANDSHAKE_MESSAGE_MAX_BYTES)
        self._sealer: FrameSealer | None = None
        self._opener: FrameOpener | None = None
        self._challenge = b""
        self._event: HandshakeComplete | None = None
        self._error: CometP2PError | None = None

    @property
    def stage(self) -> SecretHandshakeStage:
        """The current stage."""
        return self._stage

    @property
    def ephemeral_public_key(self) -> bytes:
        """Our 32-byte X25519 ephemeral public key."""
        return self._eph_public

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes that should be written to the peer now."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def next_event(self) -> HandshakeComplete | None:
        """Return :class:`HandshakeComplete` once, when the peer is authenticated, else None."""
        event, self._event = self._event, None
        return event

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer.

        Args:
            data: the next bytes of the TCP stream, split anywhere; ``b""`` means the peer
                closed the stream.

        Raises:
            HandshakeError: the stream ended early, the ephemeral key message is not
                exactly ``22 0a 20`` + 32 bytes, the key is a low-order point or yields an
                all-zero DH secret (KEY_AGREEMENT), a frame failed to open, or the
                AuthSigMessage is malformed or over 1 MiB.
            AuthenticationError: the peer's key is not a 32-byte Ed25519 key or its
                signature does not verify over the challenge.
            LocalProtocolError: the handshake already completed; or an unexpected
                internal error (wrapped, see :mod:`cometp2p.sansio.failure`).

        After any exception the handshake is FAILED and every later call raises the
        same error again (:mod:`cometp2p.sansio.failure`).
        """
        stage = self._stage
        if stage is SecretHandshakeStage.COMPLETE:
            raise LocalProtocolError(
                "handshake already complete: feed further bytes to HandshakeComplete.opener"
            )
        if stage is SecretHandshakeStage.FAILED:
            assert self._error is not None
            raise_again(self._error)
        try:
            if not data:
                self._end_of_stream()
            elif stage is SecretHandshakeStage.AWAIT_EPHEMERAL_KEY:
                self._buffer += data
                self._read_ephemeral_key()
            else:
                self._read_auth_sig(data)
        except Exception as exc:  # the failure rule of sansio.failure
            self._error = error = as_failure(exc)
            self._stage = SecretHandshakeStage.FAILED
            self._outgoing.clear()
            if error is exc:
                raise
            raise error from exc

    def _end_of_stream(self) -> None:
        if self._stage is SecretHandshakeStage.AWAIT_EPHEMERAL_KEY:
            raise HandshakeError(
                HandshakeStage.EPHEMERAL_KEY,
                f"peer closed the connection after {len(self._buffer)} of the "
                f"{EPHEMERAL_KEY_MESSAGE_BYTES} bytes of its ephemeral key message",
            )
        pending = len(self._ciphertext)
        raise HandshakeError(
            HandshakeStage.AUTH_SIG,
            f"peer closed the connection before its AuthSigMessage was complete "
            f"({self._plaintext.buffered_bytes} plaintext and {pending} ciphertext bytes held)",
        )

    def _read_ephemeral_key(self) -> None:
        buffer = self._buffer
        head = bytes(buffer[: len(EPHEMERAL_KEY_PREFIX)])
        if not EPHEMERAL_KEY_PREFIX.startswith(head):
            raise HandshakeError(HandshakeStage.EPHEMERAL_KEY, _describe_bad_prefix(buffer))
        if len(buffer) < EPHEMERAL_KEY_MESSAGE_BYTES:
            return
        remote_eph = bytes(buffer[len(EPHEMERAL_KEY_PREFIX) : EPHEMERAL_KEY_MESSAGE_BYTES])
        rest = bytes(buffer[EPHEMERAL_KEY_MESSAGE_BYTES:])
        buffer.clear()
        self._agree_keys(remote_eph)
        self._stage = SecretHandshakeStage.AWAIT_AUTH_SIG
        if rest:
            self._read_auth_sig(rest)

    def _agree_keys(self, remote_eph: bytes) -> None:
        if remote_eph in LOW_ORDER_POINTS:
            raise HandshakeError(
                HandshakeStage.KEY_AGREEMENT,
                f"peer's ephemeral key {remote_eph.hex()} is a low-order point",
            )
        local_eph = self._eph_public
        if remote_eph == local_eph:
            raise HandshakeError(
                HandshakeStage.KEY_AGREEMENT, "peer sent back our own ephemeral key"
            )
        try:
            dh_secret = self._eph_private.exchange(X25519PublicKey.from_public_bytes(remote_eph))
        except ValueError as exc:  # cryptography refuses an all-zero shared secret
            raise HandshakeError(
                HandshakeStage.KEY_AGREEMENT,
                f"peer's ephemeral key {remote_eph.hex()} gives an all-zero DH secret",
            ) from exc
        if dh_secret == bytes(X25519_KEY_BYTES):
            raise HandshakeError(
                HandshakeStage.KEY_AGREEMENT,
                f"peer's ephemeral key {remote_eph.hex()} gives an all-zero DH secret",
            )
        loc_is_least = local_eph < remote_eph
        lo, hi = (local_eph, remote_eph) if loc_is_least else (remote_eph, local_eph)
        recv_key, send_key = derive_secrets(dh_secret, loc_is_least)
        self._challenge = compute_challenge(lo, hi, dh_secret)
        self._sealer = FrameSealer(send_key)
        self._opener = FrameOpener(recv_key)
        auth_sig = encode_auth_sig_message(
            self._node_key.public_key, self._node_key.sign(self._challenge)
        )
        self._outgoing += self._sealer.seal(auth_sig)

    def _read_auth_sig(self, ciphertext: bytes) -> None:
        opener = self._opener
        sealer = self._sealer
        if opener is None or sealer is None:  # unreachable: set with the stage
            raise LocalProtocolError("frame keys missing in the AuthSig stage")
        buffered = self._ciphertext
        buffered += ciphertext
        reader = self._plaintext
        # Open one frame at a time and stop at the frame that completes the AuthSig:
        # whatever follows belongs to the connection, not to the handshake.
        body = None
        consumed = 0
        while body is None and len(buffered) - consumed >= SEALED_FRAME_BYTES:
            end = consumed + SEALED_FRAME_BYTES
            try:
                plaintext = opener.receive_data(bytes(buffered[consumed:end]))
            except FrameError as exc:
                raise HandshakeError(
                    HandshakeStage.AUTH_SIG, f"frame carrying the AuthSigMessage: {exc}"
                ) from exc
            consumed = end
            reader.feed(plaintext)
            try:
                body = reader.next_message()
            except RemoteProtocolError as exc:
                raise HandshakeError(HandshakeStage.AUTH_SIG, f"AuthSigMessage: {exc}") from exc
        del buffered[:consumed]
        if body is None:
            return
        remote_key, signature = decode_auth_sig_message(body)
        if len(signature) != ED25519_SIGNATURE_BYTES:
            raise AuthenticationError(
                f"expected a {ED25519_SIGNATURE_BYTES}-byte signature, got {len(signature)} bytes"
            )
        if not verify_signature(remote_key, self._challenge, signature):
            raise AuthenticationError(
                f"challenge verification failed: signature by {remote_key.hex()} does not "
                f"verify over challenge {self._challenge.hex()}"
            )
        self._stage = SecretHandshakeStage.COMPLETE
        self._event = HandshakeComplete(
            remote_public_key=remote_key,
            remote_node_id=node_id_from_public_key(remote_key),
            sealer=sealer,
            opener=opener,
            leftover_plaintext=reader.take_rest(),
            leftover_ciphertext=bytes(buffered),
            challenge=self._challenge,
        )
        buffered.clear()


def _describe_bad_prefix(buffer: bytearray) -> str:
    expected = (
        f"expected the {EPHEMERAL_KEY_MESSAGE_BYTES}-byte message 22 0a 20 + 32-byte key "
        "(uvarint 34, BytesValue field 1 of 32 bytes)"
    )
    try:
        decoded = decode_uvarint(buffer)
    except RemoteProtocolError:
        decoded = None
    if decoded is not None and decoded[0] > HANDSHAKE_MESSAGE_MAX_BYTES:
        return (
            f"{expected}; got a declared length of {decoded[0]} bytes, over the "
            f"{HANDSHAKE_MESSAGE_MAX_BYTES}-byte limit"
        )
    return f"{expected}; got {bytes(buffer[: len(EPHEMERAL_KEY_PREFIX)]).hex(' ')}"
