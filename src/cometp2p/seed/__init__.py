"""``cometp2p seed``: a seed node that keeps crawling and hands out only verified peers.

* :mod:`cometp2p.seed.schedule`: the revisit schedule and the peer selection (sans-IO);
* :mod:`cometp2p.seed.store`: the state in SQLite (:class:`~cometp2p.seed.store.SeedStore`);
* :mod:`cometp2p.seed.rounds`: crawl rounds on the :class:`~cometp2p.crawler.Crawler`
  (also ``cometp2p crawl --rounds``);
* :mod:`cometp2p.seed.service`: the seed-mode node, the crawl loop, metrics and exports;
* :mod:`cometp2p.seed.http`: the HTTP API and the live map (needs ``cometp2p[seed]``).
"""
