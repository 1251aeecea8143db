"""cometp2p.aio.resolve: DNS on the event loop, opt-in (NetAddress.parse does none)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import pytest

from cometp2p.aio.resolve import resolve_address, resolve_addresses
from cometp2p.errors import NetAddressError, NetAddressLookupError
from cometp2p.wire.netaddress import NetAddress

ID = "ab" * 20


class _FakeLoop:
    """Answers in place of the event loop's getaddrinfo; records the names asked for."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def lookup(self, host: str) -> list[object]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in self.answers[host]]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> _FakeLoop:
    fake = _FakeLoop({"seed.example": ["fe80::1%eth0", "1.2.3.4"], "empty.example": []})

    async def getaddrinfo(_loop: object, host: str, *_: object, **__: object) -> list[object]:
        return fake.lookup(host)

    # Every loop's getaddrinfo (the one resolve_address must use) answers from `fake`.
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", None)  # any blocking lookup would crash
    return fake


async def test_names_resolve_through_the_loop(fake_dns: _FakeLoop) -> None:
    address = await resolve_address(f"tcp://{ID}@seed.example:26656")
    assert address == NetAddress(ID, ipaddress.ip_address("fe80::1"), 26656)  # type: ignore[arg-type]
    assert fake_dns.asked == ["seed.example"]


async def test_literals_and_addresses_need_no_lookup(fake_dns: _FakeLoop) -> None:
    literal = await resolve_address(f"{ID}@127.0.0.1:1")
    assert await resolve_address(literal) is literal
    assert fake_dns.asked == []


async def test_lookup_failures_are_typed(fake_dns: _FakeLoop) -> None:
    with pytest.raises(NetAddressLookupError, match="nowhere"):
        await resolve_address(f"{ID}@nowhere.example:1")
    with pytest.raises(NetAddressLookupError, match="no IP"):
        await resolve_address(f"{ID}@empty.example:1")


async def test_many_skip_unresolvable_and_refuse_malformed(
    fake_dns: _FakeLoop, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test-resolve")
    with caplog.at_level(logging.WARNING, logger="test-resolve"):
        found = await resolve_addresses(
            [f"{ID}@nowhere.example:1", f"{ID}@seed.example:2"], "persistent_peers", log
        )
    assert [a.port for a in found] == [2]
    assert "nowhere.example" in caplog.text
    with pytest.raises(NetAddressError):
        await resolve_addresses([f"{ID}@seed.example:2", "no-id:1"], "persistent_peers", log)
    assert fake_dns.asked == ["nowhere.example", "seed.example"]  # nothing for the bad list
