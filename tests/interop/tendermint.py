"""Real Tendermint v0.34 and v0.35 nodes on loopback, for interop tests (behaviour.md §9).

One responsibility: build (once, cached), configure and query ``tendermint`` processes of
the pinned versions :data:`TENDERMINT_V034` and :data:`TENDERMINT_V035`. Starting, stopping
and RPC are :class:`~interop.cometbft.CometBFTNode`'s; the differences are here:

* the build: the module proxy serves ``go mod download`` of tendermint but not its version
  list, so ``go install ...@version`` is refused; the module directory is copied to a
  writable place and built there with ``GOFLAGS=-mod=mod go build ./cmd/tendermint``;
* v0.35's ``config.toml`` keys are hyphenated (``persistent-peers``, ``addr-book-strict``,
  ...), its ``start`` flag is ``--proxy-app`` and its ``/net_info`` lists peers as
  ``{node_id, url}`` (v0.34 is CometBFT v0.38's layout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cometp2p.crypto.keys import load_node_key
from cometp2p.fileio import atomic_write_bytes
from interop.cometbft import (
    LOOPBACK,
    CometBFTError,
    CometBFTNode,
    JSONObject,
    _run_cli,
    cache_root,
    file_lock,
    free_ports,
)

__all__ = [
    "TENDERMINT_MODULE",
    "TENDERMINT_V034",
    "TENDERMINT_V035",
    "Tendermint034Node",
    "Tendermint035Node",
    "ensure_tendermint_binary",
    "make_tendermint_testnet",
]

TENDERMINT_MODULE: Final = "github.com/tendermint/tendermint"
TENDERMINT_V034: Final = "0.34.24"
TENDERMINT_V035: Final = "0.35.9"

BUILD_TIMEOUT_S: Final = 900.0
"""Upper bound for downloading and building one tendermint version on a fresh machine."""

_STAMP: Final = "module-version"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise CometBFTError("go is not on PATH: cannot build tendermint")
    return go


def _run_go(
    args: Sequence[str], *, cwd: Path | None, timeout_s: float, env: Mapping[str, str]
) -> str:
    try:
        done = subprocess.run(
            [_go(), *args],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CometBFTError(f"go {' '.join(args)} took more than {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        raise CometBFTError(f"go {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def _usable(binary: Path, version: str) -> bool:
    stamp = binary.parent / _STAMP
    if not binary.is_file() or not stamp.is_file() or stamp.read_text().strip() != version:
        return False
    try:
        done = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # v0.35.9 reports itself as 0.35.8 (its version constant was not bumped): compare minors.
    minor = ".".join(version.split(".")[:2])
    return done.returncode == 0 and done.stdout.strip().startswith(minor + ".")


def ensure_tendermint_binary(version: str, timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Return a ``tendermint`` binary of module version ``version`` (e.g. ``"0.35.9"``).

    Cached as ``<cache>/bin/tendermint-v<version>/tendermint`` with a stamp file; built
    under a file lock from a writable copy of the ``go mod download`` directory, within
    ``timeout_s`` seconds in all.

    Raises:
        CometBFTError: if ``go`` is missing, or the download or build fails or times out.
        TimeoutError: if another process holds the build lock for longer than ``timeout_s``.
    """
    bin_dir = cache_root() / "bin" / f"tendermint-v{version}"
    binary = bin_dir / "tendermint"
    if _usable(binary, version):
        return binary
    env = {k: v for k, v in os.environ.items() if k not in ("GOFLAGS", "GOWORK")}
    with file_lock(bin_dir.parent / f"tendermint-v{version}.lock", timeout_s):
        if _usable(binary, version):  # another session built it meanwhile
            return binary
        info = json.loads(
            _run_go(
                ["mod", "download", "-json", f"{TENDERMINT_MODULE}@v{version}"],
                cwd=None,
                timeout_s=timeout_s,
                env=env,
            )
        )
        module_dir = Path(info["Dir"])
        bin_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"tendermint-{version}-") as tmp:
            source = Path(tmp) / "src"
            shutil.copytree(module_dir, source)
            for path in [source, *source.rglob("*")]:  # the module cache is read-only
                path.chmod(path.stat().st_mode | 0o200)
            built = Path(tmp) / "tendermint"
            _run_go(
                ["build", "-o", str(built), "./cmd/tendermint"],
                cwd=source,
                timeout_s=timeout_s,
                env={**env, "GOFLAGS": "-mod=mod"},
            )
            shutil.move(built, binary)
        atomic_write_bytes(bin_dir / _STAMP, version.encode())
    if not _usable(binary, version):
        raise CometBFTError(f"{binary} does not run as tendermint {version}")
    return binary


class Tendermint034Node(CometBFTNode):
    """A tendermint v0.34 node: CometBFT v0.38's config keys, CLI and ``/net_info``."""

    @property
    def node_id(self) -> str:
        """The node ID, from ``node_key.json``."""
        return load_node_key(self.node_key_path).node_id


class Tendermint035Node(CometBFTNode):
    """A tendermint v0.35 node: hyphenated config keys, ``{node_id, url}`` peers."""

    start_args = ("--proxy-app=kvstore",)
    config_key_separator = "-"
    seeds_key = "bootstrap-peers"

    @property
    def node_id(self) -> str:
        """The node ID, from ``node_key.json``."""
        return load_node_key(self.node_key_path).node_id

    def peer_ids(self) -> set[str]:
        """``/net_info`` peer IDs (v0.35 lists ``{node_id, url}``)."""
        return {str(peer["node_id"]) for peer in self.peers()}

    def peer_urls(self) -> set[str]:
        """``/net_info`` peer URLs, ``mconn://id@host:port``."""
        return {str(peer["url"]) for peer in self.peers()}


def node_class(version: str) -> type[CometBFTNode]:
    """The node class for a tendermint module version."""
    return Tendermint035Node if version.startswith("0.35.") else Tendermint034Node


def make_tendermint_testnet(
    binary: Path,
    version: str,
    out_dir: Path,
    validators: int,
    *,
    moniker_prefix: str = "node",
    chain_id: str | None = None,
    **options: Any,
) -> list[CometBFTNode]:
    """A ``validators``-node tendermint testnet on 127.0.0.1, each node with its own ports.

    ``tendermint testnet --v N --o out_dir --starting-ip-address 127.0.0.1``, then each
    config rewritten (distinct ports, every other node as persistent peer). Nothing is
    started.

    Args:
        binary: the tendermint executable of ``version``.
        version: its module version (selects the config dialect).
        out_dir: an empty or missing directory.
        validators: number of nodes (all validators).
        moniker_prefix: monikers are ``<prefix>0`` ... ``<prefix>N-1``.
        chain_id: replaces the generated chain ID when given.
        **options: passed to ``configure`` for every node.
    """
    # --home: never read a config.toml another run left in ~/.tendermint.
    _run_cli(
        binary,
        "--home",
        str(out_dir / ".cli-home"),
        "testnet",
        "--v",
        str(validators),
        "--o",
        str(out_dir),
        "--starting-ip-address",
        LOOPBACK,
    )
    cls = node_class(version)
    ports = free_ports(2 * validators)
    nodes = [
        cls(binary, out_dir / f"node{i}", p2p_port=ports[2 * i], rpc_port=ports[2 * i + 1])
        for i in range(validators)
    ]
    for i, node in enumerate(nodes):
        if chain_id is not None:
            node.set_chain_id(chain_id)
        others = [peer.p2p_address for peer in nodes if peer is not node]
        node.configure(moniker=f"{moniker_prefix}{i}", persistent_peers=others, **options)
    return nodes


def net_info_addresses(node: CometBFTNode) -> dict[str, JSONObject]:
    """``/net_info`` peers by node ID, whatever the version's layout."""
    result: dict[str, JSONObject] = {}
    for peer in node.peers():
        node_id = str(peer["node_id"]) if "node_id" in peer else str(peer["node_info"]["id"])
        result[node_id] = peer
    return result
