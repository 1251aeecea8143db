"""The network map in a real browser: Debian's chromium, headless, driven by selenium.

The seed's ``GET /`` over a store of 500 nodes (every status, three versions): the page
loads with no console errors, draws exactly the nodes of ``/nodes``, follows a new node
live, filters by status and shows a clicked node's NodeInfo; the embedded
``network.html`` draws the same. Screenshots are kept in ``out/test-artifacts/``.

Skipped (with the reason) without chromium and chromedriver; under ``CI=true`` a skip
fails (``browser`` marker, tests/conftest.py), and ``.ci/run`` installs both.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from cometp2p.crawler.model import CrawlResult, FailureReason, NodeRecord, NodeState
from cometp2p.crawler.webmap import write_network_html
from cometp2p.seed.http import make_app
from cometp2p.seed.schedule import SchedulePolicy
from cometp2p.seed.service import SeedService
from cometp2p.seed.store import SeedStore
from cometp2p.testing.network import free_loopback_port
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NODES = 500
WAIT_S = 60.0


def synthetic_round(start: int, count: int) -> CrawlResult:
    """``count`` nodes: 70 % reachable (versions 0.38.x, 1.0.0), the rest failed or unknown."""
    reasons = list(FailureReason)
    records: list[NodeRecord] = []
    edges: list[tuple[str, str]] = []
    for i in range(start, start + count):
        a = NetAddress.parse(f"{i:040x}@10.{i % 200}.{i // 200 % 250}.1:26656", resolve=False)
        if i % 10 < 7:
            version = ("0.38.25", "0.38.17", "1.0.0")[i % 3]
            info = NodeInfo(
                node_id=a.id, listen_addr=f"tcp://{a.ip}:26656", network="chain",
                version=version, channels=b"\x00\x20", moniker=f"node-{i}",
            )  # fmt: skip
            record = NodeRecord(
                node_id=a.id, addresses=[a], state=NodeState.REACHED, node_info=info,
                dialed=a, attempts=1, pex_addrs=3,
            )  # fmt: skip
        elif i % 10 < 9:
            reason = reasons[i % len(reasons)]
            record = NodeRecord(
                node_id=a.id, addresses=[a], state=NodeState.FAILED, error=reason,
                error_detail=f"{reason.value} <b>detail</b>", attempts=1,
            )  # fmt: skip
        else:
            record = NodeRecord(node_id=a.id, addresses=[a])
        records.append(record)
        if i > start:
            edges.append((f"{start + (i * 7919) % (i - start):040x}", a.id))
    return CrawlResult(
        network="chain", seeds=(), nodes=tuple(records), edges=tuple(edges),  # type: ignore[arg-type]
        started_at=datetime.now(UTC), elapsed_s=1.0, peak_in_flight=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run does it)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                "--disable-dev-shm-usage", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(WAIT_S)
    try:
        yield browser
    finally:
        browser.quit()


def wait_for(driver: Any, script: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        lambda d: d.execute_script(script)
    )


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


async def test_live_map_draws_every_node_of_nodes_and_follows_the_crawl(
    driver: Any, tmp_path: Path
) -> None:
    store = SeedStore(tmp_path / "seed.db", SchedulePolicy())
    store.record_round(synthetic_round(1, NODES), started=store._clock())
    service = SeedService(store, "chain")
    runner = web.AppRunner(make_app(service))
    await runner.setup()
    port = free_loopback_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        async with ClientSession() as session, session.get(f"{base}/nodes") as response:
            expected = len((await response.json())["nodes"])
        assert expected == NODES

        def first_load() -> tuple[int, str, list[dict[str, Any]]]:
            driver.get(base + "/")
            wait_for(driver, "return window.cometp2pMap && window.cometp2pMap.ready")
            count = driver.execute_script("return window.cometp2pMap.cy.nodes().length")
            label = driver.find_element("id", "count").text
            driver.save_screenshot(str(ARTIFACTS / "seed-map.png"))
            return count, label, console_errors(driver)

        count, label, errors = await asyncio.to_thread(first_load)
        assert errors == []
        assert count == expected
        assert label == f"{NODES} nodes"

        # The crawl goes on: a new round's nodes appear without a reload.
        store.record_round(synthetic_round(NODES + 1, 10), started=store._clock())

        def follows() -> int:
            return int(
                wait_for(
                    driver,
                    f"var n = window.cometp2pMap.cy.nodes().length; return n === {NODES + 10} && n",
                )
            )

        assert await asyncio.to_thread(follows) == NODES + 10

        def interact() -> tuple[int, int, str, list[dict[str, Any]]]:
            reachable = driver.execute_script(
                "return window.cometp2pMap.cy.nodes('[status = \"reachable\"]').length"
            )
            driver.execute_script(
                "var s = document.getElementById('status-filter'); s.value = 'reachable';"
                "s.dispatchEvent(new Event('change'));"
            )
            visible = driver.execute_script(
                "return window.cometp2pMap.cy.nodes()"
                ".filter(n => n.style('display') !== 'none').length"
            )
            driver.execute_script(
                "var s = document.getElementById('colour-by'); s.value = 'version';"
                "s.dispatchEvent(new Event('change'));"
                f"window.cometp2pMap.cy.getElementById('{2:040x}').emit('tap');"
            )
            info = driver.find_element("id", "info").text
            driver.save_screenshot(str(ARTIFACTS / "seed-map-filtered.png"))
            return reachable, visible, info, console_errors(driver)

        reachable, visible, info, errors = await asyncio.to_thread(interact)
        assert errors == []
        assert reachable == visible > 0
        assert "node-2" in info
        assert "1.0.0" in info

        # The same map, embedded in network.html (what crawl and localnet write).
        html = write_network_html(service.crawl_result().to_document(), tmp_path)

        def embedded() -> tuple[int, list[dict[str, Any]]]:
            driver.get(html.as_uri())
            wait_for(driver, "return window.cometp2pMap && window.cometp2pMap.ready")
            n = driver.execute_script("return window.cometp2pMap.cy.nodes().length")
            driver.save_screenshot(str(ARTIFACTS / "network-html.png"))
            return n, console_errors(driver)

        n, errors = await asyncio.to_thread(embedded)
        assert errors == []
        assert n == NODES + 10
    finally:
        await runner.cleanup()
        store.close()
