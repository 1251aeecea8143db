"""Fixtures for interop tests: a cached cometbft binary, node factories, the Go harness.

Nodes and harness processes are always stopped at teardown, even when a test fails; a
failing test's report gets a section with the tails of their logs.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from interop.cometbft import (
    BUILD_TIMEOUT_S as COMETBFT_BUILD_TIMEOUT_S,
)
from interop.cometbft import (
    CometBFTNode,
    ensure_cometbft_binary,
    make_testnet,
)
from interop.goharness import BUILD_TIMEOUT_S as GOHARNESS_BUILD_TIMEOUT_S
from interop.goharness import GoHarness, ensure_goharness_binary
from interop.tendermint import BUILD_TIMEOUT_S as TENDERMINT_BUILD_TIMEOUT_S
from interop.tendermint import TENDERMINT_V034, TENDERMINT_V035, ensure_tendermint_binary

# Session fixtures that may build for minutes on a fresh machine, and how long they may take.
_BUILD_FIXTURES = {
    "cometbft_binary": COMETBFT_BUILD_TIMEOUT_S,
    "goharness_binary": GOHARNESS_BUILD_TIMEOUT_S,
    "tendermint_v034_binary": TENDERMINT_BUILD_TIMEOUT_S,
    "tendermint_v035_binary": TENDERMINT_BUILD_TIMEOUT_S,
}

# Everything started by the fixtures and not yet stopped, for failure reports.
_LIVE_NODES: list[CometBFTNode] = []
_LIVE_HARNESSES: list[GoHarness] = []


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first test that sets up each build fixture room for the build.

    Session fixtures run inside the first test that needs them, under that test's
    pytest-timeout; a cold ``go install`` can take far longer than a test should.
    """
    default_timeout = float(config.getini("timeout") or 0)
    for fixture_name, build_timeout_s in _BUILD_FIXTURES.items():
        for item in items:
            if fixture_name in getattr(item, "fixturenames", ()):
                marker = item.get_closest_marker("timeout")
                current = float(marker.args[0]) if marker and marker.args else default_timeout
                item.add_marker(pytest.mark.timeout(current + build_timeout_s))
                break


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and (_LIVE_NODES or _LIVE_HARNESSES):
        parts = [f"{node!r} log {node.log_path}:\n{node.log_tail(30)}" for node in _LIVE_NODES]
        parts += [
            f"goharness {' '.join(h.argv[1:])}\nlast events: {h.events[-10:]}\n"
            f"stderr {h.log_path}:\n{h.stderr_tail(20)}"
            for h in _LIVE_HARNESSES
        ]
        report.sections.append(("interop processes", "\n\n".join(parts)))
    return report


@pytest.fixture(scope="session")
def cometbft_binary() -> Path:
    """The pinned cometbft binary, built into the user cache on first use."""
    return ensure_cometbft_binary()


@pytest.fixture(scope="session")
def tendermint_v034_binary() -> Path:
    """tendermint v0.34.24, built into the user cache on first use (interop.tendermint)."""
    return ensure_tendermint_binary(TENDERMINT_V034)


@pytest.fixture(scope="session")
def tendermint_v035_binary() -> Path:
    """tendermint v0.35.9, built into the user cache on first use (interop.tendermint)."""
    return ensure_tendermint_binary(TENDERMINT_V035)


@pytest.fixture(scope="session")
def goharness_binary() -> Path:
    """The Go harness binary, rebuilt whenever its sources change."""
    return ensure_goharness_binary()


class NodeFactory:
    """Creates (and at :meth:`close`, stops) CometBFT nodes under one temporary directory."""

    def __init__(self, binary: Path, base_dir: Path) -> None:
        self.binary = binary
        self.base_dir = base_dir
        self.nodes: list[CometBFTNode] = []
        self._names = itertools.count()

    def __call__(
        self,
        *,
        moniker: str = "cometbft",
        chain_id: str | None = None,
        start: bool = True,
        start_args: tuple[str, ...] = (),
        **options: Any,
    ) -> CometBFTNode:
        """Init (and by default start) one node; ``options`` go to ``configure``."""
        home = self.base_dir / f"{moniker}-{next(self._names)}"
        node = CometBFTNode.init(self.binary, home, moniker=moniker, chain_id=chain_id, **options)
        self._track(node)
        if start:
            node.start(*start_args)
        return node

    def testnet(self, validators: int, *, start: bool = True, **options: Any) -> list[CometBFTNode]:
        """A ``validators``-node loopback testnet (see ``make_testnet``), started by default."""
        out_dir = self.base_dir / f"testnet-{next(self._names)}"
        nodes = make_testnet(self.binary, out_dir, validators, **options)
        for node in nodes:
            self._track(node)
        if start:
            for node in nodes:
                node.start(wait=False)
            for node in nodes:
                node.wait_ready()
        return nodes

    def _track(self, node: CometBFTNode) -> None:
        self.nodes.append(node)
        _LIVE_NODES.append(node)

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a bound), even if one stop fails."""
        errors: list[Exception] = []
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # keep stopping the others; re-raised below
                errors.append(exc)
            _LIVE_NODES.remove(node)
        self.nodes.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def cometbft_node(cometbft_binary: Path, tmp_path: Path) -> Iterator[NodeFactory]:
    """Factory of CometBFT nodes stopped at the end of the test.

    ``cometbft_node(moniker=..., chain_id=..., start=True, **configure_options)`` returns
    a started :class:`CometBFTNode`; ``cometbft_node.testnet(n)`` returns n connected ones.
    """
    factory = NodeFactory(cometbft_binary, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def cometbft_node_module(
    cometbft_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeFactory]:
    """Like ``cometbft_node``, but its nodes live until the end of the test module."""
    factory = NodeFactory(cometbft_binary, tmp_path_factory.mktemp("cometbft"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def make_testnet_nodes(cometbft_node: NodeFactory) -> Callable[..., list[CometBFTNode]]:
    """``make_testnet_nodes(n, **configure_options)``: n started, connected loopback nodes."""
    return cometbft_node.testnet


class StartHarness(Protocol):
    def __call__(self, subcommand: str, *args: str) -> Awaitable[GoHarness]: ...


@pytest.fixture
async def goharness(goharness_binary: Path, tmp_path: Path) -> AsyncIterator[StartHarness]:
    """``await goharness("mconn-echo", "--listen", "127.0.0.1:0")`` starts a harness process.

    Every process started is closed (stdin closed, then killed after a bound) at teardown.
    """
    started: list[GoHarness] = []
    counter = itertools.count()

    async def start(subcommand: str, *args: str) -> GoHarness:
        log_path = tmp_path / f"goharness-{subcommand}-{next(counter)}.stderr"
        harness = await GoHarness.start(goharness_binary, subcommand, *args, log_path=log_path)
        started.append(harness)
        _LIVE_HARNESSES.append(harness)
        return harness

    try:
        yield start
    finally:
        errors: list[Exception] = []
        for harness in started:
            try:
                await harness.aclose()
            except Exception as exc:  # keep closing the others; re-raised below
                errors.append(exc)
            _LIVE_HARNESSES.remove(harness)
        if errors:
            raise errors[0]
