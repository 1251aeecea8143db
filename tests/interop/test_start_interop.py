"""``cometp2p start`` as a real process against real CometBFT v0.38.25 nodes on loopback.

What a user runs: ``python -m cometp2p start`` with a home made by ``cometp2p init``, by
``cometbft init`` or written with :mod:`cometp2p.config`, next to ``cometbft start`` nodes
(wire.md §10, §12; behaviour.md §1.5-§1.8, §4). Every wait polls a log file, RPC or a
metrics endpoint with a deadline; every process is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Protocol

import pytest

from cometp2p.cli.localnet import scrape
from cometp2p.config import Config, InstrumentationConfig, P2PConfig, write_config
from cometp2p.crypto.keys import NodeKey, save_node_key
from cometp2p.fileio import atomic_write_bytes
from interop.cometbft import LOOPBACK, CometBFTNode, JSONObject, free_port, free_ports, poll_until
from interop.conftest import NodeFactory

pytestmark = pytest.mark.interop

CHAIN_ID: Final = "cometp2p-start-interop"
OUR_MONIKER: Final = "cometp2p-start"

START_TIMEOUT_S: Final = 30.0
"""Bound for our process to log that it listens (interpreter start and imports included)."""
PEER_TIMEOUT_S: Final = 30.0
"""Bound for a connection to show up in /net_info: a Go node dials its persistent peers
after a random wait of up to 3 s, and retries after about 5 s."""
STOP_TIMEOUT_S: Final = 10.0
CLI_TIMEOUT_S: Final = 30.0


def _env() -> dict[str, str]:
    # The home always comes from --home: $COMETP2P_HOME from the environment must not leak in.
    return {k: v for k, v in os.environ.items() if k != "COMETP2P_HOME"}


def cometp2p_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cometp2p <args>`` to completion, within :data:`CLI_TIMEOUT_S`."""
    return subprocess.run(
        [sys.executable, "-m", "cometp2p", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


class StartProcess:
    """One ``python -m cometp2p start`` process, its stdout and stderr in ``log_path``."""

    def __init__(self, args: tuple[str, ...], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cometp2p", "start", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
                start_new_session=True,  # a terminal's Ctrl-C is for pytest; we stop it
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until ``text`` appears in the log.

        Raises:
            AssertionError: the process exited first, or ``timeout_s`` passed (with the
                log's tail either way).
        """

        def probe() -> bool | None:
            if text in self.log_text():
                return True
            if self.process.poll() is not None:
                raise AssertionError(
                    f"cometp2p start exited ({self.process.returncode}) before logging "
                    f"{text!r}:\n{self.log_tail()}"
                )
            return None

        try:
            poll_until(probe, timeout_s=timeout_s, what=f"{text!r} in {self.log_path.name}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait up to ``timeout_s``; return the exit status.

        Raises:
            AssertionError: it did not exit in time (it is killed first).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"cometp2p start ignored SIGTERM for {timeout_s} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_S)


class StartFactory(Protocol):
    def __call__(self, *args: str) -> StartProcess: ...


@pytest.fixture
def cometp2p_start(tmp_path: Path) -> Iterator[StartFactory]:
    """``cometp2p_start("--home", ...)`` spawns ``cometp2p start``; all are stopped at the
    end (SIGTERM, then SIGKILL after a bound), even when the test fails, and a failing
    test's report shows their logs' tails."""
    started: list[StartProcess] = []

    def start(*args: str) -> StartProcess:
        process = StartProcess(args, tmp_path / f"cometp2p-start-{len(started)}.log")
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            with contextlib.suppress(AssertionError):  # killed; the log below says why
                process.terminate()
            # pytest shows captured output for failing tests only.
            print(f"cometp2p start {' '.join(process.args)}\n{process.log_tail()}")


def wait_for_go_peer(node: CometBFTNode, node_id: str) -> JSONObject:
    """The Go node's /net_info entry for ``node_id``, once it appears."""

    def probe() -> JSONObject | None:
        return next((p for p in node.peers() if p["node_info"]["id"] == node_id), None)

    return poll_until(probe, timeout_s=PEER_TIMEOUT_S, what=f"{node_id} in {node!r} /net_info")


def wait_for_go_log(node: CometBFTNode, text: str) -> None:
    poll_until(
        lambda: True if text in node.log_text() else None,
        timeout_s=PEER_TIMEOUT_S,
        what=f"{text!r} in {node!r} log",
    )


def started_line(node_id: str, port: int, network: str) -> str:
    """What ``cometp2p start`` logs once its Switch listens (cometp2p.node)."""
    return f"node {node_id} started on tcp://{LOOPBACK}:{port} (network {network})"


def cometbft_home(binary: Path, home: Path, moniker: str) -> CometBFTNode:
    """A home made by ``cometbft init``, configured for loopback on a free P2P port (it is
    never started as cometbft: ``cometp2p start`` runs it)."""
    return CometBFTNode.init(binary, home, moniker=moniker)


# -- 1: cometbft as our persistent peer -----------------------------------------------------


def test_start_dials_its_cometbft_persistent_peer_and_stops_cleanly_on_sigterm(
    cometbft_node: NodeFactory, cometp2p_start: StartFactory, tmp_path: Path
) -> None:
    go = cometbft_node(moniker="go-node", chain_id=CHAIN_ID)
    home = tmp_path / "ours"
    init = cometp2p_cli("init", "--home", str(home))
    assert init.returncode == 0, init.stderr
    shown = cometp2p_cli("show-node-id", "--home", str(home))
    assert shown.returncode == 0, shown.stderr
    node_id = shown.stdout.strip()
    assert f"Node ID              {node_id}" in init.stdout
    assert not (home / "config" / "genesis.json").exists()  # so --chain-id is the network
    port = free_port()

    ours = cometp2p_start(
        "--home", str(home),
        "--chain-id", CHAIN_ID,
        "--p2p.laddr", f"tcp://{LOOPBACK}:{port}",
        "--p2p.persistent_peers", go.p2p_address,
        "--moniker", OUR_MONIKER,
    )  # fmt: skip
    ours.wait_for_log(started_line(node_id, port, CHAIN_ID))

    theirs = wait_for_go_peer(go, node_id)
    info = theirs["node_info"]
    assert info["moniker"] == OUR_MONIKER
    assert info["network"] == CHAIN_ID
    assert info["listen_addr"] == f"tcp://{LOOPBACK}:{port}"
    assert theirs["is_outbound"] is False  # we dialed it
    assert "Stopping peer for error" not in go.log_text()

    assert ours.terminate() == 0, ours.log_tail()
    log = ours.log_text()
    assert f"node {node_id} stopped" in log
    assert "Traceback" not in log
    poll_until(
        lambda: True if node_id not in go.peer_ids() else None,
        timeout_s=PEER_TIMEOUT_S,
        what=f"{go!r} to drop {node_id}",
    )


# -- 2: a home made by cometbft init --------------------------------------------------------


def test_start_on_a_cometbft_home_uses_its_node_key_and_genesis_chain_id(
    cometbft_binary: Path,
    cometbft_node: NodeFactory,
    cometp2p_start: StartFactory,
    tmp_path: Path,
) -> None:
    home = cometbft_home(cometbft_binary, tmp_path / "cometbft-made", "from-cometbft-init")
    node_id = home.show_node_id()  # cometbft's reading of the home's node_key.json
    go = cometbft_node(
        moniker="go-node", chain_id=CHAIN_ID, start=False, persistent_peers=[home.p2p_address]
    )
    atomic_write_bytes(home.genesis_path, go.genesis_path.read_bytes())
    assert home.chain_id == CHAIN_ID

    # No --chain-id, no --p2p.laddr, no --moniker: all from the home.
    ours = cometp2p_start("--home", str(home.home))
    ours.wait_for_log(started_line(node_id, home.p2p_port, CHAIN_ID))
    go.start()

    # The Go node dials <cometbft's ID>@<the home's port>: the handshake proves our key is
    # that ID (a mismatch is refused), the NodeInfo check that our network is the genesis one.
    theirs = wait_for_go_peer(go, node_id)
    assert theirs["is_outbound"] is True
    assert theirs["node_info"]["network"] == CHAIN_ID
    assert theirs["node_info"]["moniker"] == "from-cometbft-init"
    assert theirs["node_info"]["listen_addr"] == f"tcp://{LOOPBACK}:{home.p2p_port}"
    assert "rejected" not in ours.log_text()
    assert ours.terminate() == 0, ours.log_tail()


def test_start_on_a_cometbft_home_with_another_genesis_chain_is_refused(
    cometbft_binary: Path,
    cometbft_node: NodeFactory,
    cometp2p_start: StartFactory,
    tmp_path: Path,
) -> None:
    home = cometbft_home(cometbft_binary, tmp_path / "cometbft-made", "from-cometbft-init")
    home.set_chain_id("another-chain")
    node_id = home.show_node_id()
    go = cometbft_node(
        moniker="go-node", chain_id=CHAIN_ID, start=False, persistent_peers=[home.p2p_address]
    )

    ours = cometp2p_start("--home", str(home.home))
    ours.wait_for_log(started_line(node_id, home.p2p_port, "another-chain"))
    go.start()

    # Both sides refuse the link, each naming both networks.
    ours.wait_for_log(
        f"peer {go.node_id} rejected (incompatible): different network: "
        f"expected network 'another-chain', peer is on '{CHAIN_ID}'",
        timeout_s=PEER_TIMEOUT_S,
    )
    wait_for_go_log(go, f"peer is on a different network. Got another-chain, expected {CHAIN_ID}")
    assert node_id not in go.peer_ids()


def test_start_refuses_a_chain_id_flag_that_disagrees_with_genesis(
    cometbft_binary: Path, tmp_path: Path
) -> None:
    home = cometbft_home(cometbft_binary, tmp_path / "cometbft-made", "from-cometbft-init")
    genesis_chain = home.chain_id
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "cometp2p", "start", "--home", str(home.home),
         "--chain-id", "not-the-genesis-chain", "--p2p.laddr", f"tcp://{LOOPBACK}:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    ) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
        finally:
            if process.poll() is None:  # it would be running: the assertion below says so
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
    assert process.returncode == 1, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    assert "'not-the-genesis-chain'" in lines[0]
    assert f"'{genesis_chain}'" in lines[0]
    assert str(home.genesis_path) in lines[0]


# -- 3: seed mode ---------------------------------------------------------------------------


def test_start_in_seed_mode_introduces_one_cometbft_node_to_another(
    cometbft_node: NodeFactory, cometp2p_start: StartFactory, tmp_path: Path
) -> None:
    home = tmp_path / "seed"
    p2p_port, metrics_port = free_ports(2)
    key = NodeKey.generate()
    write_config(
        Config(
            home=home,
            moniker="cometp2p-seed",
            p2p=P2PConfig(
                laddr=f"tcp://{LOOPBACK}:{p2p_port}",
                addr_book_strict=False,  # every address here is 127.0.0.1
                allow_duplicate_ip=True,
            ),
            instrumentation=InstrumentationConfig(
                prometheus=True, prometheus_listen_addr=f"{LOOPBACK}:{metrics_port}"
            ),
        )
    )
    save_node_key(key, home / "config" / "node_key.json")
    seed_address = f"{key.node_id}@{LOOPBACK}:{p2p_port}"

    ours = cometp2p_start("--home", str(home), "--chain-id", CHAIN_ID, "--p2p.seed_mode", "true")
    ours.wait_for_log(started_line(key.node_id, p2p_port, CHAIN_ID))

    # B knows only us: it dials us for addresses, and so we learn its listen address.
    b = cometbft_node(moniker="go-b", chain_id=CHAIN_ID, seeds=[seed_address])
    poll_until(
        lambda: True if scrape(metrics_port).get("cometbft_p2p_addrbook_size", 0) >= 1 else None,
        timeout_s=PEER_TIMEOUT_S,
        what="B's address in our seed's address book",
    )
    # A knows only us too: our answer to its request names B, which A then dials (or B,
    # asking us again, hears of A first and dials it). Either way the one that dialed
    # learnt the other's address from us: its only configured contact is our seed.
    a = cometbft_node(moniker="go-a", chain_id=CHAIN_ID, seeds=[seed_address])
    theirs = wait_for_go_peer(a, b.node_id)
    assert theirs["node_info"]["moniker"] == "go-b"
    mine = wait_for_go_peer(b, a.node_id)
    assert mine["is_outbound"] is not theirs["is_outbound"]
    for node in (a, b):
        p2p = node.config()["p2p"]
        assert (p2p["seeds"], p2p["persistent_peers"]) == (seed_address, "")
    assert ours.terminate() == 0, ours.log_tail()
