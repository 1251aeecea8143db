"""Multi-round crawling: a node with a book larger than one PEX answer is re-asked.

One answer from a book of 120 addresses holds a random 32 (CometBFT's getSelection:
max(32, 23 %)), so one round learns 32 of them; later rounds re-ask the node on fresh
connections while its answers still bring new node IDs.
"""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import UTC, datetime
from pathlib import Path

from cometp2p.crawler import CrawlConfig, Crawler
from cometp2p.crypto.keys import NodeKey
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.reactor import PEXReactor
from cometp2p.seed.rounds import crawl_rounds
from cometp2p.switch.switch import Switch
from cometp2p.testing.cli import run_cometp2p
from cometp2p.testing.network import free_loopback_port, make_switch, switch_address
from cometp2p.testing.pex import fast_pex
from cometp2p.wire.netaddress import NetAddress

CHAIN = "test-chain"
BOOK = 120
CONFIG = CrawlConfig(timeout_s=2.0, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))


def big_book_node() -> tuple[Switch, set[str]]:
    book = AddrBook(strict=False, rng=random.Random(3))
    now = datetime.now(UTC)
    port = free_loopback_port()  # nobody listens there: every entry is refused at once
    ids: set[str] = set()
    for _ in range(BOOK):
        addr = NetAddress.parse(f"{NodeKey.generate().node_id}@127.0.0.1:{port}", resolve=False)
        book.add_address(addr, addr, now)
        ids.add(addr.id)
    reactor = PEXReactor(book, fast_pex(ensure_peers_period_s=30.0))
    return make_switch([("PEX", reactor)], chain_id=CHAIN, moniker="big-book"), ids


async def test_rounds_reveal_more_of_a_big_book_than_one_crawl(tmp_path: Path) -> None:
    switch, ids = big_book_node()
    async with switch:
        seed = switch_address(switch)
        one = await Crawler(CHAIN, CONFIG).crawl([seed])
        many = await crawl_rounds(CHAIN, [seed], CONFIG, 8)
        run = await run_cometp2p(
            "crawl", str(seed), "--network", CHAIN, "--rounds", "8", "--no-png",
            "--allow-net", "127.0.0.0/8", "--timeout", "2", "--out", str(tmp_path),
            timeout_s=60,
        )  # fmt: skip
    found_once = {r.node_id for r in one.nodes} - {seed.id}
    found_many = {r.node_id for r in many.nodes} - {seed.id}
    assert len(found_once) == 32
    assert found_once <= ids
    assert found_many <= ids
    assert len(found_many) >= 60  # expected ~110 after 8 answers of 32 out of 120
    record = many.node(seed.id)
    assert record is not None
    assert record.reachable
    assert record.seed
    assert run.returncode == 0, run.output
    assert "round 2:" in run.output
    document = json.loads((tmp_path / "network.json").read_text())
    assert len(document["nodes"]) - 1 >= 60
    html = (tmp_path / "network.html").read_text()
    assert "cytoscape" in html
    assert seed.id in html
