"""Merlin transcripts (STROBE-128 over Keccak-f[1600]) for the SecretConnection challenge.

One responsibility: derive the 32-byte challenge both peers sign during the handshake
(wire.md §3.2 steps 4, 6 and 8; the construction is spelled out in §3.8). Only the subset
of Merlin v1.0 / STROBE v1.0.2 that the handshake needs is implemented: ``append_message``
and ``challenge_bytes``.

The permutation is pure Python but tuned: the 25 lanes live in local variables as Python
ints, the rounds are unrolled per lane with precomputed rotation offsets and round
constants, and absorbing XORs whole slices through ``int.from_bytes`` rather than looping
over bytes. A whole handshake transcript (three appends and one 32-byte challenge) runs two
permutations; the state after the constant STROBE initialisation is computed once at import.

Where the optional C extension :mod:`cometp2p.crypto._keccak` is built (``pip install``
builds it when a C compiler is present), the permutation runs natively instead; the pure
Python one stays as the fallback and both are checked against the same vectors.
:data:`PERMUTATION_BACKEND` says which one is in use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from cometp2p.errors import LocalProtocolError

__all__ = [
    "MERLIN_PROTOCOL_LABEL",
    "PERMUTATION_BACKEND",
    "Transcript",
    "keccak_f1600",
    "keccak_f1600_python",
]

MERLIN_PROTOCOL_LABEL: Final = b"Merlin v1.0"
"""The STROBE protocol label every Merlin transcript starts from (§3.8)."""

_STROBE_R: Final = 166
"""STROBE-128 rate in bytes: 200 - 2 * (128 / 8) - 2."""

_FLAG_I: Final = 0x01
_FLAG_A: Final = 0x02
_FLAG_C: Final = 0x04
_FLAG_M: Final = 0x10
_FLAG_K: Final = 0x20

_MAX_LEN: Final = 0xFFFF_FFFF
"""Merlin encodes lengths as LE32, so messages and challenges stop below 4 GiB."""

_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF

_ROUND_CONSTANTS: Final = (
    0x0000000000000001,
    0x0000000000008082,
    0x800000000000808A,
    0x8000000080008000,
    0x000000000000808B,
    0x0000000080000001,
    0x8000000080008081,
    0x8000000000008009,
    0x000000000000008A,
    0x0000000000000088,
    0x0000000080008009,
    0x000000008000000A,
    0x000000008000808B,
    0x800000000000008B,
    0x8000000000008089,
    0x8000000000008003,
    0x8000000000008002,
    0x8000000000000080,
    0x000000000000800A,
    0x800000008000000A,
    0x8000000080008081,
    0x8000000000008080,
    0x0000000080000001,
    0x8000000080008008,
)

_LANES: Final = struct.Struct("<25Q")
_UNPACK: Final = _LANES.unpack
_PACK_INTO: Final = _LANES.pack_into


def keccak_f1600(state: bytearray) -> None:
    """Apply the 24-round Keccak-f[1600] permutation to ``state`` in place.

    Uses the backend named by :data:`PERMUTATION_BACKEND`.

    Args:
        state: the 200-byte sponge state; lane (x, y) is the little-endian 64-bit word
            at byte offset 8 * (x + 5 * y), as in FIPS 202.

    Raises:
        LocalProtocolError: if ``state`` is not exactly 200 bytes.
    """
    if len(state) != 200:
        raise LocalProtocolError(f"Keccak-f[1600] state must be 200 bytes, got {len(state)}")
    _permute_in_place(state)


def keccak_f1600_python(state: bytearray) -> None:
    """The pure-Python Keccak-f[1600], whatever backend is selected; see :func:`keccak_f1600`.

    Raises:
        LocalProtocolError: if ``state`` is not exactly 200 bytes.
    """
    if len(state) != 200:
        raise LocalProtocolError(f"Keccak-f[1600] state must be 200 bytes, got {len(state)}")
    _python_permute_in_place(state)


def _python_permute_in_place(state: bytearray) -> None:
    _PACK_INTO(state, 0, *_permute(state))


def _permute(state: bytearray) -> tuple[int, ...]:
    # theta, rho and pi are fused per lane; chi and iota follow. Rotations are written
    # out with their constant offsets; "x ^ _MASK" stands for the 64-bit NOT.
    (
        a00,
        a10,
        a20,
        a30,
        a40,
        a01,
        a11,
        a21,
        a31,
        a41,
        a02,
        a12,
        a22,
        a32,
        a42,
        a03,
        a13,
        a23,
        a33,
        a43,
        a04,
        a14,
        a24,
        a34,
        a44,
    ) = _UNPACK(state)
    for rc in _ROUND_CONSTANTS:
        c0 = a00 ^ a01 ^ a02 ^ a03 ^ a04
        c1 = a10 ^ a11 ^ a12 ^ a13 ^ a14
        c2 = a20 ^ a21 ^ a22 ^ a23 ^ a24
        c3 = a30 ^ a31 ^ a32 ^ a33 ^ a34
        c4 = a40 ^ a41 ^ a42 ^ a43 ^ a44
        d0 = c4 ^ (((c1 << 1) | (c1 >> 63)) & _MASK)
        d1 = c0 ^ (((c2 << 1) | (c2 >> 63)) & _MASK)
        d2 = c1 ^ (((c3 << 1) | (c3 >> 63)) & _MASK)
        d3 = c2 ^ (((c4 << 1) | (c4 >> 63)) & _MASK)
        d4 = c3 ^ (((c0 << 1) | (c0 >> 63)) & _MASK)
        b00 = a00 ^ d0
        t = a01 ^ d0
        b13 = ((t << 36) | (t >> 28)) & _MASK
        t = a02 ^ d0
        b21 = ((t << 3) | (t >> 61)) & _MASK
        t = a03 ^ d0
        b34 = ((t << 41) | (t >> 23)) & _MASK
        t = a04 ^ d0
        b42 = ((t << 18) | (t >> 46)) & _MASK
        t = a10 ^ d1
        b02 = ((t << 1) | (t >> 63)) & _MASK
        t = a11 ^ d1
        b10 = ((t << 44) | (t >> 20)) & _MASK
        t = a12 ^ d1
        b23 = ((t << 10) | (t >> 54)) & _MASK
        t = a13 ^ d1
        b31 = ((t << 45) | (t >> 19)) & _MASK
        t = a14 ^ d1
        b44 = ((t << 2) | (t >> 62)) & _MASK
        t = a20 ^ d2
        b04 = ((t << 62) | (t >> 2)) & _MASK
        t = a21 ^ d2
        b12 = ((t << 6) | (t >> 58)) & _MASK
        t = a22 ^ d2
        b20 = ((t << 43) | (t >> 21)) & _MASK
        t = a23 ^ d2
        b33 = ((t << 15) | (t >> 49)) & _MASK
        t = a24 ^ d2
        b41 = ((t << 61) | (t >> 3)) & _MASK
        t = a30 ^ d3
        b01 = ((t << 28) | (t >> 36)) & _MASK
        t = a31 ^ d3
        b14 = ((t << 55) | (t >> 9)) & _MASK
        t = a32 ^ d3
        b22 = ((t << 25) | (t >> 39)) & _MASK
        t = a33 ^ d3
        b30 = ((t << 21) | (t >> 43)) & _MASK
        t = a34 ^ d3
        b43 = ((t << 56) | (t >> 8)) & _MASK
        t = a40 ^ d4
        b03 = ((t << 27) | (t >> 37)) & _MASK
        t = a41 ^ d4
        b11 = ((t << 20) | (t >> 44)) & _MASK
        t = a42 ^ d4
        b24 = ((t << 39) | (t >> 25)) & _MASK
        t = a43 ^ d4
        b32 = ((t << 8) | (t >> 56)) & _MASK
        t = a44 ^ d4
        b40 = ((t << 14) | (t >> 50)) & _MASK
        a00 = b00 ^ ((b10 ^ _MASK) & b20) ^ rc
        a10 = b10 ^ ((b20 ^ _MASK) & b30)
        a20 = b20 ^ ((b30 ^ _MASK) & b40)
        a30 = b30 ^ ((b40 ^ _MASK) & b00)
        a40 = b40 ^ ((b00 ^ _MASK) & b10)
        a01 = b01 ^ ((b11 ^ _MASK) & b21)
        a11 = b11 ^ ((b21 ^ _MASK) & b31)
        a21 = b21 ^ ((b31 ^ _MASK) & b41)
        a31 = b31 ^ ((b41 ^ _MASK) & b01)
        a41 = b41 ^ ((b01 ^ _MASK) & b11)
        a02 = b02 ^ ((b12 ^ _MASK) & b22)
        a12 = b12 ^ ((b22 ^ _MASK) & b32)
        a22 = b22 ^ ((b32 ^ _MASK) & b42)
        a32 = b32 ^ ((b42 ^ _MASK) & b02)
        a42 = b42 ^ ((b02 ^ _MASK) & b12)
        a03 = b03 ^ ((b13 ^ _MASK) & b23)
        a13 = b13 ^ ((b23 ^ _MASK) & b33)
        a23 = b23 ^ ((b33 ^ _MASK) & b43)
        a33 = b33 ^ ((b43 ^ _MASK) & b03)
        a43 = b43 ^ ((b03 ^ _MASK) & b13)
        a04 = b04 ^ ((b14 ^ _MASK) & b24)
        a14 = b14 ^ ((b24 ^ _MASK) & b34)
        a24 = b24 ^ ((b34 ^ _MASK) & b44)
        a34 = b34 ^ ((b44 ^ _MASK) & b04)
        a44 = b44 ^ ((b04 ^ _MASK) & b14)
    return (
        a00,
        a10,
        a20,
        a30,
        a40,
        a01,
        a11,
        a21,
        a31,
        a41,
        a02,
        a12,
        a22,
        a32,
        a42,
        a03,
        a13,
        a23,
        a33,
        a43,
        a04,
        a14,
        a24,
        a34,
        a44,
    )


class Transcript:
    """A Merlin v1.0 transcript: labelled messages in, labelled challenge bytes out.

    Both peers of a SecretConnection build the same transcript and so derive the same
    challenge (wire.md §3.2 steps 4-8, §3.8). Not thread-safe; cheap to create.

    Args:
        app_label: the application's domain-separation label, e.g.
            ``b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH"``.

    Raises:
        LocalProtocolError: if ``app_label`` is 4 GiB or longer.
    """

    __slots__ = ("_cur_flags", "_pos", "_pos_begin", "_state")

    def __init__(self, app_label: bytes) -> None:
        self._state = bytearray(_MERLIN_INITIAL_STATE)
        self._pos = _MERLIN_INITIAL_POS
        self._pos_begin = _MERLIN_INITIAL_POS_BEGIN
        self._cur_flags = _MERLIN_INITIAL_FLAGS
        self.append_message(b"dom-sep", app_label)

    def append_message(self, label: bytes, message: bytes) -> None:
        """Absorb ``message`` under ``label``.

        Args:
            label: the message label (bytes, any length below 4 GiB).
            message: the message bytes (below 4 GiB).

        Raises:
            LocalProtocolError: if ``label`` or ``message`` is 4 GiB or longer.
        """
        size = len(message)
        if size > _MAX_LEN:
            raise LocalProtocolError(
                f"Merlin message too long: expected at most {_MAX_LEN} bytes, got {size}"
            )
        pos = self._pos
        head = len(label) + 6  # begin_op(M|A): 2 bytes, the label, LE32(size)
        if pos + head < _STROBE_R:
            # No permutation can run before the message's own begin_op, so both STROBE
            # operations are absorbed as one run of bytes; the state afterwards is exactly
            # that of the separate steps in _append_message_stepwise.
            old_begin = self._pos_begin
            self._pos_begin = pos + head + 1
            self._cur_flags = _FLAG_A
            self._absorb(
                b"".join(
                    (
                        bytes((old_begin, _FLAG_M | _FLAG_A)),
                        label,
                        size.to_bytes(4, "little"),
                        bytes((pos + 1, _FLAG_A)),
                        message,
                    )
                )
            )
            return
        self._append_message_stepwise(label, message)

    def _append_message_stepwise(self, label: bytes, message: bytes) -> None:
        # The STROBE steps one by one (wire.md §3.8); the reference for the fast path.
        self._meta_ad_with_length(label, len(message))
        self._begin_op(_FLAG_A)
        self._absorb(message)

    def challenge_bytes(self, label: bytes, length: int) -> bytes:
        """Squeeze ``length`` challenge bytes bound to everything appended so far.

        Args:
            label: the challenge label.
            length: how many bytes to return, 0 <= length < 2**32.

        Returns:
            ``length`` pseudo-random bytes.

        Raises:
            LocalProtocolError: if ``length`` is negative or 4 GiB or more.
        """
        if not 0 <= length <= _MAX_LEN:
            raise LocalProtocolError(
                f"Merlin challenge length must be in 0..{_MAX_LEN} bytes, got {length}"
            )
        self._meta_ad_with_length(label, length)
        self._begin_op(_FLAG_I | _FLAG_A | _FLAG_C)
        return self._squeeze(length)

    # STROBE-128 operations (wire.md §3.8). ``meta_ad(label); meta_ad(LE32(n), more=True)``
    # is one STROBE operation, so the length continues it without a new begin_op.

    def _meta_ad_with_length(self, label: bytes, length: int) -> None:
        if len(label) > _MAX_LEN:
            raise LocalProtocolError(
                f"Merlin label too long: expected at most {_MAX_LEN} bytes, got {len(label)}"
            )
        self._begin_op(_FLAG_M | _FLAG_A)
        self._absorb(label)
        self._absorb(length.to_bytes(4, "little"))

    def _begin_op(self, flags: int) -> None:
        old_begin = self._pos_begin
        self._pos_begin = self._pos + 1
        self._cur_flags = flags
        self._absorb(bytes((old_begin, flags)))
        if flags & (_FLAG_C | _FLAG_K) and self._pos != 0:
            self._run_f()

    def _absorb(self, data: bytes) -> None:
        state = self._state
        pos = self._pos
        size = len(data)
        done = 0
        while done < size:
            take = min(_STROBE_R - pos, size - done)
            end = pos + take
            mixed = int.from_bytes(state[pos:end], "little") ^ int.from_bytes(
                data[done : done + take], "little"
            )
            state[pos:end] = mixed.to_bytes(take, "little")
            done += take
            pos = end
            if pos == _STROBE_R:
                self._pos = pos
                self._run_f()
                pos = 0
        self._pos = pos

    def _squeeze(self, length: int) -> bytes:
        state = self._state
        out = bytearray()
        while len(out) < length:
            pos = self._pos
            take = min(_STROBE_R - pos, length - len(out))
            end = pos + take
            out += state[pos:end]
            state[pos:end] = bytes(take)
            self._pos = end
            if end == _STROBE_R:
                self._run_f()
        return bytes(out)

    def _run_f(self) -> None:
        state = self._state
        pos = self._pos
        state[pos] ^= self._pos_begin
        state[pos + 1] ^= 0x04
        state[_STROBE_R + 1] ^= 0x80
        _permute_in_place(state)
        self._pos = 0
        self._pos_begin = 0


def _select_backend() -> tuple[str, Callable[[bytearray], None]]:
    try:
        from cometp2p.crypto import _keccak
    except ImportError:
        return "python", _python_permute_in_place
    return "native", _keccak.permute


_BACKEND: Final = _select_backend()
PERMUTATION_BACKEND: Final = _BACKEND[0]
"""``"native"`` when the C extension :mod:`cometp2p.crypto._keccak` is in use, else ``"python"``."""
_permute_in_place: Callable[[bytearray], None] = _BACKEND[1]


def _merlin_initial_state() -> tuple[bytes, int, int, int]:
    # STROBE-128 init with the fixed Merlin protocol label: the same for every
    # transcript, so it is computed once here rather than per handshake.
    state = bytearray(200)
    state[0:6] = bytes((1, _STROBE_R + 2, 1, 0, 1, 96))
    state[6:18] = b"STROBEv1.0.2"
    keccak_f1600(state)
    strobe = Transcript.__new__(Transcript)
    strobe._state = state
    strobe._pos = 0
    strobe._pos_begin = 0
    strobe._cur_flags = 0
    strobe._begin_op(_FLAG_M | _FLAG_A)
    strobe._absorb(MERLIN_PROTOCOL_LABEL)
    return bytes(strobe._state), strobe._pos, strobe._pos_begin, strobe._cur_flags


(
    _MERLIN_INITIAL_STATE,
    _MERLIN_INITIAL_POS,
    _MERLIN_INITIAL_POS_BEGIN,
    _MERLIN_INITIAL_FLAGS,
) = _merlin_initial_state()
