"""What a crawl learns: one record per node ID, the "told us about" edges, and the report.

Pure data, no IO. :class:`~cometp2p.crawler.crawler.Crawler` fills the records; this module
turns them into the ``network.json`` document (schema below) that ``cometp2p crawl`` and
``cometp2p localnet`` write and that :func:`~cometp2p.crawler.plot.render_network_png` draws.

``network.json``::

    {
      "network": "<chain ID crawled>",
      "seeds": ["id@ip:port", ...],
      "started_at": "<RFC 3339 UTC>",
      "elapsed_s": 1.234,
      "summary": {"found": N, "reached": R, "failed": F, "not_dialed": D,
                  "errors": {"refused": n, ...}, "edges": E, "peak_in_flight": P},
      "nodes": [{
        "id": "<40 hex>", "moniker": str|null, "network": str|null, "version": str|null,
        "listen_addr": str|null, "channels": "<upper-case hex, as /net_info>"|null,
        "protocol_version": {"p2p": int, "block": int, "app": int}|null,
        "other": {"tx_index": str, "rpc_address": str}|null,
        "reachable": bool, "error": null|"refused"|"timeout"|"auth_failure"|
                                      "incompatible"|"protocol_error"|"unreachable",
        "error_detail": str|null, "seed": bool, "dialed": "id@ip:port"|null,
        "addresses": ["id@ip:port", ...], "pex_addrs": int|null, "pex_error": str|null
      }, ...],
      "edges": [["from_id", "to_id"], ...]     # "from told us about to"
    }

``reachable`` is true when the node completed the SecretConnection and NodeInfo handshake
and is compatible with the crawled network. A node that answered with an incompatible
NodeInfo has ``reachable: false`` and ``error: "incompatible"``, with its NodeInfo fields
filled in. A node known only from other nodes' address lists and never dialed (the crawl
was cut short by ``max_nodes`` or ``max_duration_s``, or it is outside the allowed
networks) has ``reachable: false`` and ``error: null``.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.nodeinfo import NodeInfo

__all__ = ["CrawlProgress", "CrawlResult", "FailureReason", "NodeRecord", "NodeState"]

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


class FailureReason(enum.Enum):
    """Why a node could not be crawled; the ``error`` of ``network.json``."""

    REFUSED = "refused"
    """TCP connection refused, or the node hung up before the SecretConnection was up
    (what its connection filters, duplicate-IP rule or limits do)."""
    TIMEOUT = "timeout"
    """The TCP connect, the SecretConnection handshake or the NodeInfo exchange took
    longer than the crawl's timeout."""
    AUTH_FAILURE = "auth_failure"
    """The node could not prove it holds the key of the node ID it was advertised under
    (bad signature, or another node ID at that address)."""
    INCOMPATIBLE = "incompatible"
    """The node is on another network, another block protocol version, or does not run
    PEX (no common channel)."""
    PROTOCOL_ERROR = "protocol_error"
    """The node sent bytes that are not the CometBFT handshake, or an invalid NodeInfo."""
    UNREACHABLE = "unreachable"
    """Any other network error on connect: no route to host, network unreachable."""


class NodeState(enum.Enum):
    """Where a node is in the crawl."""

    QUEUED = "queued"
    DIALING = "dialing"
    REACHED = "reached"
    FAILED = "failed"
    NOT_DIALED = "not_dialed"


@dataclass(slots=True, eq=False)
class NodeRecord:
    """Everything learnt about one node ID; mutated by the crawler while it runs.

    Attributes:
        node_id: the node ID.
        addresses: every distinct address learnt for this ID (or given as a seed), in
            the order learnt.
        untried: the addresses not dialed yet.
        state: see :class:`NodeState`.
        seed: True if given as a seed.
        node_info: the NodeInfo the node sent, if it got that far (also kept when the
            node turned out incompatible or invalid).
        dialed: the address whose dial succeeded.
        error: why the last attempt failed (``None`` once reached).
        error_detail: a one-line human explanation of ``error``.
        attempts: dials made.
        pex_addrs: how many addresses its ``PexAddrs`` answer carried (``None``: no answer).
        pex_error: why no (or a partial) PEX answer came, if so.
    """

    node_id: NodeID
    addresses: list[NetAddress] = field(default_factory=list)
    untried: list[NetAddress] = field(default_factory=list)
    state: NodeState = NodeState.NOT_DIALED
    seed: bool = False
    node_info: NodeInfo | None = None
    dialed: NetAddress | None = None
    error: FailureReason | None = None
    error_detail: str | None = None
    attempts: int = 0
    pex_addrs: int | None = None
    pex_error: str | None = None

    @property
    def reachable(self) -> bool:
        """True once the node completed the handshake and is compatible."""
        return self.state is NodeState.REACHED

    def to_document(self) -> dict[str, JSONValue]:
        """This record as a ``network.json`` node object (see the module docstring)."""
        info = self.node_info
        return {
            "id": self.node_id,
            "moniker": info.moniker if info else None,
            "network": info.network if info else None,
            "version": info.version if info else None,
            "listen_addr": info.listen_addr if info else None,
            "channels": info.channels.hex().upper() if info else None,
            "protocol_version": (
                {
                    "p2p": info.protocol_version.p2p,
                    "block": info.protocol_version.block,
                    "app": info.protocol_version.app,
                }
                if info
                else None
            ),
            "other": {"tx_index": info.tx_index, "rpc_address": info.rpc_address} if info else None,
            "reachable": self.reachable,
            "error": self.error.value if self.error else None,
            "error_detail": self.error_detail,
            "seed": self.seed,
            "dialed": str(self.dialed) if self.dialed else None,
            "addresses": [str(a) for a in self.addresses],
            "pex_addrs": self.pex_addrs,
            "pex_error": self.pex_error,
        }


@dataclass(frozen=True, slots=True)
class CrawlProgress:
    """A snapshot of a running crawl, for live display.

    Attributes:
        found: distinct node IDs known.
        reached: nodes that completed the handshake and are compatible.
        failed: nodes whose every known address failed.
        in_flight: nodes being dialed or talked to right now.
        queued: nodes waiting for a free slot.
        elapsed_s: seconds since the crawl started.
    """

    found: int
    reached: int
    failed: int
    in_flight: int
    queued: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class CrawlResult:
    """The outcome of a crawl.

    Attributes:
        network: the chain ID crawled.
        seeds: the addresses the crawl started from.
        nodes: one record per node ID, in discovery order.
        edges: ``(from_id, to_id)`` pairs, "from told us about to", in discovery order,
            without duplicates.
        started_at: when the crawl began (UTC).
        elapsed_s: how long it took, seconds.
        peak_in_flight: the most nodes dialed or talked to at once.
    """

    network: str
    seeds: tuple[NetAddress, ...]
    nodes: tuple[NodeRecord, ...]
    edges: tuple[tuple[NodeID, NodeID], ...]
    started_at: datetime
    elapsed_s: float
    peak_in_flight: int

    def node(self, node_id: str) -> NodeRecord | None:
        """The record of ``node_id``, if the crawl found it."""
        return next((n for n in self.nodes if n.node_id == node_id), None)

    @property
    def reached(self) -> tuple[NodeRecord, ...]:
        """The nodes that completed the handshake and are compatible."""
        return tuple(n for n in self.nodes if n.reachable)

    @property
    def failed(self) -> tuple[NodeRecord, ...]:
        """The nodes dialed without success (``error`` says why)."""
        return tuple(n for n in self.nodes if n.state is NodeState.FAILED)

    def error_counts(self) -> dict[str, int]:
        """``{reason: count}`` over the failed nodes, most frequent first."""
        counts = Counter(n.error.value for n in self.failed if n.error is not None)
        return dict(counts.most_common())

    def to_document(self) -> dict[str, JSONValue]:
        """The ``network.json`` document (see the module docstring)."""
        not_dialed = sum(1 for n in self.nodes if n.state is NodeState.NOT_DIALED)
        errors: dict[str, JSONValue] = dict(self.error_counts())
        return {
            "network": self.network,
            "seeds": [str(s) for s in self.seeds],
            "started_at": self.started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "elapsed_s": round(self.elapsed_s, 3),
            "summary": {
                "found": len(self.nodes),
                "reached": len(self.reached),
                "failed": len(self.failed),
                "not_dialed": not_dialed,
                "errors": errors,
                "edges": len(self.edges),
                "peak_in_flight": self.peak_in_flight,
            },
            "nodes": [n.to_document() for n in self.nodes],
            "edges": [[a, b] for a, b in self.edges],
        }
