"""NetAddress and node ID: parsing, printing, protobuf, the RFC table and group keys."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cometp2p.errors import NetAddressError, NetAddressLookupError, RemoteProtocolError
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import (
    NetAddress,
    parse_ip,
    split_address,
    split_host_port,
    strip_scheme,
    validate_node_id,
)
from cometp2p.wire.proto.tendermint.p2p import types_pb2

VECTORS = Path(__file__).resolve().parents[2] / "../shared/vectors"
ID = NodeID("56475aa75463474c0285df5dbf2bcab73da65135")


def addr(ip: str, port: int = 26656, node_id: str = ID) -> NetAddress:
    return NetAddress(NodeID(node_id), ipaddress.ip_address(ip), port)


# -- node IDs ------------------------------------------------------------------------------


def test_validate_node_id_lowercases() -> None:
    assert validate_node_id(ID.upper()) == ID
    assert validate_node_id(ID) == ID


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ID[:-2],  # 19 bytes
        ID + "00",  # 21 bytes
        ID[:-1],  # odd length
        ID[:-1] + "g",
        " " + ID[1:],
        ID[:20] + " " + ID[21:],  # bytes.fromhex would skip spaces; Go does not
        "0x" + ID[2:],
    ],
)
def test_validate_node_id_rejects(bad: str) -> None:
    with pytest.raises(NetAddressError):
        validate_node_id(bad)


# -- parsing and printing ------------------------------------------------------------------


def test_parse_ipv4_with_scheme() -> None:
    a = NetAddress.parse(f"tcp://{ID.upper()}@1.2.3.4:26656")
    assert a == addr("1.2.3.4")
    assert str(a) == f"{ID}@1.2.3.4:26656"
    assert a.dial_string == "1.2.3.4:26656"


def test_parse_ipv6_brackets_round_trip() -> None:
    a = NetAddress.parse(f"{ID}@[2001:0DB8:0000::0001]:1")
    assert a.ip == ipaddress.IPv6Address("2001:db8::1")
    assert str(a) == f"{ID}@[2001:db8::1]:1"
    assert a.dial_string == "[2001:db8::1]:1"
    assert NetAddress.parse(str(a)) == a


def test_ipv4_mapped_is_ipv4() -> None:
    a = NetAddress.parse(f"{ID}@[::ffff:1.2.3.4]:80")
    assert isinstance(a.ip, ipaddress.IPv4Address)
    assert str(a) == f"{ID}@1.2.3.4:80"
    assert a == addr("::ffff:1.2.3.4", 80) == addr("1.2.3.4", 80)
    assert a.group_key(strict=True) == "1.2.0.0"


def test_rfc6145_is_not_mapped() -> None:
    a = NetAddress.parse(f"{ID}@[::ffff:0:1.2.3.4]:80")
    assert isinstance(a.ip, ipaddress.IPv6Address)
    assert str(a) == f"{ID}@[::ffff:0:102:304]:80"  # Go's net.IP.String() form


@pytest.mark.parametrize(
    ("text", "port"),
    [("0", 0), ("65535", 65535), ("080", 80)],  # strconv.ParseUint accepts leading zeros
)
def test_port_edges(text: str, port: int) -> None:
    assert NetAddress.parse(f"{ID}@1.2.3.4:{text}").port == port


@pytest.mark.parametrize(
    "bad",
    [
        "1.2.3.4:26656",  # no ID
        f"{ID}@{ID}@1.2.3.4:1",  # two '@'
        f"{ID[:-2]}@1.2.3.4:1",  # short ID
        f"{ID}@:26656",  # empty host
        f"{ID}@1.2.3.4",  # no port
        f"{ID}@1.2.3.4:",  # empty port
        f"{ID}@1.2.3.4:65536",
        f"{ID}@1.2.3.4:-1",
        f"{ID}@1.2.3.4:+80",
        f"{ID}@1.2.3.4: 80",
        f"{ID}@1.2.3.4:8_0",
        f"{ID}@1.2.3.4:٣",  # a non-ASCII digit that int() would accept
        f"{ID}@::1:26656",  # IPv6 without brackets
        f"{ID}@[::1:26656",
        f"{ID}@[::1]26656",
        f"{ID}@[::1]",
        f"{ID}@[[::1]]:1",
        f"{ID}@a]:1",
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(NetAddressError):
        NetAddress.parse(bad, resolve=False)


def test_parse_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="exactly one '@'"):
        NetAddress.parse("nope")


def test_strip_scheme_like_go() -> None:
    assert strip_scheme("tcp://1.2.3.4:5") == "1.2.3.4:5"
    assert strip_scheme("1.2.3.4:5") == "1.2.3.4:5"
    assert strip_scheme("a://b://c") == "b"  # Go keeps Split(addr, "://")[1]


def test_split_host_port() -> None:
    assert split_host_port("h:1") == ("h", "1")
    assert split_host_port("[::1]:2") == ("::1", "2")
    assert split_host_port(":3") == ("", "3")
    assert split_host_port("[localhost]:4") == ("localhost", "4")


def test_split_address_keeps_host_name() -> None:
    assert split_address(f"tcp://{ID}@seed.example:26656") == (ID, "seed.example", 26656)


def test_parse_host_port() -> None:
    a = NetAddress.parse_host_port(ID, "tcp://0.0.0.0:26656")
    assert a == addr("0.0.0.0")


def test_parse_ip_matches_go_parseip() -> None:
    assert parse_ip("1.2.3.4") == ipaddress.IPv4Address("1.2.3.4")
    assert parse_ip("::ffff:10.0.0.1") == ipaddress.IPv4Address("10.0.0.1")
    assert parse_ip("fe80::1%eth0") is None  # Go's ParseIP rejects zones
    assert parse_ip("01.2.3.4") is None  # and leading zeros
    assert parse_ip("[::1]") is None
    assert parse_ip("example.com") is None
    assert parse_ip("") is None


def test_empty_id_prints_dial_string() -> None:
    a = addr("1.2.3.4", 5, node_id="")
    assert str(a) == "1.2.3.4:5"


def test_port_range_checked_on_construction() -> None:
    with pytest.raises(NetAddressError):
        addr("1.2.3.4", 65536)
    with pytest.raises(NetAddressError):
        addr("1.2.3.4", -1)


# -- DNS -----------------------------------------------------------------------------------


def _fake_getaddrinfo(result: list[str] | OSError) -> Any:
    def fake(host: str, port: object, *args: object, **kwargs: object) -> Any:
        if isinstance(result, OSError):
            raise result
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))
            for ip in result
        ]

    return fake


def test_resolve_uses_first_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(["fe80::1%eth0", "1.2.3.4"]))
    a = NetAddress.parse(f"{ID}@seed.example:26656", resolve=True)
    assert a.ip == ipaddress.IPv6Address("fe80::1")


def test_resolve_failure_is_lookup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(socket.gaierror(-2, "unknown")))
    with pytest.raises(NetAddressLookupError, match=r"seed\.example"):
        NetAddress.parse(f"{ID}@seed.example:26656", resolve=True)


def test_resolve_empty_result_is_lookup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo([]))
    with pytest.raises(NetAddressLookupError):
        NetAddress.parse(f"{ID}@seed.example:26656", resolve=True)


def test_resolve_off_rejects_names() -> None:
    with pytest.raises(NetAddressLookupError):
        NetAddress.parse(f"{ID}@localhost:26656", resolve=False)


def test_parse_does_no_dns_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*_: object, **__: object) -> object:
        raise AssertionError("NetAddress.parse resolved a name without being asked")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(NetAddressLookupError, match="not an IP literal"):
        NetAddress.parse(f"{ID}@localhost:26656")
    with pytest.raises(NetAddressLookupError):
        NetAddress.parse_host_port(ID, "tcp://seed.example:26656")
    assert NetAddress.parse(f"{ID}@127.0.0.1:26656").port == 26656


def test_resolve_bad_idna_name_is_lookup_error() -> None:
    # A 64-character label fails IDNA encoding before any query is sent.
    with pytest.raises(NetAddressLookupError):
        NetAddress.parse(f"{ID}@{'a' * 64}.example:1", resolve=True)


def test_resolve_localhost_from_hosts_file() -> None:
    a = NetAddress.parse(f"{ID}@localhost:26656", resolve=True)
    assert a.local()


# -- protobuf ------------------------------------------------------------------------------


def test_to_proto_matches_vector() -> None:
    path = VECTORS / "secret-connection-handshake.derived.json"
    if not path.exists():
        pytest.skip(f"shared vectors not found at {path}")
    example = json.loads(path.read_text())["encoding_examples"]["packets"][
        "pex_addrs_one_addr_on_ch0"
    ]
    a = NetAddress.parse(example["addr"], resolve=False)
    body = a.to_proto().SerializeToString()
    # The vector is Packet{PacketMsg{data=Message{PexAddrs{addrs=[this]}}}}: the
    # NetAddress body sits at the end behind its length byte.
    wire = bytes.fromhex(example["delimited_wire"])
    assert wire.endswith(bytes([len(body)]) + body)


def test_to_proto_ipv6_text() -> None:
    msg = addr("2001:DB8:0:0:1::1", 7).to_proto()
    # RFC 5952: lowercase, and of two equal zero runs the first is compressed.
    assert (msg.id, msg.ip, msg.port) == (ID, "2001:db8::1:0:0:1", 7)


def test_from_proto_does_not_validate_id() -> None:
    a = NetAddress.from_proto(types_pb2.NetAddress(id="not-an-id", ip="1.2.3.4", port=1))
    assert a.id == "not-an-id"
    assert not a.valid()


@pytest.mark.parametrize(
    "msg",
    [
        types_pb2.NetAddress(id=ID, ip="", port=1),
        types_pb2.NetAddress(id=ID, ip="example.com", port=1),
        types_pb2.NetAddress(id=ID, ip="fe80::1%eth0", port=1),
        types_pb2.NetAddress(id=ID, ip="1.2.3.4", port=65536),
        types_pb2.NetAddress(id=ID, ip="1.2.3.4", port=0xFFFFFFFF),
    ],
)
def test_from_proto_rejects_as_remote_error(msg: types_pb2.NetAddress) -> None:
    with pytest.raises(RemoteProtocolError):
        NetAddress.from_proto(msg)


# -- same / equality -----------------------------------------------------------------------


def test_same() -> None:
    other_id = "ff" * 20
    assert addr("1.2.3.4", 1).same(addr("1.2.3.4", 1, node_id=other_id))  # same dial string
    assert addr("1.2.3.4", 1).same(addr("5.6.7.8", 2))  # same ID
    assert not addr("1.2.3.4", 1).same(addr("1.2.3.4", 2, node_id=other_id))
    assert not addr("1.2.3.4", 1, node_id="").same(addr("5.6.7.8", 1, node_id=""))


# -- the RFC table (behaviour.md §5.11), one row per case --------------------------------

PREDICATES = (
    "rfc1918",
    "rfc3849",
    "rfc3927",
    "rfc3964",
    "rfc4193",
    "rfc4380",
    "rfc4843",
    "rfc4862",
    "rfc6052",
    "rfc6145",
    "onion_cat_tor",
    "local",
)

# ip, the predicates that must hold (all others must not), valid, routable
RFC_TABLE: list[tuple[str, set[str], bool, bool]] = [
    ("10.0.0.1", {"rfc1918"}, True, False),
    ("10.255.255.255", {"rfc1918"}, True, False),
    ("172.16.0.1", {"rfc1918"}, True, False),
    ("172.31.255.255", {"rfc1918"}, True, False),
    ("172.32.0.1", set(), True, True),
    ("172.15.255.255", set(), True, True),
    ("192.168.1.1", {"rfc1918"}, True, False),
    ("192.169.0.1", set(), True, True),
    ("2001:db8::1", {"rfc3849"}, False, False),  # 2001:0db8 is outside Teredo's 2001:0000
    ("169.254.1.1", {"rfc3927"}, True, False),
    ("2002:c000:0204::1", {"rfc3964"}, True, True),
    ("fc00::1", {"rfc4193"}, True, False),
    ("fdff:ffff::1", {"rfc4193"}, True, False),
    ("fe00::1", set(), True, True),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", {"rfc4380"}, True, True),
    ("2001:10::1", {"rfc4843"}, True, False),
    ("2001:1f:ffff::1", {"rfc4843"}, True, False),
    ("2001:20::1", set(), True, True),
    ("fe80::1", {"rfc4862"}, True, False),
    ("fe80:0:0:1::1", set(), True, True),  # the reference uses /64, not fe80::/10
    ("64:ff9b::102:304", {"rfc6052"}, True, True),
    ("64:ff9b:1::102:304", set(), True, True),
    ("::ffff:0:102:304", {"rfc6145"}, True, True),
    ("fd87:d87e:eb43:1234::1", {"onion_cat_tor", "rfc4193"}, True, False),
    ("127.0.0.1", {"local"}, True, False),
    ("127.255.255.254", {"local"}, True, False),
    ("::1", {"local"}, True, False),
    ("0.1.2.3", {"local"}, True, False),
    ("0.0.0.0", {"local"}, False, False),
    ("::", set(), False, False),
    ("255.255.255.255", set(), False, False),
    ("2001:470::1", set(), True, True),
    ("8.8.8.8", set(), True, True),
    ("100.64.0.1", set(), True, True),  # CGNAT is not excluded by the reference
    ("224.0.0.1", set(), True, True),  # nor multicast
    ("192.0.2.1", set(), True, True),  # nor RFC5737 documentation v4
    # IPv4 values whose bits look like IPv6 prefixes never match them.
    ("32.1.13.184", set(), True, True),  # 0x20010db8
    ("254.128.0.0", set(), True, True),  # 0xfe80....
]


@pytest.mark.parametrize(("ip", "holds", "valid", "routable"), RFC_TABLE)
def test_rfc_table(ip: str, holds: set[str], valid: bool, routable: bool) -> None:
    a = addr(ip)
    got = {name for name in PREDICATES if getattr(a, name)()}
    assert got == holds
    assert a.valid() is valid
    assert a.routable() is routable


def test_invalid_id_is_neither_valid_nor_routable() -> None:
    a = addr("8.8.8.8", node_id="")
    assert not a.valid()
    assert not a.routable()


# -- group keys (behaviour.md §5.3), one per rule ----------------------------------------

GROUPS: list[tuple[str, bool, str]] = [
    # 1. strict and local
    ("127.0.0.1", True, "local"),
    ("0.1.2.3", True, "local"),
    ("::1", True, "local"),
    # 2. strict and unroutable
    ("10.1.2.3", True, "unroutable"),
    ("fe80::1", True, "unroutable"),
    ("fd87:d87e:eb43:1234::1", True, "unroutable"),  # Tor is inside RFC4193
    ("255.255.255.255", True, "unroutable"),  # invalid
    # 3. IPv4 and IPv4-mapped
    ("8.8.4.4", True, "8.8.0.0"),
    ("::ffff:8.8.4.4", True, "8.8.0.0"),
    ("10.1.2.3", False, "10.1.0.0"),
    ("127.0.0.1", False, "127.0.0.0"),
    # 4. RFC6145 and RFC6052: the last four bytes
    ("::ffff:0:1.2.3.4", True, "1.2.0.0"),
    ("64:ff9b::808:404", True, "8.8.0.0"),
    # 5. RFC3964: bytes 2..5
    ("2002:0c22:384e::1", True, "12.34.0.0"),
    # 6. Teredo: last four bytes inverted (3fff:fdd2 ^ ff.. = 192.0.2.45)
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True, "192.0.0.0"),
    # 7. OnionCat Tor (only reachable when not strict)
    ("fd87:d87e:eb43:1234::1", False, "tor:2"),
    ("fd87:d87e:eb43:ff00::1", False, "tor:15"),
    # 8. he.net at /36
    ("2001:470:abcd:1234::1", True, "2001:470:a000::"),
    # 9. other IPv6 at /32
    ("2a01:4f8:1:2::1", True, "2a01:4f8::"),
    ("::1", False, "::"),
    ("fe80::1", False, "fe80::"),
]


@pytest.mark.parametrize(("ip", "strict", "group"), GROUPS)
def test_group_key(ip: str, strict: bool, group: str) -> None:
    assert addr(ip).group_key(strict) == group


# -- properties ----------------------------------------------------------------------------

node_ids = st.binary(min_size=20, max_size=20).map(lambda b: NodeID(b.hex()))
ips = st.ip_addresses()
ports = st.integers(min_value=0, max_value=65535)


@given(node_ids, ips, ports)
def test_print_parse_round_trip(node_id: NodeID, ip: Any, port: int) -> None:
    a = NetAddress(node_id, ip, port)
    assert NetAddress.parse(str(a), resolve=False) == a
    assert NetAddress.parse("tcp://" + str(a), resolve=False) == a


@given(node_ids, ips, ports)
def test_proto_round_trip(node_id: NodeID, ip: Any, port: int) -> None:
    a = NetAddress(node_id, ip, port)
    wire = a.to_proto().SerializeToString()
    assert NetAddress.from_proto(types_pb2.NetAddress.FromString(wire)) == a


@given(node_ids, ips, ports, st.booleans())
def test_group_key_is_total(node_id: NodeID, ip: Any, port: int, strict: bool) -> None:
    key = NetAddress(node_id, ip, port).group_key(strict)
    assert key


@given(st.text(max_size=80))
def test_parse_only_raises_netaddress_error(s: str) -> None:
    with contextlib.suppress(NetAddressError):
        NetAddress.parse(s, resolve=False)


@given(
    st.sampled_from(["", "tcp://", "a://b://"]),
    st.text("0123456789abcdefABCDEF@[]:.%", max_size=60),
)
def test_parse_near_miss_only_raises_netaddress_error(prefix: str, s: str) -> None:
    with contextlib.suppress(NetAddressError):
        a = NetAddress.parse(f"{prefix}{ID}@{s}", resolve=False)
        assert NetAddress.parse(str(a), resolve=False) == a
