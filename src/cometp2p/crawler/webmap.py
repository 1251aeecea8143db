"""An interactive network map in one HTML file: ``network.html`` and the seed's ``GET /``.

The page draws a ``network.json`` document (:mod:`cometp2p.crawler.model`) with
Cytoscape.js, which is vendored in ``static/vendor/cytoscape`` (pinned version, its
licence, and where it came from in the README there) and inlined into the page, so a map
needs no network access when viewed. Nodes are coloured by status or by version, seeds
are diamonds, hovering or clicking a node shows its NodeInfo, and the status and version
filters hide the rest. The layout is force-directed (CoSE, about 5 s for 500 nodes in
headless chromium), concentric by degree past 1500 nodes.

Embedded (``render_map_html(document)``: ``crawl`` and ``localnet``'s ``network.html``), the
page shows that document. Live (``render_map_html(None)``: the seed's ``/``), it polls
``poll_url`` (``network.json``) and updates in place.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

from cometp2p.crawler.model import JSONValue
from cometp2p.fileio import atomic_write_bytes

__all__ = ["CYTOSCAPE_VERSION", "NETWORK_HTML", "render_map_html", "write_network_html"]

CYTOSCAPE_VERSION: Final = "3.35.0"
NETWORK_HTML: Final = "network.html"


@cache
def _asset(*parts: str) -> str:
    return resources.files("cometp2p.crawler").joinpath("static", *parts).read_text("utf-8")


def _script_json(value: object) -> str:
    # Inside <script>, "</" must not appear; JSON allows "<\/".
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def render_map_html(
    document: dict[str, JSONValue] | None,
    *,
    title: str | None = None,
    poll_url: str = "network.json",
    poll_ms: int = 2000,
) -> str:
    """The map page.

    Args:
        document: a ``network.json`` document to embed, or ``None`` for a live page that
            polls ``poll_url`` every ``poll_ms`` milliseconds.
        title: the page title (default: the document's network).
    """
    if title is None:
        network = document.get("network") if document is not None else None
        title = f"{network}: network map" if network else "network map"
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    page = _asset("map.html")
    # The library goes in last: nothing is substituted inside it.
    page = (
        page.replace("__TITLE__", escaped)
        .replace("__CYTOSCAPE_VERSION__", CYTOSCAPE_VERSION)
        .replace("__POLL_URL__", _script_json(poll_url))
        .replace("__POLL_MS__", str(int(poll_ms)))
        .replace("__DATA__", _script_json(document))
    )
    head, sep, tail = page.partition("__CYTOSCAPE__")
    return head + _asset("vendor", "cytoscape", "cytoscape.min.js") + tail if sep else page


def write_network_html(document: dict[str, JSONValue], out_dir: str | Path) -> Path:
    """Write ``network.html`` (the embedded map of ``document``) atomically; its path.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(out_dir) / NETWORK_HTML
    atomic_write_bytes(path, render_map_html(document).encode("utf-8"), 0o644)
    return path
