"""Suite-wide test policy.

* ``interop`` tests (marker declared in pyproject.toml) are skipped, with the reason,
  when ``go`` is not on PATH: they need it to build CometBFT and the Go harness.
* Under ``CI=true`` a skipped ``interop`` test is a failure: interop is mandatory in CI.
  So is a skipped ``gateway`` test (a real UPnP gateway in network namespaces; it skips
  elsewhere when the machine cannot run one, e.g. not root), and a skipped ``browser``
  test (the network map in chromium; ``.ci/run`` installs it).
* A run in which no test actually executed fails, so a broken selection or a suite that
  skips everything cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator

import pytest

pytest_plugins = ("pytester",)  # tests of this policy run pytest inside pytest


class _ExecutedCounter:
    """Counts tests whose body ran (a call phase that was not a skip)."""

    def __init__(self) -> None:
        self.count = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and not report.skipped:
            self.count += 1


_COUNTER = pytest.StashKey[_ExecutedCounter]()


# Markers whose tests must run in CI: a skip of one of them fails under CI=true.
_MANDATORY_IN_CI = ("interop", "gateway", "browser")


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def pytest_configure(config: pytest.Config) -> None:
    counter = _ExecutedCounter()
    config.stash[_COUNTER] = counter
    config.pluginmanager.register(counter, "cometp2p-executed-counter")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which("go") is not None:
        return
    skip = pytest.mark.skip(
        reason="go is not on PATH: interop tests need Go to build cometbft and the Go harness"
    )
    for item in items:
        if item.get_closest_marker("interop") is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and _in_ci()
        and any(item.get_closest_marker(name) is not None for name in _MANDATORY_IN_CI)
    ):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        kind = next(name for name in _MANDATORY_IN_CI if item.get_closest_marker(name))
        report.longrepr = f"{kind} test skipped under CI=true (skips fail in CI): {reason}"
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.option.collectonly:
        return
    if session.config.stash[_COUNTER].count == 0 and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if not config.option.collectonly and config.stash[_COUNTER].count == 0:
        terminalreporter.write_line(
            "FAILED: no test was executed (all skipped or deselected)", red=True, bold=True
        )
