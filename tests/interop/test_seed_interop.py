"""``cometp2p seed`` as a real process with real CometBFT v0.38 nodes on loopback.

Go node A runs alone; our seed knows only A and verifies it by crawling (rounds every
second or so, each a fresh connection with one PexRequest). Go node B's only seed is ours:
it asks us, hears of A (verified) and connects to it. Throughout, neither Go node stops
our seed or our crawler for a protocol error nor bans it: every disconnection they log is
the seed's or the crawler's own graceful hang-up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Final

import pytest

from cometp2p.crypto.keys import NodeKey, save_node_key
from interop.cometbft import LOOPBACK, CometBFTNode, JSONObject, free_ports, poll_until
from interop.conftest import NodeFactory

pytestmark = pytest.mark.interop

CHAIN_ID: Final = "cometp2p-seed-interop"
TIMEOUT_S: Final = 40.0
_BAD: Final = re.compile(r"(?i)mark.?bad|banned|too soon|misbehav|ban ")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COMETP2P_HOME"}


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:
        return None


def go_peer(node: CometBFTNode, node_id: str) -> JSONObject | None:
    return next((p for p in node.peers() if p["node_info"]["id"] == node_id), None)


def complaints(node: CometBFTNode, ids: set[str]) -> list[str]:
    """Log lines where ``node`` punished a peer, or stopped one for a real error."""

    def bad(line: str) -> bool:
        return bool(
            _BAD.search(line)
            or ("Stopping peer for error" in line and not re.search(r"EOF|closed", line))
            or (any(i in line for i in ids) and "error" in line.lower() and "EOF" not in line)
        )

    return [line for line in node.log_text().splitlines() if bad(line)]


def test_a_cometbft_node_whose_only_seed_is_ours_joins_the_network(
    cometbft_node: NodeFactory, tmp_path: Path
) -> None:
    a = cometbft_node(moniker="go-a", chain_id=CHAIN_ID)
    home = tmp_path / "seed-home"
    key = NodeKey.generate()
    save_node_key(key, home / "config" / "node_key.json")
    p2p_port, http_port = free_ports(2)
    seed_address = f"{key.node_id}@{LOOPBACK}:{p2p_port}"
    log_path = tmp_path / "cometp2p-seed.log"
    argv = [
        sys.executable, "-m", "cometp2p", "seed", "--home", str(home),
        "--p2p.laddr", f"tcp://{LOOPBACK}:{p2p_port}", "--http.laddr", f"{LOOPBACK}:{http_port}",
        "--network", CHAIN_ID, "--timeout", "5", "--min-interval", "1", "--new-interval", "1",
        "--stable-interval", "2", "--failed-interval", "2", "--export-interval", "1",
        a.p2p_address,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        seed = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_env(),
            start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://{LOOPBACK}:{http_port}"

        def verified_a() -> bool | None:
            assert seed.poll() is None, log_path.read_text()
            text = http_get(f"{base}/peers?n=10")
            return True if text is not None and a.node_id in text else None

        poll_until(verified_a, timeout_s=TIMEOUT_S, what="A in our seed's /peers")
        nodes = json.loads(http_get(f"{base}/nodes") or "{}")["nodes"]
        by_id = {n["id"]: n for n in nodes}
        assert by_id[a.node_id]["moniker"] == "go-a"
        assert by_id[a.node_id]["version"].startswith("0.38.")
        assert by_id[a.node_id]["status"] == "reachable"

        # B knows only our seed: it asks us, and dials the A we hand out.
        b = cometbft_node(moniker="go-b", chain_id=CHAIN_ID, seeds=[seed_address])
        theirs = poll_until(
            lambda: go_peer(b, a.node_id), timeout_s=TIMEOUT_S, what="A in B's /net_info"
        )
        assert theirs["node_info"]["moniker"] == "go-b" or theirs["node_info"]["id"] == a.node_id
        p2p = b.config()["p2p"]
        assert (p2p["seeds"], p2p["persistent_peers"]) == (seed_address, "")
        # B, having connected to us as an inbound peer, is verified in turn.
        poll_until(
            lambda: True if b.node_id in (http_get(f"{base}/peers?n=10") or "") else None,
            timeout_s=TIMEOUT_S,
            what="B in our seed's /peers",
        )

        # Let the seed revisit both a few times (a round every 1-2 s), then read the logs.
        def rounds_done() -> int | None:
            found = re.search(
                r"cometp2p_seed_rounds_total (\d+)", http_get(f"{base}/metrics") or ""
            )
            return int(found.group(1)) if found and int(found.group(1)) >= 6 else None

        poll_until(rounds_done, timeout_s=TIMEOUT_S, what="6 crawl rounds")
        assert go_peer(b, a.node_id) is not None  # B stays connected to A
        for node in (a, b):
            assert complaints(node, {key.node_id}) == []
        # The crawler really visited A again and again (each visit ends in our hang-up).
        hangups = [line for line in a.log_text().splitlines() if "Stopping peer for error" in line]
        assert len(hangups) >= 4
        book = json.loads((home / "config" / "addrbook.json").read_text())
        assert {e["addr"]["id"] for e in book["addrs"]} == {a.node_id, b.node_id}
    finally:
        if seed.poll() is None:
            seed.send_signal(signal.SIGTERM)
        try:
            code = seed.wait(timeout=15)
        except subprocess.TimeoutExpired:
            seed.kill()
            seed.wait(timeout=5)
            raise
        print(log_path.read_text()[-4000:])
    assert code == 0, log_path.read_text()[-4000:]
