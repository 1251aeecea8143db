"""Fixtures for the UPnP gateway tests: a miniupnpd in namespaces the test creates.

Skipped with the reason when this machine cannot run them (not root, no ``ip netns``, no
miniupnpd); tests here are marked ``gateway``, and a skipped ``gateway`` test fails under
CI=true (tests/conftest.py). Every lab is torn down at teardown, even when a test fails;
a failing test's report gets the daemon's log tail.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from gateway.lab import GatewayLab, lab_unavailable_reason

_LIVE: list[GatewayLab] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _LIVE:
        parts = [f"{lab.prefix} miniupnpd log:\n{lab.log_tail(30)}" for lab in _LIVE]
        report.sections.append(("gateway labs", "\n\n".join(parts)))
    return report


@pytest.fixture(scope="session")
def lab_available() -> None:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def make_lab(lab_available: None, tmp_path: Path) -> Iterator[Callable[..., GatewayLab]]:
    """``make_lab(start_daemon=True)``: a started :class:`GatewayLab`, closed at teardown."""
    labs: list[GatewayLab] = []

    def make(*, start_daemon: bool = True) -> GatewayLab:
        lab = GatewayLab(tmp_path / f"lab{len(labs)}", start_daemon=start_daemon)
        labs.append(lab)
        _LIVE.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()
            _LIVE.remove(lab)


@pytest.fixture
def lab(make_lab: Callable[..., GatewayLab]) -> GatewayLab:
    """A gateway namespace running miniupnpd, and a client namespace next to it."""
    return make_lab()
