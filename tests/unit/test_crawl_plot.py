"""Tests for cometp2p.crawler.plot: the ``network.png`` picture of a crawl document.

The pictures are checked by their pixels: the documented palette must show up in the graph
area exactly for the statuses present, labels and seed rings (the only near-black things
drawn in the graph area) must appear when they should.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from cometp2p.crawler.model import FailureReason
from cometp2p.crawler.plot import render_network_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEIGHT_PX, WIDTH_PX = 1000, 1300
# The square graph area, in pixels (0.3 in margin, 9 in side, 100 dpi); the legend is right
# of it and the title above it, so colour counts in here come from nodes, edges, labels.
GRAPH_ROWS = slice(HEIGHT_PX - 930, HEIGHT_PX - 30)
GRAPH_COLS = slice(30, 930)

# The palette documented in the module docstring.
REACHABLE = "#2ca02c"
ERROR_COLOURS: Mapping[str, str] = {
    "refused": "#d62728",
    "timeout": "#ff7f0e",
    "auth_failure": "#9467bd",
    "incompatible": "#8c564b",
    "protocol_error": "#e377c2",
    "unreachable": "#1f77b4",
}
OTHER_ERROR = "#bcbd22"
NOT_DIALED = "#a0a0a0"

Pixels = npt.NDArray[np.int16]


def node_id(i: int) -> str:
    return f"{i:040x}"


def node(
    i: int,
    *,
    reachable: bool = False,
    error: str | None = None,
    seed: bool = False,
    moniker: str | None = None,
) -> dict[str, object]:
    return {
        "id": node_id(i),
        "moniker": moniker,
        "network": "test-chain",
        "version": "0.38.25",
        "listen_addr": None,
        "channels": None,
        "reachable": reachable,
        "error": error,
        "error_detail": None,
        "seed": seed,
        "pex_addrs": 3,  # a key the picture must ignore
    }


def document(nodes: Sequence[object], edges: Sequence[object] = ()) -> dict[str, object]:
    return {
        "network": "test-chain",
        "seeds": [],
        "elapsed_s": 1.5,
        "nodes": list(nodes),
        "edges": list(edges),
    }


def render(tmp_path: Path, doc: Mapping[str, object], name: str = "network.png") -> bytes:
    written = render_network_png(doc, tmp_path / name)
    assert written == tmp_path / name
    return written.read_bytes()


def graph_pixels(tmp_path: Path, doc: Mapping[str, object]) -> Pixels:
    """The graph area of the rendered picture as 0..255 RGB integers."""
    path = render_network_png(doc, tmp_path / "pixels.png")
    image = imread(path)
    assert image.shape == (HEIGHT_PX, WIDTH_PX, 4)
    rgb: Pixels = np.rint(image[GRAPH_ROWS, GRAPH_COLS, :3] * 255).astype(np.int16)
    return rgb


def count_near(pixels: Pixels, colour: str, tolerance: int = 6) -> int:
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels - target).max(axis=2) <= tolerance).sum())


def count_dark(pixels: Pixels) -> int:
    """Near-black pixels: label text and seed rings (nothing else drawn is that dark)."""
    return int((pixels.max(axis=2) < 50).sum())


def test_writes_a_png_of_the_documented_size(tmp_path: Path) -> None:
    doc = document(
        [node(0, reachable=True, moniker="a"), node(1, error="refused")],
        [[node_id(0), node_id(1)]],
    )
    target = str(tmp_path / "network.png")  # a str path is accepted and returned as a Path

    written = render_network_png(doc, target)

    assert written == Path(target)
    data = written.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert imread(written).shape == (HEIGHT_PX, WIDTH_PX, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["network.png"]  # no temporary file left


def test_reachable_and_refused_nodes_get_their_own_colours(tmp_path: Path) -> None:
    reachable_only = graph_pixels(tmp_path, document([node(i, reachable=True) for i in range(4)]))
    mixed = graph_pixels(
        tmp_path,
        document([node(i, reachable=True) for i in range(4)] + [node(9, error="refused")]),
    )

    assert count_near(reachable_only, REACHABLE) > 4 * 150
    assert count_near(reachable_only, ERROR_COLOURS["refused"]) == 0
    assert count_near(mixed, ERROR_COLOURS["refused"]) > 150


@pytest.mark.parametrize("reason", list(FailureReason))
def test_each_failure_reason_has_a_distinct_colour(tmp_path: Path, reason: FailureReason) -> None:
    assert set(ERROR_COLOURS) == {r.value for r in FailureReason}, "palette out of date"
    doc = document(
        [node(0, reachable=True)] + [node(i, error=reason.value) for i in range(1, 4)],
        [[node_id(0), node_id(i)] for i in range(1, 4)],
    )

    pixels = graph_pixels(tmp_path, doc)

    assert count_near(pixels, ERROR_COLOURS[reason.value]) > 3 * 150
    for other, colour in ERROR_COLOURS.items():
        if other != reason.value:
            assert count_near(pixels, colour) == 0, other


def test_unknown_error_and_never_dialed_nodes(tmp_path: Path) -> None:
    doc = document(
        [node(0, reachable=True), node(1, error="from-the-future")] + [node(i) for i in (2, 3)]
    )

    pixels = graph_pixels(tmp_path, doc)

    assert count_near(pixels, OTHER_ERROR) > 150
    assert count_near(pixels, NOT_DIALED, tolerance=3) > 2 * 150


def test_edge_ends_missing_from_nodes_are_drawn_as_unknown(tmp_path: Path) -> None:
    known = [node(0, reachable=True)]
    strangers = [[node_id(0), node_id(100 + i)] for i in range(3)]

    without = graph_pixels(tmp_path, document(known))
    with_edges = graph_pixels(tmp_path, document(known, strangers))

    assert count_near(without, NOT_DIALED, tolerance=3) == 0
    assert count_near(with_edges, NOT_DIALED, tolerance=3) > 3 * 150


def test_seeds_listed_only_in_seeds_are_drawn_with_a_ring(tmp_path: Path) -> None:
    many = [node(i, reachable=True) for i in range(61)]  # above the label limit: no text
    doc = document(many)
    with_seed = dict(doc, seeds=[f"{node_id(500)}@127.0.0.1:26656"])

    assert count_dark(graph_pixels(tmp_path, doc)) == 0
    pixels = graph_pixels(tmp_path, with_seed)
    assert count_dark(pixels) > 20
    assert count_near(pixels, NOT_DIALED, tolerance=3) > 100


def test_labels_up_to_60_nodes_none_above(tmp_path: Path) -> None:
    sixty = [node(i, reachable=True, moniker=f"n{i}") for i in range(60)]
    sixty_one = [*sixty, node(60, reachable=True, moniker="n60")]

    assert count_dark(graph_pixels(tmp_path, document(sixty))) > 60 * 5
    assert count_dark(graph_pixels(tmp_path, document(sixty_one))) == 0


@pytest.mark.parametrize("doc", [{}, {"network": "x", "nodes": []}, {"nodes": None, "edges": 3}])
def test_empty_document_draws_a_no_nodes_note(tmp_path: Path, doc: dict[str, object]) -> None:
    data = render(tmp_path, doc)

    assert data.startswith(PNG_SIGNATURE)
    pixels = graph_pixels(tmp_path, doc)
    assert count_near(pixels, "#808080", tolerance=10) > 50  # the grey "no nodes" text
    assert count_near(pixels, REACHABLE) == 0


def test_malformed_entries_change_nothing(tmp_path: Path) -> None:
    clean = document(
        [node(0, reachable=True, moniker="good"), node(1, error="timeout"), {"id": "odd"}],
        [[node_id(0), node_id(1)]],
    )
    junk = document(
        [
            None,
            5,
            "not a node",
            {},
            {"id": 7},
            {"id": ""},
            node(0, reachable=True, moniker="good"),
            node(1, error="timeout"),
            # a good ID with every other field wrong reads as a never-dialed node
            {"id": "odd", "reachable": "yes", "error": 12, "seed": "true", "moniker": 5},
            node(0, error="refused", moniker="later duplicate"),  # the first entry wins
        ],
        [
            None,
            [node_id(0)],
            [node_id(0), node_id(1), node_id(2)],
            [1, 2],
            ["", node_id(1)],
            [node_id(0), node_id(0)],
            "ab",
            [node_id(0), node_id(1)],
            [node_id(0), node_id(1)],  # a duplicate edge is one edge
        ],
    )
    junk["seeds"] = [5, None, "no-at-sign", "@127.0.0.1:1"]

    assert render(tmp_path, junk, "junk.png") == render(tmp_path, clean, "clean.png")


def test_non_mapping_document_and_hostile_text(tmp_path: Path) -> None:
    render_network_png([1, 2], tmp_path / "list.png")  # type: ignore[arg-type]
    # Mathtext would raise on these, a missing glyph would warn (warnings are errors here).
    doc = document(
        [
            node(0, reachable=True, moniker="$\\frac{$"),
            node(1, moniker="🚀 rocket\x00\n\ud800" + "x" * 200),
        ],
        [[node_id(0), node_id(1)]],
    )
    doc["network"] = "$^$ 🚀"

    assert render(tmp_path, doc).startswith(PNG_SIGNATURE)
    assert render_network_png(doc, tmp_path / "t.png", title="$x_$ 🚀").exists()


def test_title_is_drawn(tmp_path: Path) -> None:
    doc = document([node(0, reachable=True)])

    default = render(tmp_path, doc, "default.png")

    assert render_network_png(doc, tmp_path / "t.png", title="custom").read_bytes() != default


def test_same_document_gives_the_same_bytes(tmp_path: Path) -> None:
    doc = document(
        [node(i, reachable=i % 3 != 0, error=None if i % 3 else "refused") for i in range(40)],
        [[node_id(i), node_id((i * 7 + 1) % 40)] for i in range(40)],
    )

    assert render(tmp_path, doc, "a.png") == render(tmp_path, doc, "b.png")


def test_large_graph_uses_the_numpy_layout_deterministically(tmp_path: Path) -> None:
    # 600 nodes is past networkx's numpy-only range (500): the module's own layout runs.
    n = 600
    doc = document(
        [node(i, reachable=i % 2 == 0, error=None if i % 2 == 0 else "timeout") for i in range(n)],
        [[node_id(i), node_id((i * 31 + 7) % n)] for i in range(n)],
    )

    first = render(tmp_path, doc, "a.png")

    assert first == render(tmp_path, doc, "b.png")
    pixels = graph_pixels(tmp_path, doc)
    assert count_near(pixels, REACHABLE) > 300
    assert count_near(pixels, ERROR_COLOURS["timeout"]) > 300


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "network.png"

    assert render_network_png(document([node(0)]), target) == target
    assert target.read_bytes().startswith(PNG_SIGNATURE)


def test_unwritable_path_raises_oserror_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    doc = document([node(0)])

    with pytest.raises(OSError):
        render_network_png(doc, blocker / "network.png")  # a parent is a regular file
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OSError):
        render_network_png(doc, tmp_path / "dir.png")  # the target is a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file"]
    assert list((tmp_path / "dir.png").iterdir()) == []


_ids = st.sampled_from([node_id(i) for i in range(6)] + ["", "x"])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)
_node_entries = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"id": _ids | _json},
        optional={
            "moniker": st.text(max_size=30) | _json,
            "reachable": st.booleans() | _json,
            "error": st.sampled_from([*ERROR_COLOURS, "weird", None]) | _json,
            "seed": st.booleans() | _json,
        },
    ),
)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "network": st.text(max_size=20) | _json,
        "seeds": st.lists(st.builds("{}@127.0.0.1:1".format, _ids) | _json, max_size=3) | _json,
        "nodes": st.lists(_node_entries, max_size=8) | _json,
        "edges": st.lists(st.lists(_ids | _json, max_size=3) | _json, max_size=10) | _json,
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_documents, title=st.none() | st.text(max_size=20))
def test_random_documents_never_raise(doc: dict[str, object], title: str | None) -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = render_network_png(doc, Path(directory) / "network.png", title=title)
        assert written.read_bytes().startswith(PNG_SIGNATURE)
