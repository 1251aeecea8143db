"""Real CometBFT nodes on loopback, for interop tests (wire.md §12, behaviour.md §10).

One responsibility: build (once, cached), configure, start, query and stop
``cometbft`` processes bound to 127.0.0.1 with ephemeral ports. The version is pinned
in :data:`COMETBFT_VERSION` and nowhere else.

Everything that waits is bounded. Polling is used only where there is no event to wait
on (an external process becoming ready, a peer count changing), with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import tomli_w

from cometp2p.fileio import atomic_write_bytes

__all__ = [
    "COMETBFT_MODULE",
    "COMETBFT_VERSION",
    "LOOPBACK",
    "CometBFTError",
    "CometBFTNode",
    "JSONObject",
    "cache_root",
    "ensure_cometbft_binary",
    "file_lock",
    "free_port",
    "free_ports",
    "make_testnet",
    "poll_until",
]

COMETBFT_VERSION: Final = "0.38.25"
"""The one pinned CometBFT version every interop test runs against."""

COMETBFT_MODULE: Final = "github.com/cometbft/cometbft"
"""Go module path of CometBFT (wire.md §12.1)."""

LOOPBACK: Final = "127.0.0.1"

BUILD_TIMEOUT_S: Final = 900.0
"""Upper bound for ``go install`` of cometbft on a fresh machine (module download + build)."""

READY_TIMEOUT_S: Final = 60.0
"""Upper bound for a started node to answer ``/status``."""

STOP_TIMEOUT_S: Final = 10.0
"""How long SIGTERM gets before SIGKILL."""

_POLL_INTERVAL_S: Final = 0.1
_RPC_TIMEOUT_S: Final = 10.0
_CLI_TIMEOUT_S: Final = 60.0

JSONObject = dict[str, Any]
"""A decoded JSON object from an external process (its shape is CometBFT's, not ours)."""

T = TypeVar("T")

# Requests go straight to 127.0.0.1: never through an http_proxy from the environment.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CometBFTError(Exception):
    """A cometbft process or its RPC did not behave as the test infrastructure expects."""


def cache_root() -> Path:
    """The cache shared by test runs: ``$XDG_CACHE_HOME/cometp2p`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cometp2p"


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` so parallel sessions do not race.

    Raises:
        TimeoutError: if the lock is not acquired within ``timeout_s`` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"lock {path} still held after {timeout_s:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _binary_version(binary: Path) -> str | None:
    """What ``<binary> version`` prints, or None if it does not run."""
    try:
        done = subprocess.run(
            [str(binary), "version"],
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_cometbft_binary(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Return the path of a ``cometbft`` binary of :data:`COMETBFT_VERSION`.

    Reuses ``<cache>/bin/v<version>/cometbft`` when ``cometbft version`` prints the pinned
    version; otherwise builds it with ``go install <module>/cmd/cometbft@v<version>`` into
    that directory, under a file lock and within ``timeout_s`` seconds.

    Raises:
        CometBFTError: if ``go`` is missing, the build fails or times out, or the built
            binary reports another version.
    """
    bin_dir = cache_root() / "bin" / f"v{COMETBFT_VERSION}"
    binary = bin_dir / "cometbft"
    if _binary_version(binary) == COMETBFT_VERSION:
        return binary
    go = shutil.which("go")
    if go is None:
        raise CometBFTError("go is not on PATH: cannot build cometbft")
    with file_lock(bin_dir.parent / f"v{COMETBFT_VERSION}.lock", timeout_s):
        if _binary_version(binary) == COMETBFT_VERSION:  # another session built it meanwhile
            return binary
        bin_dir.mkdir(parents=True, exist_ok=True)
        target = f"{COMETBFT_MODULE}/cmd/cometbft@v{COMETBFT_VERSION}"
        env = {**os.environ, "GOBIN": str(bin_dir)}
        try:
            done = subprocess.run(
                [go, "install", target],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CometBFTError(f"go install {target} took more than {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise CometBFTError(f"go install {target} failed:\n{done.stderr[-4000:]}")
    version = _binary_version(binary)
    if version != COMETBFT_VERSION:
        raise CometBFTError(f"{binary} reports version {version!r}, expected {COMETBFT_VERSION}")
    return binary


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct ports that were free on 127.0.0.1 a moment ago.

    All sockets are bound before any is closed, so the ports are distinct. Another
    process may still take one before it is used; on loopback in tests that is rare.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """Return one port that was free on 127.0.0.1 a moment ago."""
    return free_ports(1)[0]


def poll_until(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Call ``probe`` until it returns something other than None, for at most ``timeout_s``.

    For external processes only, where there is no event to wait on.

    Raises:
        TimeoutError: naming ``what`` if the deadline passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)


def _cometbft_env() -> dict[str, str]:
    # $CMTHOME / $TMHOME would take precedence over --home in cometbft.
    return {k: v for k, v in os.environ.items() if k not in ("CMTHOME", "TMHOME")}


def _run_cli(binary: Path, *args: str) -> str:
    done = subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=_CLI_TIMEOUT_S,
        env=_cometbft_env(),
        check=False,
    )
    if done.returncode != 0:
        raise CometBFTError(f"cometbft {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


class CometBFTNode:
    """One ``cometbft`` node home on loopback, and at most one process running it.

    Create with :meth:`init` (``cometbft init``) or :func:`make_testnet`; adjust with
    :meth:`configure`; then :meth:`start` and always :meth:`stop` (fixtures do).

    Attributes:
        binary: the cometbft executable.
        home: the node's ``--home`` directory.
        p2p_port: its P2P listen port on 127.0.0.1.
        rpc_port: its RPC listen port on 127.0.0.1.
    """

    start_args: tuple[str, ...] = ("--proxy_app=kvstore",)
    """Flags ``start`` always passes (subclasses for other node versions change them)."""
    config_key_separator: str = "_"
    """How config.toml spells multi-word keys (tendermint v0.35: ``-``)."""
    seeds_key: str = "seeds"
    """The ``[p2p]`` key :meth:`configure` writes ``seeds`` to (v0.35: ``bootstrap-peers``)."""

    def __init__(self, binary: Path, home: Path, *, p2p_port: int, rpc_port: int) -> None:
        self.binary = binary
        self.home = home
        self.p2p_port = p2p_port
        self.rpc_port = rpc_port
        self.log_path = home / "cometbft.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._node_id: str | None = None
        self._rpc_ids = itertools.count(1)

    @classmethod
    def init(
        cls,
        binary: Path,
        home: Path,
        *,
        moniker: str = "cometbft",
        chain_id: str | None = None,
        **options: Any,
    ) -> CometBFTNode:
        """Run ``cometbft init --home <home>`` and configure it for loopback.

        Args:
            binary: the cometbft executable.
            home: an empty or missing directory.
            moniker: the node's moniker.
            chain_id: replaces the generated ``chain_id`` in genesis.json when given.
            **options: passed to :meth:`configure`.
        """
        _run_cli(binary, "init", "--home", str(home))
        p2p_port, rpc_port = free_ports(2)
        node = cls(binary, home, p2p_port=p2p_port, rpc_port=rpc_port)
        if chain_id is not None:
            node.set_chain_id(chain_id)
        node.configure(moniker=moniker, **options)
        return node

    # -- identity -------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.home / "config" / "config.toml"

    @property
    def genesis_path(self) -> Path:
        return self.home / "config" / "genesis.json"

    @property
    def node_key_path(self) -> Path:
        return self.home / "config" / "node_key.json"

    @property
    def node_id(self) -> str:
        """The node ID as ``cometbft show-node-id`` prints it (cached; see :meth:`show_node_id`)."""
        if self._node_id is None:
            self._node_id = self.show_node_id()
        return self._node_id

    def show_node_id(self) -> str:
        """Run ``cometbft show-node-id --home <home>`` now (no cache) and return the ID."""
        return _run_cli(self.binary, "show-node-id", "--home", str(self.home)).strip()

    @property
    def chain_id(self) -> str:
        """The ``chain_id`` of the node's genesis.json."""
        return str(json.loads(self.genesis_path.read_text())["chain_id"])

    @property
    def p2p_address(self) -> str:
        """``ID@127.0.0.1:port``, the form persistent_peers and dial_peers take."""
        return f"{self.node_id}@{LOOPBACK}:{self.p2p_port}"

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rpc_port}"

    def set_chain_id(self, chain_id: str) -> None:
        """Rewrite genesis.json with another chain ID (before the first start)."""
        genesis = json.loads(self.genesis_path.read_text())
        genesis["chain_id"] = chain_id
        atomic_write_bytes(self.genesis_path, json.dumps(genesis, indent=2).encode())

    # -- configuration --------------------------------------------------------------------

    def configure(
        self,
        *,
        moniker: str | None = None,
        persistent_peers: Sequence[str] | None = None,
        seeds: Sequence[str] | None = None,
        pex: bool | None = None,
        rpc_unsafe: bool | None = None,
        timeout_commit: str = "200ms",
        log_level: str = "info",
        overrides: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        """Rewrite config.toml for a loopback test node.

        Always: P2P and RPC bound to 127.0.0.1 on this node's ports, the built-in kvstore
        app, pprof and prometheus off, ``addr_book_strict = false``,
        ``allow_duplicate_ip = true`` (wire.md §12.2), fast blocks.

        Args:
            moniker: the node's moniker.
            persistent_peers: ``ID@host:port`` strings.
            seeds: ``ID@host:port`` strings.
            pex: enable/disable the PEX reactor.
            rpc_unsafe: enable unsafe RPC routes such as ``dial_peers``.
            timeout_commit: consensus ``timeout_commit`` (Go duration string).
            log_level: CometBFT ``log_level``.
            overrides: extra keys per section, e.g. ``{"p2p": {"max_num_inbound_peers": 2}}``;
                section ``""`` is the top level. Written as given (no key respelling).
        """
        config: dict[str, Any] = tomllib.loads(self.config_path.read_text())
        sep = self.config_key_separator

        def key(name: str) -> str:
            return name.replace("_", sep)

        p2p = config["p2p"]
        rpc = config["rpc"]
        config[key("proxy_app")] = "kvstore"
        config[key("log_level")] = log_level
        if moniker is not None:
            config["moniker"] = moniker
        rpc["laddr"] = f"tcp://{LOOPBACK}:{self.rpc_port}"
        rpc[key("pprof_laddr")] = ""
        rpc[key("grpc_laddr")] = ""
        if rpc_unsafe is not None:
            rpc["unsafe"] = rpc_unsafe
        p2p["laddr"] = f"tcp://{LOOPBACK}:{self.p2p_port}"
        p2p[key("addr_book_strict")] = False
        p2p[key("allow_duplicate_ip")] = True
        if persistent_peers is not None:
            p2p[key("persistent_peers")] = ",".join(persistent_peers)
        if seeds is not None:
            p2p[self.seeds_key] = ",".join(seeds)
        if pex is not None:
            p2p["pex"] = pex
        config["instrumentation"]["prometheus"] = False
        config["consensus"][key("timeout_commit")] = timeout_commit
        for section, values in (overrides or {}).items():
            target = config if section == "" else config.setdefault(section, {})
            target.update(values)
        atomic_write_bytes(self.config_path, tomli_w.dumps(config).encode())

    def config(self) -> JSONObject:
        """The current config.toml, parsed."""
        return tomllib.loads(self.config_path.read_text())

    # -- process --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(
        self, *extra_args: str, wait: bool = True, timeout_s: float = READY_TIMEOUT_S
    ) -> None:
        """Start ``cometbft start --home <home> --proxy_app=kvstore``, logging to ``log_path``.

        Args:
            *extra_args: more ``cometbft start`` flags.
            wait: block until ``/status`` answers (see :meth:`wait_ready`).
            timeout_s: bound for that wait.

        Raises:
            CometBFTError: if it is already running, or exits before becoming ready.
            TimeoutError: if it is not ready within ``timeout_s``.
        """
        if self.running:
            raise CometBFTError(f"node {self.home} is already running")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self.binary),
                    "start",
                    "--home",
                    str(self.home),
                    *self.start_args,
                    *extra_args,
                ],
                stdin=subprocess.DEVNULL,
                env=_cometbft_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C is for pytest; we stop the node
            )
        if wait:
            self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> JSONObject:
        """Wait until RPC ``/status`` answers; return its result.

        Raises:
            CometBFTError: if the process exits meanwhile (with the log's tail).
            TimeoutError: if it does not answer within ``timeout_s``.
        """

        def probe() -> JSONObject | None:
            if not self.running:
                raise CometBFTError(f"cometbft exited before it was ready:\n{self.log_tail()}")
            try:
                return self.rpc("status")
            except (OSError, CometBFTError):
                return None

        try:
            return poll_until(probe, timeout_s=timeout_s, what=f"{self.rpc_url}/status")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop the process: SIGTERM, then SIGKILL after ``timeout_s``. Idempotent.

        Returns:
            its exit status, or None if it was never started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=timeout_s)
        return process.returncode

    def log_text(self) -> str:
        """Everything the node logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- RPC ------------------------------------------------------------------------------

    def rpc(
        self, method: str, *, timeout_s: float = _RPC_TIMEOUT_S, **params: object
    ) -> JSONObject:
        """Call a JSON-RPC method over HTTP and return its ``result``.

        Args:
            method: e.g. ``"status"``, ``"net_info"``, ``"dial_peers"``.
            timeout_s: bound for the HTTP exchange.
            **params: the named JSON-RPC params.

        Raises:
            CometBFTError: if the node answers with a JSON-RPC error.
            OSError: if the node cannot be reached (URLError is an OSError).
        """
        return self._rpc(method, params, timeout_s)

    def _rpc(self, method: str, params: Mapping[str, object], timeout_s: float) -> JSONObject:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._rpc_ids), "method": method, "params": dict(params)}
        ).encode()
        request = urllib.request.Request(
            self.rpc_url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with _OPENER.open(request, timeout=timeout_s) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # CometBFT answers errors with 500 + a JSON body
            try:
                reply = json.loads(exc.read())
            except ValueError:
                raise CometBFTError(f"{method}: HTTP {exc.code}") from exc
        if "error" in reply:
            raise CometBFTError(f"{method}: {reply['error']}")
        result: JSONObject = reply["result"]
        return result

    async def arpc(self, method: str, **params: object) -> JSONObject:
        """:meth:`rpc` in a worker thread, for async tests."""
        return await asyncio.to_thread(self._rpc, method, params, _RPC_TIMEOUT_S)

    def peers(self) -> list[JSONObject]:
        """``/net_info`` peers."""
        peers: list[JSONObject] = self.rpc("net_info")["peers"]
        return peers

    def peer_ids(self) -> set[str]:
        return {str(peer["node_info"]["id"]) for peer in self.peers()}

    def wait_for_peers(self, count: int, timeout_s: float = 30.0) -> list[JSONObject]:
        """Wait until ``/net_info`` lists exactly ``count`` peers; return them."""

        def probe() -> list[JSONObject] | None:
            peers = self.peers()
            return peers if len(peers) == count else None

        return poll_until(probe, timeout_s=timeout_s, what=f"{count} peer(s) on {self.home.name}")

    async def await_peers(self, count: int, timeout_s: float = 30.0) -> list[JSONObject]:
        """:meth:`wait_for_peers` for async tests (polls in a worker thread)."""
        return await asyncio.to_thread(self.wait_for_peers, count, timeout_s)

    def __repr__(self) -> str:
        return f"CometBFTNode(home={self.home}, p2p={self.p2p_port}, rpc={self.rpc_port})"


def make_testnet(
    binary: Path,
    out_dir: Path,
    validators: int,
    *,
    moniker_prefix: str = "node",
    **options: Any,
) -> list[CometBFTNode]:
    """Generate a ``validators``-node testnet, every node on 127.0.0.1 with its own ports.

    Runs ``cometbft testnet --v N --o out_dir --starting-ip-address 127.0.0.1``, then
    rewrites each node's config (wire.md §12.1: the generated laddrs are 0.0.0.0 and the
    peers share one port): distinct P2P/RPC ports and ``persistent_peers`` naming every
    other node at ``ID@127.0.0.1:port``. Nothing is started.

    Args:
        binary: the cometbft executable.
        out_dir: an empty or missing directory.
        validators: number of nodes (all validators).
        moniker_prefix: monikers are ``<prefix>0`` ... ``<prefix>N-1``.
        **options: passed to :meth:`CometBFTNode.configure` for every node.
    """
    _run_cli(
        binary,
        "testnet",
        "--v",
        str(validators),
        "--o",
        str(out_dir),
        "--starting-ip-address",
        LOOPBACK,
    )
    ports = free_ports(2 * validators)
    nodes = [
        CometBFTNode(binary, out_dir / f"node{i}", p2p_port=ports[2 * i], rpc_port=ports[2 * i + 1])
        for i in range(validators)
    ]
    for i, node in enumerate(nodes):
        others = [peer.p2p_address for peer in nodes if peer is not node]
        node.configure(moniker=f"{moniker_prefix}{i}", persistent_peers=others, **options)
    return nodes
