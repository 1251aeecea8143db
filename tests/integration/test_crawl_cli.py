"""``cometp2p crawl`` through click's runner and as a subprocess, against Python networks.

The network runs on this test's event loop; the command runs in a worker thread (click's
runner) or in a child process, each with its own event loop, so both sides make progress.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from cometp2p.cli.main import main
from cometp2p.crypto.keys import NodeKey
from cometp2p.testing.cli import run_cometp2p
from cometp2p.testing.network import free_loopback_port
from integration.test_crawler import CHAIN, converged_network

COMMAND_TIMEOUT_S = 60.0


def crawl_args(out: Path, home: Path, *seeds: str) -> list[str]:
    home.mkdir(parents=True, exist_ok=True)  # a --home that does not exist is an error
    return [
        "crawl",
        *seeds,
        "--out",
        str(out),
        "--home",
        str(home),
        "--timeout",
        "2",
        "--allow-net",
        "127.0.0.0/8",
    ]


async def invoke(args: Sequence[str]) -> Result:
    runner = CliRunner()
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        return await asyncio.to_thread(runner.invoke, main, list(args))


def write_genesis(home: Path, chain_id: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "genesis.json").write_text(json.dumps({"chain_id": chain_id}))


async def test_crawl_command_maps_a_python_network(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with converged_network(3) as (seed, nodes):
        result = await invoke(
            [*crawl_args(out, tmp_path / "home", str(seed.address)), "--network", CHAIN]
        )
    assert result.exit_code == 0, result.output
    assert "found 4" in result.output
    assert "reached 4" in result.output
    assert "n0" in result.output
    assert "seed" in result.output
    document = json.loads((out / "network.json").read_text())
    assert {n["id"] for n in document["nodes"]} == {seed.id, *(n.id for n in nodes)}
    assert document["network"] == CHAIN
    assert (out / "network.png").stat().st_size > 0
    assert (out / "addrbook.json").stat().st_size > 0


async def test_network_comes_from_the_homes_genesis(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_genesis(home, CHAIN)
    async with converged_network(2) as (seed, _):
        result = await invoke([*crawl_args(tmp_path / "out", home, str(seed.address)), "--no-png"])
        disagree = await invoke(
            [*crawl_args(tmp_path / "out2", home, str(seed.address)), "--network", "other"]
        )
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "network.json").read_text())
    assert document["network"] == CHAIN
    assert document["summary"]["reached"] == 3
    assert not (tmp_path / "out" / "network.png").exists()
    assert disagree.exit_code == 1
    assert "'other'" in disagree.output
    assert repr(CHAIN) in disagree.output


async def test_an_unreachable_network_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    down = f"{NodeKey.generate().node_id}@127.0.0.1:{free_loopback_port()}"
    out = tmp_path / "out"
    result = await invoke([*crawl_args(out, tmp_path / "home", down), "--network", CHAIN])
    assert result.exit_code == 1
    assert "no node of test-chain was reachable" in result.output
    (node,) = json.loads((out / "network.json").read_text())["nodes"]
    assert (node["reachable"], node["error"]) == (False, "refused")


async def test_a_malformed_seed_is_a_one_line_error(tmp_path: Path) -> None:
    result = await invoke(crawl_args(tmp_path / "out", tmp_path / "home", "not-an-address"))
    assert result.exit_code == 1
    assert "seed 'not-an-address'" in result.output


async def test_crawl_as_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with converged_network(2) as (seed, nodes):
        run = await run_cometp2p(
            *crawl_args(out, tmp_path / "home", str(seed.address)), timeout_s=COMMAND_TIMEOUT_S
        )
    assert run.returncode == 0, run.output
    document = json.loads((out / "network.json").read_text())
    assert document["network"] == CHAIN  # learnt from the seed: no --network, no genesis
    assert {n["id"] for n in document["nodes"] if n["reachable"]} == {
        seed.id,
        *(n.id for n in nodes),
    }
    assert (out / "network.png").read_bytes()[:4] == b"\x89PNG"
