"""Draw a crawled CometBFT network as a PNG: the ``network.png`` of ``cometp2p crawl`` and
``cometp2p localnet``.

What it draws, from the ``network.json`` document (schema in
:mod:`cometp2p.crawler.model`):

* every node ID as a dot, coloured by what the crawl learnt about it: reachable
  (green ``#2ca02c``), each :class:`~cometp2p.crawler.model.FailureReason` its own colour
  (refused ``#d62728``, timeout ``#ff7f0e``, auth_failure ``#9467bd``, incompatible
  ``#8c564b``, protocol_error ``#e377c2``, unreachable ``#1f77b4``), an error string this
  module does not know (olive ``#bcbd22``), never dialed or known only from an edge
  (grey ``#a0a0a0``);
* seeds (``"seed": true``, or named in ``"seeds"``) larger, with a black ring;
* every "A told us about B" edge as a thin, light arrow from A to B;
* labels (moniker, else the first 8 characters of the node ID) when the graph has at most
  60 nodes, none above, where they would only hide the dots;
* a legend with the node count per status, and a title (given, or
  ``"<network> — N nodes, R reachable, E edges"``).

Why these libraries: networkx holds the directed graph and lays out each connected
component under 500 nodes with its numpy Fruchterman-Reingold (``spring_layout``, "force"
method); the components are then packed side by side, largest first. At 500 nodes and
above every networkx force layout needs scipy, which cometp2p does not depend on
(``spring_layout`` switches to a scipy sparse matrix whatever the method,
``kamada_kawai_layout`` calls ``scipy.optimize``) or is too slow (``forceatlas2_layout``
took about 9 s for 2000 nodes), so those components go through a vectorised numpy
Fruchterman-Reingold here (about a second for 2000 nodes). matplotlib renders through
:class:`~matplotlib.figure.Figure` and
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, never ``pyplot``: no global
backend or figure registry is touched and no window can open, so it runs from any thread.

The picture is deterministic: same document and library versions, same bytes (fixed
layout seed, no timestamp or software version in the PNG metadata).

Reading the document is lenient, because a picture should not be lost to one odd entry: a
node entry without a non-empty string ``id`` is skipped, an edge that is not two distinct
non-empty strings is skipped, and any other field that is missing or of the wrong type is
read as absent (not reachable, no error, not a seed, no moniker). The first entry of a
node ID wins. Text from the network (monikers, the chain ID) is drawn literally: no
mathtext, non-printable characters and characters the bundled DejaVu Sans font lacks
become ``?``, and long strings are shortened.
"""

from __future__ import annotations

import enum
import functools
import io
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import networkx as nx
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.ft2font import FT2Font
from matplotlib.lines import Line2D

from cometp2p.crawler.model import FailureReason
from cometp2p.fileio import atomic_write_bytes

__all__ = ["render_network_png"]

_Array = npt.NDArray[np.float64]


class _Status(enum.Enum):
    """What the picture says about one node; the legend lists them in this order."""

    REACHABLE = "reachable"
    REFUSED = FailureReason.REFUSED.value
    TIMEOUT = FailureReason.TIMEOUT.value
    AUTH_FAILURE = FailureReason.AUTH_FAILURE.value
    INCOMPATIBLE = FailureReason.INCOMPATIBLE.value
    PROTOCOL_ERROR = FailureReason.PROTOCOL_ERROR.value
    UNREACHABLE = FailureReason.UNREACHABLE.value
    OTHER_ERROR = "other error"
    NOT_DIALED = "not dialed / unknown"


_COLOURS: Final[Mapping[_Status, str]] = {
    _Status.REACHABLE: "#2ca02c",
    _Status.REFUSED: "#d62728",
    _Status.TIMEOUT: "#ff7f0e",
    _Status.AUTH_FAILURE: "#9467bd",
    _Status.INCOMPATIBLE: "#8c564b",
    _Status.PROTOCOL_ERROR: "#e377c2",
    _Status.UNREACHABLE: "#1f77b4",
    _Status.OTHER_ERROR: "#bcbd22",
    _Status.NOT_DIALED: "#a0a0a0",
}
_LEGEND_NAMES: Final[Mapping[_Status, str]] = {
    _Status.REACHABLE: "reachable",
    _Status.REFUSED: "refused",
    _Status.TIMEOUT: "timeout",
    _Status.AUTH_FAILURE: "auth failure",
    _Status.INCOMPATIBLE: "incompatible",
    _Status.PROTOCOL_ERROR: "protocol error",
    _Status.UNREACHABLE: "unreachable",
    _Status.OTHER_ERROR: "other error",
    _Status.NOT_DIALED: "not dialed / unknown",
}
# A FailureReason added later without a colour here is drawn as "other error", not lost.
_ERROR_STATUS: Final[Mapping[str, _Status]] = {
    status.value: status
    for status in _Status
    if status.value in {reason.value for reason in FailureReason}
}

# Canvas: a square graph area on the left, the legend on the right. 1300 x 1000 pixels.
_FIG_W_IN: Final = 13.0
_FIG_H_IN: Final = 10.0
_DPI: Final = 100
_AX_LEFT_IN: Final = 0.3
_AX_BOTTOM_IN: Final = 0.3
_AX_SIDE_IN: Final = 9.0
_DATA_LIMIT: Final = 1.12  # the layout fills [-1, 1]; the margin leaves room for labels
_POINTS_PER_INCH: Final = 72.0
_DATA_PER_POINT: Final = 2 * _DATA_LIMIT / (_AX_SIDE_IN * _POINTS_PER_INCH)

_FONT: Final = "DejaVu Sans"  # bundled with matplotlib, so always found
_MAX_LABELLED_NODES: Final = 60
_MAX_LABEL_CHARS: Final = 24
_MAX_TITLE_CHARS: Final = 120
_EDGE_COLOUR: Final = "#404040"
_SEED_RING_COLOUR: Final = "#000000"

_LAYOUT_SEED: Final = 1729
# Up to this many nodes networkx's spring_layout runs its dense numpy Fruchterman-Reingold;
# from 500 on it builds a scipy sparse matrix, whatever the method.
_NX_LAYOUT_MAX_NODES: Final = 499
_FORCE_ITERATIONS: Final = 50
# Pair evaluations (nodes squared times iterations) allowed for the numpy layout: about a
# second at 2000 nodes; bigger graphs get fewer iterations, never fewer than the floor.
_FORCE_PAIR_BUDGET: Final = 2000 * 2000 * _FORCE_ITERATIONS
_FORCE_MIN_ITERATIONS: Final = 15
_FORCE_BLOCK_PAIRS: Final = 4_000_000  # bounds the pairwise temporaries to ~16 MB each


@dataclass(frozen=True, slots=True)
class _Node:
    node_id: str
    status: _Status
    seed: bool
    moniker: str | None


@dataclass(frozen=True, slots=True)
class _Crawl:
    network: str | None
    nodes: tuple[_Node, ...]
    edges: tuple[tuple[str, str], ...]


def render_network_png(
    document: Mapping[str, object],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw the crawled network of ``document`` and write it to ``path`` as a PNG.

    The image is 1300 x 1000 pixels: the graph in a square on the left, the legend (node
    count per status, seeds, edge meaning) on the right, the title on top. A document
    without nodes gives the same frame with a "no nodes" note. Same document, same bytes.
    Layout takes about a second for 2000 nodes and grows with the square of the node count.

    Args:
        document: the parsed ``network.json`` (schema in :mod:`cometp2p.crawler.model`).
            Only ``network``, ``seeds``, ``nodes`` (``id``, ``moniker``, ``reachable``,
            ``error``, ``seed``) and ``edges`` are read; malformed entries are skipped and
            malformed fields read as absent (see the module docstring), never an error.
        path: the file to write; missing parent directories are created. Written
            atomically (temporary file in the same directory, fsync, rename).
        title: the title; default ``"<network> — N nodes, R reachable, E edges"``, where
            N counts every node ID drawn (node entries, seeds, edge ends), R the reachable
            ones and E the distinct directed edges.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: ``path`` or its directory cannot be created or written (a parent is a
            file, no permission, disk full, ``path`` is a directory).
    """
    crawl = _read_document(document)
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(n.node_id for n in crawl.nodes)
    graph.add_edges_from(crawl.edges)
    positions = _layout(graph)
    data = _draw(crawl, graph, positions, title)
    atomic_write_bytes(path, data)
    return Path(path)


def _read_document(document: Mapping[str, object]) -> _Crawl:
    """The drawable part of ``document``; malformed parts are left out, never raised."""
    if not isinstance(document, Mapping):
        return _Crawl(network=None, nodes=(), edges=())
    network = document.get("network")
    nodes: dict[str, _Node] = {}
    for entry in _entries(document.get("nodes")):
        node = _read_node(entry)
        if node is not None and node.node_id not in nodes:
            nodes[node.node_id] = node

    seed_ids: list[str] = []
    for address in _entries(document.get("seeds")):
        if isinstance(address, str) and "@" in address:
            node_id = address.split("@", 1)[0].strip()
            if node_id:
                seed_ids.append(node_id)
    for node_id in seed_ids:
        known = nodes.get(node_id)
        if known is None:
            nodes[node_id] = _Node(node_id, _Status.NOT_DIALED, seed=True, moniker=None)
        elif not known.seed:
            nodes[node_id] = _Node(node_id, known.status, seed=True, moniker=known.moniker)

    edges: dict[tuple[str, str], None] = {}  # ordered and without duplicates
    for entry in _entries(document.get("edges")):
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            continue
        source, target = entry
        if not (isinstance(source, str) and isinstance(target, str)):
            continue
        if not source or not target or source == target:
            continue
        for node_id in (source, target):
            if node_id not in nodes:
                nodes[node_id] = _Node(node_id, _Status.NOT_DIALED, seed=False, moniker=None)
        edges[(source, target)] = None
    return _Crawl(
        network=network if isinstance(network, str) else None,
        nodes=tuple(nodes.values()),
        edges=tuple(edges),
    )


def _entries(value: object) -> Iterable[object]:
    """The items of a JSON array; anything else has none."""
    return value if isinstance(value, list | tuple) else ()


def _read_node(entry: object) -> _Node | None:
    if not isinstance(entry, Mapping):
        return None
    node_id = entry.get("id")
    if not isinstance(node_id, str) or not node_id:
        return None
    error = entry.get("error")
    if entry.get("reachable") is True:
        status = _Status.REACHABLE
    elif isinstance(error, str):
        status = _ERROR_STATUS.get(error, _Status.OTHER_ERROR)
    else:
        status = _Status.NOT_DIALED
    moniker = entry.get("moniker")
    return _Node(
        node_id=node_id,
        status=status,
        seed=entry.get("seed") is True,
        moniker=moniker if isinstance(moniker, str) and moniker.strip() else None,
    )


def _layout(graph: nx.DiGraph[str]) -> _Array:
    """Positions in ``[-1, 1]``, one row per node in ``graph`` order; deterministic.

    Each connected component is laid out on its own, in a square box whose side grows with
    the square root of its size, and the boxes are packed in rows, largest first. Laid out
    together, a force layout would fling nodes without edges (a seed that refused, say) to
    the rim and squeeze the connected network into the middle.
    """
    n = graph.number_of_nodes()
    positions = np.zeros((n, 2))
    if n == 0:
        return positions
    index = {node: i for i, node in enumerate(graph)}
    # Who told whom does not matter for closeness: lay out the undirected graph.
    undirected = graph.to_undirected(as_view=True)
    components = sorted(
        (sorted(c, key=index.__getitem__) for c in nx.connected_components(undirected)),
        key=lambda c: (-len(c), index[c[0]]),
    )
    sides = [math.sqrt(len(c)) for c in components]
    row_width = max(sides[0], 1.2 * math.sqrt(sum(side * side for side in sides)))
    x = y = row_height = 0.0
    for component, side in zip(components, sides, strict=True):
        if x > 0 and x + side > row_width:
            x, y, row_height = 0.0, y - row_height, 0.0
        local = _component_layout(undirected.subgraph(component), component)
        rows = [index[node] for node in component]
        positions[rows] = local * (0.45 * side) + (x + side / 2, y - side / 2)
        x += side
        row_height = max(row_height, side)
    return _fit(positions)


def _component_layout(component: nx.Graph[str], nodes: list[str]) -> _Array:
    """Positions of one connected component's ``nodes`` (in that order), fitted to [-1, 1]."""
    if len(nodes) == 1:
        return np.zeros((1, 2))
    if len(nodes) <= _NX_LAYOUT_MAX_NODES:
        # No method= argument: it exists only from networkx 3.5, and below 500 nodes every
        # version from 3.2 on picks the numpy "force" algorithm by itself.
        placed = nx.spring_layout(component, seed=_LAYOUT_SEED)
        return _fit(np.array([placed[node] for node in nodes], dtype=np.float64))
    index = {node: i for i, node in enumerate(nodes)}
    pairs = np.array([(index[u], index[v]) for u, v in component.edges()], dtype=np.intp)
    return _fit(_force_layout(len(nodes), pairs[:, 0], pairs[:, 1]))


def _fit(positions: _Array) -> _Array:
    """``positions`` moved and scaled, shape kept, so their bounding box just fits [-1, 1]."""
    positions = np.nan_to_num(positions, nan=0.0, posinf=0.0, neginf=0.0)
    low = positions.min(axis=0)
    high = positions.max(axis=0)
    half_extent = float((high - low).max()) / 2
    centred: _Array = positions - (low + high) / 2
    return centred / half_extent if half_extent > 0 else centred


def _force_layout(n: int, sources: npt.NDArray[np.intp], targets: npt.NDArray[np.intp]) -> _Array:
    """Fruchterman-Reingold with numpy only, for graphs networkx would hand to scipy.

    Every pair repels with ``k**2 / d``, every edge attracts with ``d**2 / k``
    (``k = 1/sqrt(n)``); a cooling temperature caps each step. Pairwise forces are computed
    in row blocks of float32, which bounds memory and runs at about 20 ms per iteration
    for 2000 nodes.
    """
    rng = np.random.default_rng(_LAYOUT_SEED)
    positions = rng.random((n, 2)).astype(np.float32)
    k = np.float32(1.0 / math.sqrt(n))
    k_squared = k * k
    iterations = max(_FORCE_MIN_ITERATIONS, min(_FORCE_ITERATIONS, _FORCE_PAIR_BUDGET // n**2))
    temperature = 0.1
    cooling = temperature / (iterations + 1)
    block = max(1, _FORCE_BLOCK_PAIRS // n)
    displacement = np.empty((n, 2), dtype=np.float32)
    for _ in range(iterations):
        xs = positions[:, 0]
        ys = positions[:, 1]
        for start in range(0, n, block):
            stop = min(n, start + block)
            dx = xs[start:stop, None] - xs[None, :]
            dy = ys[start:stop, None] - ys[None, :]
            strength = dx * dx
            strength += dy * dy
            np.maximum(strength, np.float32(1e-8), out=strength)  # coincident nodes
            np.divide(k_squared, strength, out=strength)  # (k**2 / d) / d: unit vector folded in
            displacement[start:stop, 0] = np.einsum("ij,ij->i", dx, strength)
            displacement[start:stop, 1] = np.einsum("ij,ij->i", dy, strength)
        along = positions[targets] - positions[sources]
        pull = along * (np.hypot(along[:, 0], along[:, 1]) / k)[:, None]
        for axis in range(2):
            displacement[:, axis] += np.bincount(sources, pull[:, axis], n) - np.bincount(
                targets, pull[:, axis], n
            )
        length = np.hypot(displacement[:, 0], displacement[:, 1])
        np.maximum(length, np.float32(1e-9), out=length)
        positions += displacement * (np.minimum(length, temperature) / length)[:, None]
        temperature -= cooling
    return positions.astype(np.float64)


def _draw(crawl: _Crawl, graph: nx.DiGraph[str], positions: _Array, title: str | None) -> bytes:
    """Render the picture and return the PNG bytes."""
    n = graph.number_of_nodes()
    fig = Figure(figsize=(_FIG_W_IN, _FIG_H_IN), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes(
        (
            _AX_LEFT_IN / _FIG_W_IN,
            _AX_BOTTOM_IN / _FIG_H_IN,
            _AX_SIDE_IN / _FIG_W_IN,
            _AX_SIDE_IN / _FIG_H_IN,
        )
    )
    ax.set_xlim(-_DATA_LIMIT, _DATA_LIMIT)
    ax.set_ylim(-_DATA_LIMIT, _DATA_LIMIT)
    ax.set_aspect("equal")
    ax.set_axis_off()

    reachable = sum(1 for node in crawl.nodes if node.status is _Status.REACHABLE)
    if title is None:
        network = crawl.network if crawl.network else "unknown network"
        title = (
            f"{_printable(network, 60)} — {n} nodes, {reachable} reachable, "
            f"{graph.number_of_edges()} edges"
        )
    fig.text(
        (_AX_LEFT_IN + _AX_SIDE_IN / 2) / _FIG_W_IN,
        1 - 0.15 / _FIG_H_IN,
        _printable(title, _MAX_TITLE_CHARS),
        ha="center",
        va="top",
        fontsize=14,
        family=_FONT,
        parse_math=False,
        usetex=False,
    )

    if n == 0:
        ax.text(
            0, 0, "no nodes", ha="center", va="center", fontsize=18, color="#808080",
            family=_FONT, parse_math=False, usetex=False,
        )  # fmt: skip
    else:
        diameters = _diameters(crawl, n)
        _draw_edges(ax, graph, positions, diameters)
        _draw_nodes(ax, crawl, positions, diameters, n)
    _draw_legend(fig, crawl)

    buffer = io.BytesIO()
    # No "Software" text chunk: it names the matplotlib version, and the bytes should not.
    # (print_png is unannotated: matplotlib ships no types for backend_agg.)
    canvas.print_png(buffer, metadata={"Software": None})  # type: ignore[no-untyped-call]
    return buffer.getvalue()


def _diameters(crawl: _Crawl, n: int) -> _Array:
    """Marker diameter of each node, points: smaller as the graph grows, seeds larger."""
    base = min(18.0, max(4.0, 180.0 / math.sqrt(n)))
    return np.array([base * 1.7 if node.seed else base for node in crawl.nodes])


def _draw_edges(ax: Axes, graph: nx.DiGraph[str], positions: _Array, diameters: _Array) -> None:
    edges = graph.number_of_edges()
    if edges == 0:
        return
    index = {node: i for i, node in enumerate(graph)}
    pairs = np.array([(index[u], index[v]) for u, v in graph.edges()], dtype=np.intp)
    start = positions[pairs[:, 0]]
    end = positions[pairs[:, 1]]
    along = end - start
    length = np.hypot(along[:, 0], along[:, 1])
    unit = np.divide(along, length[:, None], out=np.zeros_like(along), where=length[:, None] > 0)
    normal = np.column_stack((-unit[:, 1], unit[:, 0]))
    # Arrowheads sized to the nodes, tip on the target's rim; lines stop at the head's base.
    radius = diameters / 2 * _DATA_PER_POINT
    head_length = float(np.clip(diameters.min() * 0.5, 3.0, 7.0)) * _DATA_PER_POINT
    head_half_width = head_length * 0.35
    tip = end - unit * (radius[pairs[:, 1]] + 0.5 * _DATA_PER_POINT)[:, None]
    base = tip - unit * head_length
    has_head = length > radius[pairs[:, 0]] + radius[pairs[:, 1]] + head_length
    line_end = np.where(has_head[:, None], base, end)
    alpha = max(0.08, min(0.45, 4.5 / math.sqrt(edges)))
    ax.add_collection(
        LineCollection(
            list(np.stack((start, line_end), axis=1)),  # one (2, 2) array per edge
            colors=_EDGE_COLOUR,
            linewidths=0.6,
            alpha=alpha,
            zorder=1,
        ),
        autolim=False,
    )
    if has_head.any():
        heads = np.stack(
            (
                tip[has_head],
                base[has_head] + normal[has_head] * head_half_width,
                base[has_head] - normal[has_head] * head_half_width,
            ),
            axis=1,
        )
        ax.add_collection(
            PolyCollection(
                list(heads),
                facecolors=_EDGE_COLOUR,
                edgecolors="none",
                alpha=min(1.0, alpha * 1.5),
                zorder=1,
            ),
            autolim=False,
        )


def _draw_nodes(ax: Axes, crawl: _Crawl, positions: _Array, diameters: _Array, n: int) -> None:
    colours = [_COLOURS[node.status] for node in crawl.nodes]
    seeds = np.array([node.seed for node in crawl.nodes], dtype=bool)
    ring = 0.8 if n <= 200 else 0.3
    for selected, edge_colour, width, z in (
        (~seeds, "white", ring, 2),
        (seeds, _SEED_RING_COLOUR, 2.0, 3),  # on top, so a seed is never hidden
    ):
        if not selected.any():
            continue
        ax.scatter(
            positions[selected, 0],
            positions[selected, 1],
            s=diameters[selected] ** 2,
            c=[c for c, keep in zip(colours, selected, strict=True) if keep],
            edgecolors=edge_colour,
            linewidths=width,
            zorder=z,
        )
    if n > _MAX_LABELLED_NODES:
        return
    for node, (x, y), diameter in zip(crawl.nodes, positions, diameters, strict=True):
        label = node.moniker if node.moniker is not None else node.node_id[:8]
        ax.text(
            float(x),
            float(y) - (diameter / 2 + 2.0) * _DATA_PER_POINT,
            _printable(label, _MAX_LABEL_CHARS),
            ha="center",
            va="top",
            fontsize=7,
            family=_FONT,
            parse_math=False,
            usetex=False,
            zorder=4,
            clip_on=False,
        )


def _draw_legend(fig: Figure, crawl: _Crawl) -> None:
    counts = Counter(node.status for node in crawl.nodes)
    handles: list[Line2D] = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=10,
            markerfacecolor=_COLOURS[status],
            markeredgecolor="white",
            label=f"{_LEGEND_NAMES[status]} ({counts[status]})",
        )
        for status in _Status
        if counts[status]
    ]
    seeds = sum(1 for node in crawl.nodes if node.seed)
    if seeds:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=12,
                markerfacecolor="white",
                markeredgecolor=_SEED_RING_COLOUR,
                markeredgewidth=2.0,
                label=f"seed ({seeds})",
            )
        )
    if crawl.edges:
        handles.append(
            Line2D([], [], color=_EDGE_COLOUR, linewidth=1.0, label="A → B: A told us about B")
        )
    if not handles:
        return
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=((_AX_LEFT_IN + _AX_SIDE_IN + 0.3) / _FIG_W_IN, 1 - 1.0 / _FIG_H_IN),
        frameon=False,
        prop=FontProperties(family=_FONT, size=11),
        title="nodes by status",
        title_fontproperties=FontProperties(family=_FONT, size=12, weight="bold"),
    )


@functools.cache
def _font_codepoints() -> frozenset[int]:
    """The characters the label font can draw (asking per glyph would warn per miss)."""
    return frozenset(FT2Font(findfont(FontProperties(family=_FONT))).get_charmap())


def _printable(text: str, limit: int) -> str:
    """``text`` safe to draw: one line, only glyphs the font has, at most ``limit`` chars."""
    drawable = _font_codepoints()
    cleaned = "".join(
        c if c.isprintable() and ord(c) in drawable else "?" for c in text[: limit + 1]
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
