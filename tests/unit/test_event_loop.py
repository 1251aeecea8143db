"""cometp2p.aio.loop: uvloop by default where installed, the stdlib loop otherwise or on request."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect

import pytest

from cometp2p.aio import loop

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.EVENT_LOOP_ENV, "asyncio")
    assert loop.event_loop_name() == "asyncio"
    assert loop.run(_loop_type()).startswith("asyncio")


def test_default_is_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop.EVENT_LOOP_ENV, raising=False)
    expected = "uvloop" if HAVE_UVLOOP else "asyncio"
    assert loop.event_loop_name() == expected
    assert loop.run(_loop_type()).startswith(expected)


def test_default_without_uvloop_is_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop.EVENT_LOOP_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert loop.event_loop_name() == "asyncio"


def test_auto_prefers_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.EVENT_LOOP_ENV, "auto")
    expected = "uvloop" if HAVE_UVLOOP else "asyncio"
    assert loop.event_loop_name() == expected
    assert loop.run(_loop_type()).startswith(expected)


def test_auto_without_uvloop_is_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert loop.event_loop_name("auto") == "asyncio"
    with pytest.raises(ValueError, match="not installed"):
        loop.event_loop_name("uvloop")


def test_unknown_name_is_rejected_and_the_coroutine_closed() -> None:
    coroutine = _loop_type()
    with pytest.raises(ValueError, match="must be auto"):
        loop.run(coroutine, "tokio")
    # closed, so no "never awaited" warning
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


def test_localnet_nodes_take_the_stdlib_loop_unless_one_is_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cometp2p.cli import localnet

    monkeypatch.delenv(loop.EVENT_LOOP_ENV, raising=False)
    assert localnet._node_env()[loop.EVENT_LOOP_ENV] == "asyncio"
    monkeypatch.setenv(loop.EVENT_LOOP_ENV, "uvloop")
    assert localnet._node_env()[loop.EVENT_LOOP_ENV] == "uvloop"
