"""Crawl a CometBFT network through its p2p protocol (``cometp2p crawl``).

* :class:`Crawler` and :class:`CrawlConfig`: the crawl itself (handshakes and PEX);
* :class:`CrawlResult`, :class:`NodeRecord`, :class:`FailureReason`: what it learns, and
  the ``network.json`` document (:meth:`CrawlResult.to_document`);
* :func:`cometp2p.crawler.report.write_crawl_files`: ``network.json``, ``addrbook.json``
  and ``network.png`` (kept out of this namespace: it imports the plotting libraries).
"""

from cometp2p.crawler.crawler import CrawlConfig, Crawler
from cometp2p.crawler.model import (
    CrawlProgress,
    CrawlResult,
    FailureReason,
    NodeRecord,
    NodeState,
)

__all__ = [
    "CrawlConfig",
    "CrawlProgress",
    "CrawlResult",
    "Crawler",
    "FailureReason",
    "NodeRecord",
    "NodeState",
]
