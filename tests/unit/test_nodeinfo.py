"""NodeInfo: golden bytes, decode of hostile input, every Validate and CompatibleWith rule."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.config import Config, P2PConfig
from cometp2p.errors import (
    ConfigError,
    HandshakeError,
    HandshakeStage,
    IncompatiblePeerError,
    IncompatibleReason,
    LocalProtocolError,
    NodeInfoField,
    NodeInfoInvalidError,
    RemoteProtocolError,
)
from cometp2p.types import NodeID
from cometp2p.wire.nodeinfo import (
    MAX_CHANNELS,
    MAX_NODE_INFO_BYTES,
    NodeInfo,
    ProtocolVersion,
    make_node_info,
)
from cometp2p.wire.varint import encode_delimited

VECTORS = Path(__file__).resolve().parents[2] / "../shared/vectors"
ID = NodeID("56475aa75463474c0285df5dbf2bcab73da65135")
GO_CHANNELS = bytes.fromhex("40202122233038606100")


def sample(**changes: Any) -> NodeInfo:
    base = NodeInfo(
        protocol_version=ProtocolVersion(8, 11, 1),
        node_id=ID,
        listen_addr="tcp://0.0.0.0:26656",
        network="test-chain-Ab12Cd",
        version="0.38.25",
        channels=GO_CHANNELS,
        moniker="node0",
        tx_index="on",
        rpc_address="tcp://127.0.0.1:26657",
    )
    return dataclasses.replace(base, **changes)


# -- codec ---------------------------------------------------------------------------------


def load_vector() -> dict[str, Any]:
    path = VECTORS / "secret-connection-handshake.derived.json"
    if not path.exists():
        pytest.skip(f"shared vectors not found at {path}")
    example: dict[str, Any] = json.loads(path.read_text())["encoding_examples"]["node_info_example"]
    return example


def test_encode_matches_vector() -> None:
    example = load_vector()
    fields = example["fields"]
    info = NodeInfo(
        protocol_version=ProtocolVersion(**fields["protocol_version"]),
        node_id=NodeID(fields["default_node_id"]),
        listen_addr=fields["listen_addr"],
        network=fields["network"],
        version=fields["version"],
        channels=bytes.fromhex(fields["channels"]),
        moniker=fields["moniker"],
        tx_index=fields["other"]["tx_index"],
        rpc_address=fields["other"]["rpc_address"],
    )
    assert info == sample()
    wire = bytes.fromhex(example["delimited_wire"])
    assert encode_delimited(info.encode()) == wire
    assert NodeInfo.decode(wire[2:]) == info


def test_empty_submessages_always_emitted() -> None:
    info = NodeInfo(
        protocol_version=ProtocolVersion(0, 0, 0),
        node_id=NodeID(""),
        listen_addr="",
        network="",
        version="",
        channels=b"",
        moniker="",
    )
    # field 1 (protocol_version) and field 8 (other) as empty embedded messages
    assert info.encode() == bytes.fromhex("0a00 4200")


def test_decode_absent_submessages_as_zero() -> None:
    info = NodeInfo.decode(b"")
    assert info.protocol_version == ProtocolVersion(0, 0, 0)
    assert (info.tx_index, info.rpc_address, info.channels) == ("", "", b"")


def test_decode_skips_unknown_fields() -> None:
    body = sample().encode() + bytes.fromhex("f80701")  # field 127, varint 1
    assert NodeInfo.decode(body) == sample()


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a",  # truncated length
        b"\x0a\x05\x08",  # sub-message longer than the body
        b"\x12\x02\xff\xfe",  # default_node_id that is not UTF-8
        b"\x3a\x01\x80",  # moniker that is not UTF-8
        b"\x07",  # wire type 7 does not exist
    ],
)
def test_decode_rejects_garbage(body: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        NodeInfo.decode(body)
    assert info.value.stage is HandshakeStage.NODE_INFO


def test_decode_wrong_wire_type_is_an_unknown_field() -> None:
    # Go's generated decoder rejects field 1 sent as a varint; upb skips it as unknown.
    # Lenient, and harmless: the result still has to pass validate().
    assert NodeInfo.decode(b"\x08\x01").protocol_version == ProtocolVersion(0, 0, 0)


def test_decode_rejects_oversize() -> None:
    body = sample(moniker="m" * MAX_NODE_INFO_BYTES).encode  # would be too big to encode
    with pytest.raises(LocalProtocolError, match="at most 10240"):
        body()
    oversize = b"\x3a" + b"\xff\x4f" + b"m" * 10239  # a 10239-byte moniker, 10242-byte body
    with pytest.raises(HandshakeError, match="at most 10240"):
        NodeInfo.decode(oversize)


def test_encode_rejects_out_of_range_version() -> None:
    with pytest.raises(LocalProtocolError, match="uint64"):
        sample(protocol_version=ProtocolVersion(8, 1 << 64, 0)).encode()
    with pytest.raises(LocalProtocolError, match="uint64"):
        sample(protocol_version=ProtocolVersion(-1, 11, 0)).encode()


def test_encode_rejects_unencodable_string() -> None:
    with pytest.raises(LocalProtocolError):
        sample(moniker="\ud800").encode()


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
uint64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
node_infos = st.builds(
    NodeInfo,
    protocol_version=st.builds(ProtocolVersion, uint64, uint64, uint64),
    node_id=st.text(max_size=50).map(NodeID),
    listen_addr=st.text(max_size=50),
    network=st.text(max_size=50),
    version=st.text(max_size=50),
    channels=st.binary(max_size=40),
    moniker=st.text(max_size=50),
    tx_index=st.text(max_size=5),
    rpc_address=printable,
)


@given(node_infos)
def test_encode_decode_round_trip(info: NodeInfo) -> None:
    assert NodeInfo.decode(info.encode()) == info


@given(st.binary(max_size=300))
def test_decode_random_bytes_only_remote_errors(body: bytes) -> None:
    try:
        info = NodeInfo.decode(body)
    except RemoteProtocolError:
        return
    try:
        info.validate()
        info.compatible_with(sample())
    except RemoteProtocolError:
        return


@given(node_infos, st.data())
def test_decode_mutated_only_remote_errors(info: NodeInfo, data: st.DataObject) -> None:
    body = bytearray(info.encode())
    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        body[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        NodeInfo.decode(bytes(body)).validate()


# -- Validate (wire.md §6.4) -----------------------------------------------------------------


def test_sample_is_valid() -> None:
    sample().validate()


@pytest.mark.parametrize(
    "changes",
    [
        {"node_id": NodeID(ID.upper())},  # Go's hex decoder accepts either case
        {"listen_addr": "0.0.0.0:26656"},  # no scheme, unspecified IP: fine
        {"listen_addr": "tcp://[::]:1"},
        {"listen_addr": "seed.example:26656"},  # name not resolved unless asked
        {"version": ""},
        {"channels": b""},
        {"channels": bytes(range(MAX_CHANNELS))},
        {"moniker": " a "},
        {"moniker": "~!@#$%^&*()_+ {}"},
        {"tx_index": ""},
        {"tx_index": "off"},
        {"rpc_address": ""},
        {"network": "\t anything \x00"},  # network is not validated, only compared
        {"protocol_version": ProtocolVersion(0, 0, 0)},  # nor the versions
    ],
)
def test_validate_accepts(changes: dict[str, Any]) -> None:
    sample(**changes).validate()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"node_id": NodeID("")}, NodeInfoField.NODE_ID),
        ({"node_id": NodeID(ID[:-2])}, NodeInfoField.NODE_ID),
        ({"node_id": NodeID("zz" * 20)}, NodeInfoField.NODE_ID),
        ({"listen_addr": ""}, NodeInfoField.LISTEN_ADDR),
        ({"listen_addr": "tcp://:26656"}, NodeInfoField.LISTEN_ADDR),  # empty host
        ({"listen_addr": "tcp://0.0.0.0"}, NodeInfoField.LISTEN_ADDR),  # no port
        ({"listen_addr": "tcp://0.0.0.0:65536"}, NodeInfoField.LISTEN_ADDR),
        ({"listen_addr": "tcp://x@0.0.0.0:1"}, NodeInfoField.LISTEN_ADDR),  # a second '@'
        ({"listen_addr": "::1:26656"}, NodeInfoField.LISTEN_ADDR),
        ({"version": " "}, NodeInfoField.VERSION),
        ({"version": "0.38\t"}, NodeInfoField.VERSION),
        ({"version": "v\u00e9"}, NodeInfoField.VERSION),
        ({"version": "\x7f"}, NodeInfoField.VERSION),
        ({"channels": bytes(range(MAX_CHANNELS + 1))}, NodeInfoField.CHANNELS),
        ({"channels": b"\x40\x20\x40"}, NodeInfoField.CHANNELS),
        ({"moniker": ""}, NodeInfoField.MONIKER),
        ({"moniker": "   "}, NodeInfoField.MONIKER),
        ({"moniker": "tab\there"}, NodeInfoField.MONIKER),
        ({"moniker": "n\u00f6de"}, NodeInfoField.MONIKER),
        ({"moniker": "new\nline"}, NodeInfoField.MONIKER),
        ({"tx_index": "ON"}, NodeInfoField.TX_INDEX),
        ({"tx_index": "null"}, NodeInfoField.TX_INDEX),
        ({"rpc_address": "  "}, NodeInfoField.RPC_ADDRESS),
        ({"rpc_address": "tcp://\x01"}, NodeInfoField.RPC_ADDRESS),
    ],
)
def test_validate_rejects(changes: dict[str, Any], field: NodeInfoField) -> None:
    with pytest.raises(NodeInfoInvalidError) as info:
        sample(**changes).validate()
    assert info.value.field is field
    assert field.value in str(info.value)


def test_validate_checks_fields_in_go_order() -> None:
    # Both listen_addr and moniker are bad: Go reports listen_addr first.
    with pytest.raises(NodeInfoInvalidError) as info:
        sample(listen_addr="", moniker="").validate()
    assert info.value.field is NodeInfoField.LISTEN_ADDR


def test_validate_error_quotes_hostile_strings_briefly() -> None:
    with pytest.raises(NodeInfoInvalidError) as info:
        sample(moniker="\x00" * 5000).validate()
    assert len(str(info.value)) < 400


def test_validate_resolves_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> Any:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    info = sample(listen_addr="tcp://seed.example:26656")
    info.validate()
    with pytest.raises(NodeInfoInvalidError) as err:
        info.validate(resolve=True)
    assert err.value.field is NodeInfoField.LISTEN_ADDR


# -- CompatibleWith (wire.md §6.5) ---------------------------------------------------------


def test_compatible_ignores_p2p_and_app_versions() -> None:
    sample().compatible_with(sample(protocol_version=ProtocolVersion(9, 11, 7)))


def test_compatible_with_one_common_channel() -> None:
    sample(channels=b"\x40\x00").compatible_with(sample(channels=b"\x00"))


def test_empty_local_channels_are_compatible_with_anything() -> None:
    sample(channels=b"").compatible_with(sample(channels=b""))
    sample(channels=b"").compatible_with(sample(channels=b"\x99"))


@pytest.mark.parametrize(
    ("peer", "reason"),
    [
        (sample(protocol_version=ProtocolVersion(8, 10, 1)), IncompatibleReason.BLOCK_VERSION),
        (sample(network="other-chain"), IncompatibleReason.NETWORK),
        (sample(channels=b"\x99\x98"), IncompatibleReason.NO_COMMON_CHANNEL),
        (sample(channels=b""), IncompatibleReason.NO_COMMON_CHANNEL),
    ],
)
def test_incompatible(peer: NodeInfo, reason: IncompatibleReason) -> None:
    with pytest.raises(IncompatiblePeerError) as info:
        sample().compatible_with(peer)
    assert info.value.reason is reason
    assert isinstance(info.value, RemoteProtocolError)


def test_block_version_checked_before_network() -> None:
    peer = sample(protocol_version=ProtocolVersion(8, 10, 1), network="x", channels=b"")
    with pytest.raises(IncompatiblePeerError) as info:
        sample().compatible_with(peer)
    assert info.value.reason is IncompatibleReason.BLOCK_VERSION


# -- helpers -------------------------------------------------------------------------------


def test_has_channel_and_net_address() -> None:
    info = sample(listen_addr="tcp://127.0.0.1:26656")
    assert info.has_channel(0x40)
    assert not info.has_channel(0x41)
    assert not info.has_channel(256)
    assert str(info.net_address()) == f"{ID}@127.0.0.1:26656"


def test_make_node_info_like_go(tmp_path: Path) -> None:
    cfg = Config(home=tmp_path, moniker="alice")
    info = make_node_info(cfg, ID, "chain-1", GO_CHANNELS, app_version=1)
    assert info == sample(
        network="chain-1",
        moniker="alice",
        listen_addr="tcp://0.0.0.0:26656",
        tx_index="off",
        rpc_address="",
    )


def test_make_node_info_prefers_external_address_and_sends_only_what_is_true(
    tmp_path: Path,
) -> None:
    """Issue #12: no RPC served, no transactions indexed, whatever [rpc] and [tx_index] say."""
    cfg = Config(
        home=tmp_path,
        moniker="bob",
        tx_index_indexer="kv",
        rpc_laddr="tcp://127.0.0.1:1",
        p2p=P2PConfig(external_address="127.0.0.5:26656"),
    )
    info = make_node_info(cfg, ID, "chain-1", [0x40, 0x00])
    assert info.listen_addr == "127.0.0.5:26656"
    assert info.tx_index == "off"
    assert info.rpc_address == ""
    assert info.channels == b"\x40\x00"
    assert info.protocol_version == ProtocolVersion(8, 11, 0)


def test_make_node_info_block_version_from_config(tmp_path: Path) -> None:
    cfg = Config(home=tmp_path, moniker="c", p2p=P2PConfig(block_protocol_version=10))
    assert make_node_info(cfg, ID, "chain-1", [0x40]).protocol_version == ProtocolVersion(8, 10, 0)


@pytest.mark.parametrize(
    ("changes", "channels"),
    [
        ({"moniker": ""}, [0x40]),
        ({"moniker": "caf\u00e9"}, [0x40]),
        ({"p2p": P2PConfig(laddr="tcp://0.0.0.0")}, [0x40]),
        ({}, [0x40, 0x40]),
        ({}, [256]),
    ],
)
def test_make_node_info_rejects_bad_config(
    tmp_path: Path, changes: dict[str, Any], channels: list[int]
) -> None:
    cfg = dataclasses.replace(Config(home=tmp_path, moniker="ok"), **changes)
    with pytest.raises(ConfigError):
        make_node_info(cfg, ID, "chain-1", channels)
