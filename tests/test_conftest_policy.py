"""The suite-wide policy in tests/conftest.py: interop skips, CI strictness, zero-run failure.

Each case runs a tiny suite with pytester (in process) and a copy of our conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

INI = """
[pytest]
# Plugins the inner suites do not need (hypothesis alone costs ~1 s per run).
addopts = --strict-markers -p no:cacheprovider -p no:hypothesispytest -p no:asyncio
markers =
    interop: needs go
    gateway: needs root
    browser: needs chromium
"""

TESTS = """
import pytest

@pytest.mark.interop
def test_interop():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(INI)
    return pytester


def without_go(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = pytester.mkdir("empty-bin")
    monkeypatch.setenv("PATH", str(empty))


def test_interop_is_skipped_with_reason_when_go_is_missing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(TESTS)
    without_go(suite, monkeypatch)
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*go is not on PATH*"])


def test_interop_skip_fails_under_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(TESTS)
    without_go(suite, monkeypatch)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    # The skip happens at setup, so the failure is reported as an error there.
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*go is not on PATH*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_explicit_skip_inside_interop_test_fails_under_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.interop

        def test_needs_node():
            pytest.skip("no node today")

        @pytest.mark.xfail(reason="known gap")
        def test_known_gap():
            raise AssertionError
        """
    )
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    # The skip becomes a failure; an xfail stays an xfail.
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*no node today*"])


def test_gateway_skip_fails_under_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(
        """
        import pytest

        @pytest.fixture
        def lab():
            pytest.skip("UPnP gateway tests need root")

        @pytest.mark.gateway
        def test_gateway(lab):
            pass

        def test_plain():
            pass
        """
    )
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*gateway test skipped under CI=true*need root*"])
    monkeypatch.delenv("CI")
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)


def test_browser_skip_fails_under_ci_and_is_fine_elsewhere(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(
        """
        import pytest

        @pytest.mark.browser
        def test_map():
            pytest.skip("chromium is not installed")

        def test_plain():
            pass
        """
    )
    monkeypatch.delenv("CI", raising=False)
    suite.runpytest().assert_outcomes(passed=1, skipped=1)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*browser test skipped under CI=true*chromium is not installed*"])


def test_non_interop_skip_is_fine_under_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(
        """
        import pytest

        @pytest.mark.skip(reason="not here")
        def test_skipped():
            pass

        def test_plain():
            pass
        """
    )
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK


def test_run_with_zero_executed_tests_fails(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(
        """
        import pytest

        @pytest.mark.skip(reason="everything skipped")
        def test_skipped():
            pass
        """
    )
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest()
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no test was executed*"])


def test_collect_only_is_not_a_failure(suite: pytest.Pytester) -> None:
    suite.makepyfile(TESTS)
    result = suite.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.OK
