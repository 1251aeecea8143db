"""uvarint and delimited-message framing (wire.md §2.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.errors import LocalProtocolError, RemoteProtocolError
from cometp2p.wire.varint import (
    DelimitedReader,
    decode_uvarint,
    encode_delimited,
    encode_uvarint,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (1034, "8a08"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
)
def test_known_encodings(value: int, encoded: str) -> None:
    assert encode_uvarint(value).hex() == encoded
    assert decode_uvarint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_uvarint(-1)
    with pytest.raises(LocalProtocolError):
        encode_uvarint(2**64)


def test_overlong_varint_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_uvarint(b"\xff" * 10 + b"\x01")
    with pytest.raises(RemoteProtocolError):
        decode_uvarint(b"\xff" * 9 + b"\x02")  # 2**64 overflows


def test_truncated_varint_needs_more_bytes() -> None:
    assert decode_uvarint(b"\x80\x80") is None


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uvarint_round_trip(value: int) -> None:
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded) == (value, len(encoded))


def test_reader_rejects_oversized_declaration_before_the_body() -> None:
    reader = DelimitedReader(max_size_bytes=10)
    reader.feed(encode_uvarint(11))  # no body bytes yet
    with pytest.raises(RemoteProtocolError, match="exceeds max size"):
        reader.next_message()


@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
)
def test_reader_gives_the_same_messages_for_any_split(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_delimited(b) for b in bodies) + b"\x05ab"  # trailing partial
    reader = DelimitedReader(max_size_bytes=300)
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        i += 1
        reader.feed(stream[pos : pos + step])
        pos += step
        while (msg := reader.next_message()) is not None:
            out.append(msg)
    assert out == bodies
    assert reader.take_rest() == b"\x05ab"


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_remote_errors(data: bytes) -> None:
    reader = DelimitedReader(max_size_bytes=16)
    reader.feed(data)
    try:
        while reader.next_message() is not None:
            pass
    except RemoteProtocolError:
        pass
