"""The seed's HTTP API on aiohttp (``pip install 'cometp2p[seed]'``).

Routes:

* ``GET /peers?n=10``: a random selection of up to ``n`` (default 10, at most 1000)
  verified peers, favouring recent verification and diverse groups, as ``text/plain``
  ``id@host:port,id@host:port`` (what ``persistent_peers`` and ``seeds`` take); with
  ``format=json``: ``{"peers": [...]}``;
* ``GET /nodes``: every node with its NodeInfo (``network.json``'s node fields), plus
  ``status`` (``new``, ``reachable``, ``failed``), ``verified``, ``first_seen``,
  ``last_seen``, ``last_attempt`` (RFC 3339 UTC), ``failure_reason``,
  ``consecutive_failures`` and ``next_visit``;
* ``GET /network.json``: the store in the crawl's schema (:mod:`cometp2p.crawler.model`);
* ``GET /addrbook.json``: exports ``addrbook.json`` of the verified peers now, and returns it;
* ``GET /metrics``: the crawl's Prometheus metrics;
* ``GET /``: the live network map (:mod:`cometp2p.crawler.webmap`), polling
  ``/network.json``.
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cometp2p.crawler.webmap import render_map_html
from cometp2p.pex.addrbook_store import dump_addrbook
from cometp2p.seed.service import SeedService

__all__ = ["DEFAULT_PEERS", "make_app"]

DEFAULT_PEERS: Final = 10
_MAX_PEERS: Final = 1000
_SERVICE: Final = web.AppKey("service", SeedService)


def _json(data: object) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json")


async def _peers(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    text = request.query.get("n", str(DEFAULT_PEERS))
    try:
        n = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"n must be an integer, got {text!r}\n") from None
    if not 0 <= n <= _MAX_PEERS:
        raise web.HTTPBadRequest(text=f"n must be in [0, {_MAX_PEERS}], got {n}\n")
    peers = [str(a) for a in service.verified_peers(n)]
    if request.query.get("format") == "json":
        return _json({"peers": peers})
    return web.Response(text=",".join(peers) + "\n")


async def _nodes(request: web.Request) -> web.Response:
    return _json(request.app[_SERVICE].nodes_document())


async def _network(request: web.Request) -> web.Response:
    return _json(request.app[_SERVICE].crawl_result().to_document())


async def _addrbook(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    await service.export_addrbook()
    body = dump_addrbook(service.verified_book())
    return web.Response(body=body, content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_SERVICE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _index(request: web.Request) -> web.Response:
    html = render_map_html(None, title=f"cometp2p seed: {request.app[_SERVICE].network}")
    return web.Response(text=html, content_type="text/html")


def make_app(service: SeedService) -> web.Application:
    """The aiohttp application serving ``service``."""
    app = web.Application()
    app[_SERVICE] = service
    app.router.add_get("/", _index)
    app.router.add_get("/peers", _peers)
    app.router.add_get("/nodes", _nodes)
    app.router.add_get("/network.json", _network)
    app.router.add_get("/addrbook.json", _addrbook)
    app.router.add_get("/metrics", _metrics)
    return app
