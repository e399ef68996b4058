"""Greedy selection, pruning, faithfulness and the minimal-circuit search."""

import numpy as np
import pytest

from circuit_stability.attribution import edge_attribution, interpolation_points
from circuit_stability.circuits import (circuit_nodes, faithfulness, greedy_circuit, minimal_circuit, prune)
from circuit_stability.graph import Graph


def _random_scores(graph, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(graph.n_writers, graph.n_readers)).astype(np.float32)
    s[~graph.edge_mask] = np.nan
    return s


def _connected(graph, mask):
    """Every edge of mask lies on a path input -> ... -> logits inside mask."""
    node_of_reader = [graph.reader_node(r) for r in range(graph.n_readers)]
    edges = [(graph.writer_names[u], node_of_reader[v]) for u, v in zip(*np.nonzero(mask))]
    fwd, bwd = {"input"}, {"logits"}
    for _ in range(len(edges) + 1):
        fwd |= {b for a, b in edges if a in fwd}
        bwd |= {a for a, b in edges if b in bwd}
    return all(a in fwd and b in bwd for a, b in edges)


@pytest.mark.parametrize("n", [1, 5, 20, 60])
def test_greedy_circuits_are_connected_after_pruning(n):
    graph = Graph(3, 4)
    scores = _random_scores(graph, n)
    before = scores.copy()
    chosen = greedy_circuit(graph, scores, n)
    pruned = prune(graph, chosen)
    np.testing.assert_array_equal(scores, before)  # the caller's scores are never mutated
    assert chosen.sum() == n and pruned.sum() <= n
    assert not (pruned & ~chosen).any()
    assert _connected(graph, pruned)
    assert set(circuit_nodes(graph, pruned)) <= set(graph.writer_names) | {"logits"}


def test_greedy_starts_from_the_logits():
    graph = Graph(2, 2)
    scores = np.where(graph.edge_mask, 0.1, np.nan).astype(np.float32)
    scores[graph.writer_index(1, 1), graph.logits_index] = -5.0  # the strongest |score| into logits
    scores[0, graph.reader_index(0, 0, "q")] = 9.0  # stronger, but not reachable from logits yet
    first = greedy_circuit(graph, scores, 1)
    assert first[graph.writer_index(1, 1), graph.logits_index] and first.sum() == 1


def test_all_nan_scores_are_an_error():
    graph = Graph(2, 2)
    with pytest.raises(ValueError, match="all NaN"):
        greedy_circuit(graph, np.full((graph.n_writers, graph.n_readers), np.nan), 3)


def test_faithfulness_definitions():
    assert faithfulness(4.0, 5.0, -5.0) == {"paper": 0.8, "normalized": 0.9}
    assert np.isnan(faithfulness(1.0, 0.0, 0.0)["paper"])


def test_minimal_circuit_on_trained_model(trained_bridge, ioi_prompts):
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    scores = edge_attribution(bridge, graph, ioi_prompts, interpolation_points("EAP-IG", 5)).scores
    res = minimal_circuit(bridge, graph, scores, ioi_prompts, threshold=0.8, max_fraction=0.05)
    print(f"\nminimal circuit: size {res.size}, {int(res.edges.sum())} edges of {graph.n_edges}, "
          f"f_paper={res.curve[res.size]['paper']:.3f}, sizes evaluated {sorted(res.curve)}")
    assert res.reached and res.curve[res.size]["paper"] >= 0.8
    assert res.size <= int(0.05 * graph.n_edges)
    assert _connected(graph, res.edges)
    smaller = [n for n in res.curve if n < res.size]
    assert all(res.curve[n]["paper"] < 0.8 for n in smaller if n >= res.size // 2)  # binary search boundary
    assert len(res.curve) <= 16


def test_search_returns_smallest_qualifying_size_on_non_monotone_curve():
    """f rises past 0.8 at n = 23, dips below it again at 40–60 and has a sub-threshold bump at 5."""
    from circuit_stability.circuits import search_minimal_size

    def f(n):
        if n == 5:
            return 0.7  # a bump that does not qualify
        if 40 <= n <= 60:
            return 0.5  # a dip after the first crossing
        return 0.9 if n >= 23 else 0.1 + n / 100

    calls = []

    def faithfulness_of(sizes):
        calls.append(list(sizes))
        return [f(n) for n in sizes]

    size, reached, evaluated = search_minimal_size(faithfulness_of, max_n=100, threshold=0.8, grid_points=8)
    assert (size, reached) == (23, True)
    assert len(calls[0]) == 8 and all(len(c) == 1 for c in calls[1:])  # the grid in one batch
    assert len(evaluated) <= 16
    none = search_minimal_size(lambda ns: [0.1 for _ in ns], max_n=100)
    assert none[:2] == (100, False)


def test_search_limit_is_five_percent_with_a_floor_for_tiny_graphs():
    from circuit_stability.circuits import search_limit

    assert search_limit(32491, 0.05) == 1624  # Pythia-70m: 5% of the edges
    assert search_limit(32491, 0.05, min_search_edges=20) == 1624  # the floor has no effect on large graphs
    assert search_limit(102, 0.05) == 5 and search_limit(102, 0.05, min_search_edges=20) == 20
    assert search_limit(12, 0.05, min_search_edges=20) == 12  # never more than the graph has
    for bad in ({"max_fraction": 0.0}, {"max_fraction": 1.5}, {"min_search_edges": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            search_limit(102, **{"max_fraction": 0.05, **bad})


def test_area_under_and_mib_summaries(trained_bridge, ioi_prompts):
    from circuit_stability.circuits import area_under, faithfulness_summaries

    assert area_under([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    scores = edge_attribution(bridge, graph, ioi_prompts, interpolation_points("EAP-IG", 5)).scores
    mib = faithfulness_summaries(bridge, graph, scores, ioi_prompts)
    assert mib["fractions"]["1.0"]["normalized"] == pytest.approx(1.0, abs=1e-4)  # the full graph
    assert 0 < mib["cpr"] <= 1.5 and mib["cmd"] >= 0


def test_top_n_selection():
    from circuit_stability.circuits import select_circuit, top_n_circuit

    graph = Graph(2, 2)
    scores = _random_scores(graph, 3)
    before = scores.copy()
    vals = scores[graph.edge_mask]
    absolute = top_n_circuit(graph, scores, 5)
    signed = top_n_circuit(graph, scores, 5, absolute=False)
    assert absolute.sum() == signed.sum() == 5
    assert np.sort(np.abs(scores[absolute]))[0] >= np.sort(np.abs(vals))[-5]
    assert np.sort(scores[signed])[-1] <= np.sort(vals)[4]  # the five most negative (task-supporting) edges
    np.testing.assert_array_equal(scores, before)
    assert _connected(graph, select_circuit(graph, scores, 5, "topn-abs"))
    with pytest.raises(ValueError, match="valid: \\['greedy', 'topn-abs', 'topn-signed'\\]"):
        select_circuit(graph, scores, 5, "random")


def test_empty_or_all_nan_scores_file_is_an_error(tmp_path):
    """The circuit stage refuses a scores file without usable scores instead of returning a circuit."""
    import pandas as pd

    from circuit_stability.artifacts import write_parquet
    from circuit_stability.cli import read_scores

    meta = {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": True, "method": "EAP-IG"}
    graph = Graph(2, 2)
    src, dst = graph.edge_index
    nan = pd.DataFrame({"src": np.array(graph.writer_names)[src], "dst": np.array(graph.reader_names)[dst],
                        "score": np.full(graph.n_edges, np.nan, dtype=np.float32)})
    write_parquet(nan, tmp_path / "nan.parquet", meta)
    write_parquet(nan.iloc[:0], tmp_path / "empty.parquet", meta)
    for name in ("nan.parquet", "empty.parquet"):
        with pytest.raises(ValueError, match="no usable scores"):
            read_scores(tmp_path / name)
