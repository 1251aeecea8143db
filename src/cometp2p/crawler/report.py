"""Write a crawl's files: ``network.json``, ``addrbook.json``, ``network.png``, ``network.html``.

Every file is written atomically (a crash leaves the old file or none, never half of one).
``addrbook.json`` is the CometBFT format (behaviour.md §5.12): each reachable node at the
address its dial succeeded on, in an old bucket (marked good) with the node that told us
about it as its source, so a CometBFT node given this file as ``addr_book_file`` starts
with every reachable node of the crawl. Unreachable nodes are left out: a book is for
dialing.
"""

from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cometp2p.crawler.model import CrawlResult
from cometp2p.crawler.webmap import write_network_html
from cometp2p.fileio import atomic_write_bytes
from cometp2p.pex.addrbook import AddrBook
from cometp2p.pex.addrbook_store import save_addrbook
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress

__all__ = ["PLOT_EXTRA_NOTE", "CrawlFiles", "build_addrbook", "plot_available", "write_crawl_files"]

NETWORK_JSON = "network.json"
ADDRBOOK_JSON = "addrbook.json"
NETWORK_PNG = "network.png"


PLOT_EXTRA_NOTE = (
    "network.png skipped: drawing it needs the plot extra (pip install 'cometp2p[plot]')"
)


def plot_available() -> bool:
    """True when the optional ``plot`` extra (matplotlib, networkx, numpy) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("matplotlib", "networkx"))


@dataclass(frozen=True, slots=True)
class CrawlFiles:
    """The paths written by :func:`write_crawl_files`."""

    network_json: Path
    addrbook_json: Path
    network_png: Path | None
    network_html: Path | None = None


def build_addrbook(result: CrawlResult, *, now: datetime, rng: random.Random) -> AddrBook:
    """An AddrBook holding every reachable node of ``result`` as a good (old) address.

    The book is not strict, so loopback and private addresses are kept (a crawl of a
    local network must be usable by a local node). The source of each address is the
    first reachable node that told us about it; a seed is its own source.

    Args:
        result: the crawl.
        now: the time stamped on the entries (aware, UTC).
        rng: randomness for the book's key and bucket placement.
    """
    book = AddrBook(strict=False, rng=rng)
    dialed: dict[NodeID, NetAddress] = {
        n.node_id: n.dialed for n in result.nodes if n.dialed is not None and n.reachable
    }
    source: dict[NodeID, NetAddress] = {}
    for teller, told in result.edges:
        if told not in source and teller in dialed:
            source[told] = dialed[teller]
    for node_id, addr in dialed.items():
        book.add_address(addr, source.get(node_id, addr), now)
        book.mark_good(node_id, now)
    return book


def write_crawl_files(
    result: CrawlResult,
    out_dir: str | Path,
    *,
    now: datetime,
    png: bool = True,
    rng: random.Random | None = None,
) -> CrawlFiles:
    """Write ``network.json``, ``addrbook.json``, ``network.html`` (the interactive map,
    :mod:`cometp2p.crawler.webmap`) and (unless ``png`` is false) ``network.png``.

    Args:
        result: the crawl.
        out_dir: the directory (created if missing).
        now: the time stamped on the address-book entries (aware, UTC).
        png: also draw the graph (needs the ``plot`` extra: see :func:`plot_available`).
        rng: randomness for the address book (default: fresh).

    Returns:
        The paths written.

    Raises:
        OSError: a file could not be written (files already written stay).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = result.to_document()
    network_json = out / NETWORK_JSON
    atomic_write_bytes(network_json, (json.dumps(document, indent=2) + "\n").encode())
    addrbook_json = out / ADDRBOOK_JSON
    save_addrbook(build_addrbook(result, now=now, rng=rng or random.Random()), addrbook_json)
    network_png = None
    if png:
        from cometp2p.crawler.plot import render_network_png  # the optional plot extra

        network_png = render_network_png(document, out / NETWORK_PNG)
    network_html = write_network_html(document, out)
    return CrawlFiles(network_json, addrbook_json, network_png, network_html)
