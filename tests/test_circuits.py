"""Greedy selection, pruning, faithfulness and the minimal-circuit search."""

import numpy as np
import pytest

from circuit_stability.attribution import edge_attribution, interpolation_points
from circuit_stability.circuits import (SearchSettings, circuit_nodes, faithfulness, greedy_circuit, minimal_circuit,
                                        prune)
from circuit_stability.graph import Graph

IG5 = interpolation_points("EAP-IG", 5, "paper")
# the paper's search: f_paper >= 0.8 within 1 .. 5% of the edges; any model that performs the task is valid
PAPER = SearchSettings(threshold=0.8, max_fraction=0.05, min_search_edges=1, grid_points=8, selection="greedy",
                       validity_margin=0.0, emergence_fraction=0.5)


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


def test_nan_or_infinite_edge_scores_are_an_error():
    """One NaN edge score (here the would-be top edge) is an error naming the edge, not a silently different
    circuit; so is an infinite one, and a table of NaN."""
    graph = Graph(2, 2)
    scores = _random_scores(graph)
    u, r = graph.writer_index(1, 1), graph.logits_index
    for bad in (np.nan, np.inf):
        broken = scores.copy()
        broken[u, r] = bad
        with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\) .* at edge a1.h1->logits"):
            greedy_circuit(graph, broken, 3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        greedy_circuit(graph, np.full((graph.n_writers, graph.n_readers), np.nan), 3)


def test_faithfulness_definitions():
    assert faithfulness(4.0, 5.0, -5.0) == {"paper": 0.8, "normalized": 0.9}
    assert np.isnan(faithfulness(1.0, 0.0, 0.0)["paper"])


def test_minimal_circuit_on_trained_model(trained_bridge, ioi_prompts):
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    scores = edge_attribution(bridge, graph, ioi_prompts, IG5, 70).scores
    res = minimal_circuit(bridge, graph, scores, ioi_prompts, PAPER, 70)
    print(f"\nminimal circuit: size {res.size}, {int(res.edges.sum())} edges of {graph.n_edges}, "
          f"f_paper={res.curve[res.size]['paper']:.3f}, sizes evaluated {sorted(res.curve)}")
    assert res.valid and res.invalid_reason is None
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
    none = search_minimal_size(lambda ns: [0.1 for _ in ns], max_n=100, threshold=0.8, grid_points=8)
    assert none[:2] == (100, False)


def test_search_limit_is_five_percent_with_a_floor_for_tiny_graphs():
    from circuit_stability.circuits import search_limit

    assert search_limit(3580, 0.05, 1) == 179  # pythia-70m (3,580 edges): 5% of the edges
    assert search_limit(3580, 0.05, min_search_edges=20) == 179  # the floor has no effect on large graphs
    assert search_limit(102, 0.05, 1) == 5 and search_limit(102, 0.05, min_search_edges=20) == 20
    assert search_limit(12, 0.05, min_search_edges=20) == 12  # never more than the graph has
    for bad in ({"max_fraction": 0.0}, {"max_fraction": 1.5}, {"min_search_edges": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            search_limit(102, **{"max_fraction": 0.05, "min_search_edges": 1, **bad})


def test_area_under_and_mib_summaries(trained_bridge, ioi_prompts):
    from circuit_stability.circuits import MIB_FRACTIONS, area_under, faithfulness_summaries

    assert area_under([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    scores = edge_attribution(bridge, graph, ioi_prompts, IG5, 70).scores
    mib = faithfulness_summaries(bridge, graph, scores, ioi_prompts, 70, "greedy")
    assert mib["fractions"]["1.0"]["normalized"] == pytest.approx(1.0, abs=1e-4)  # the full graph
    norm = [mib["fractions"][str(f)]["normalized"] for f in MIB_FRACTIONS]
    assert mib["cpr"] == pytest.approx(area_under(list(MIB_FRACTIONS), norm))
    assert mib["cmd"] == pytest.approx(area_under(list(MIB_FRACTIONS), [abs(1 - v) for v in norm]))
    assert 0 < mib["cpr"] <= 1.5 and 0 < mib["cmd"] < 1


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
    from circuit_stability.records import RecordError, ScoresRecord

    meta = {"model": "m", "step": 0, "task": "ioi", "method": "EAP-IG", "n_examples": 4, "metric": "logit_diff",
            "n_layers": 2, "n_heads": 2, "parallel_attn_mlp": True}
    graph = Graph(2, 2)
    src, dst = graph.edge_index
    nan = pd.DataFrame({"src": np.array(graph.writer_names)[src], "dst": np.array(graph.reader_names)[dst],
                        "score": np.full(graph.n_edges, np.nan, dtype=np.float32)})
    write_parquet(nan, tmp_path / "nan.parquet", meta)
    write_parquet(nan.iloc[:0], tmp_path / "empty.parquet", meta)
    for name in ("nan.parquet", "empty.parquet"):
        with pytest.raises(RecordError, match=f"{name} (has unusable scores|has 0 rows).*delete it"):
            ScoresRecord.read(tmp_path / name)


def test_circuit_validity():
    """Valid only if m(M) > 0, m(M) ≥ half the last checkpoint's metric and m(M) − m(∅) > ε·|m(M)|, by hand."""
    from circuit_stability.circuits import circuit_validity

    assert circuit_validity(10.0, -2.0, 12.0, 0.5, 0.5) == (True, None)  # 10 >= 6, gap 12 > 5
    assert circuit_validity(10.0, 4.0, 12.0, 0.5, 0.5)[0] and not circuit_validity(10.0, 5.0, 12.0, 0.5, 0.5)[0]
    valid, reason = circuit_validity(-1.0, -3.0, 12.0, 0.5, 0.5)  # a large gap, but a negative metric
    assert not valid and "m(M) = -1 <= 0" in reason
    # an untrained model: a tiny metric that the corrupted run flips (the gap rule alone would accept it)
    assert circuit_validity(0.005, -0.006, 0.005, 0.5, 0.5)[0]  # ... were this the last checkpoint
    valid, reason = circuit_validity(0.005, -0.006, 7.0, 0.5, 0.5)
    assert not valid and "not emerged: m(M) = 0.005 < 0.5 x the last checkpoint's 7" in reason
    valid, reason = circuit_validity(0.2, 0.15, 0.2, 0.5, 0.5)  # clean and corrupted runs alike
    assert not valid and "0.05 <= 0.5 x |m(M)| = 0.1" in reason
    valid, reason = circuit_validity(0.2, -0.2, -1.0, 0.5, 0.5)
    assert not valid and "never learnt" in reason
    assert not circuit_validity(float("nan"), 0.0, 1.0, 0.5, 0.5)[0]
    # issue 27: a task not learnt here, or at the last checkpoint, gives no valid circuit whatever the other rules say
    valid, reason = circuit_validity(10.0, -2.0, 12.0, 0.5, 0.5, not_learnt="not learnt: (why)")
    assert not valid and reason == "the task is not learnt: (why)"
    valid, reason = circuit_validity(10.0, -2.0, 12.0, 0.5, 0.5, final_not_learnt="not learnt: (why)")
    assert not valid and reason.startswith("the task is never learnt: at the last checkpoint it is not learnt")
    for bad in ((-0.1, 0.5), (0.5, 0.0), (0.5, 1.5)):
        with pytest.raises(ValueError, match="margin|fraction"):
            circuit_validity(1.0, 0.0, 1.0, *bad)


def test_invalid_circuit_is_not_searched(trained_bridge, ioi_prompts):
    """The same checkpoint with a margin no model can meet, or a final metric it has not reached: marked invalid
    with the reason, not reached, and not searched (the empty circuit, m(C) = m(∅), a curve of size 0 alone),
    while m(M) and m(∅) are those of the valid search."""
    import dataclasses

    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    scores = edge_attribution(bridge, graph, ioi_prompts, IG5, 70).scores
    valid = minimal_circuit(bridge, graph, scores, ioi_prompts, PAPER, 70)
    strict = dataclasses.replace(PAPER, validity_margin=10.0)
    res = minimal_circuit(bridge, graph, scores, ioi_prompts, strict, 70)
    assert valid.valid and valid.reached and valid.size > 0
    assert not res.valid and not res.reached and "10 x |m(M)|" in res.invalid_reason
    assert res.size == 0 and not res.edges.any() and list(res.curve) == [0]
    assert (res.metric_model, res.metric_empty) == (valid.metric_model, valid.metric_empty)
    assert res.metric_circuit == res.metric_empty and res.curve[0]["normalized"] == 0.0
    late = minimal_circuit(bridge, graph, scores, ioi_prompts, PAPER, 70, metric_final=3 * res.metric_model)
    assert not late.valid and not late.reached and "not emerged" in late.invalid_reason and late.size == 0


def test_search_settings_are_checked_before_any_work():
    import dataclasses

    for bad, match in (({"threshold": 0.0}, "threshold"), ({"max_fraction": 1.5}, "max_fraction"),
                       ({"selection": "random"}, "valid: \\['greedy'"), ({"validity_margin": -1.0}, "margin"),
                       ({"grid_points": 1}, "grid_points"), ({"emergence_fraction": 0.0}, "fraction")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(PAPER, **bad)


def test_prune_keeps_a_shared_key_input_while_one_head_of_its_group_lives():
    """Grouped-query attention: a0.kv0<k> is read by a0.h0 and a0.h1. With only a0.h0 writing to the logits the
    input->a0.kv0<k> edge stays and a0.h1 is not a circuit node; with neither head live the edge goes."""
    g = Graph(1, 4, False, 2)
    k0 = g.reader_index(0, 0, "k")
    assert g.reader_index(0, 1, "k") == k0 and g.reader_names[k0] == "a0.kv0<k>"
    mask = np.zeros_like(g.edge_mask)
    mask[0, k0] = True  # input -> a0.kv0<k>
    mask[g.writer_index(0, 0), g.logits_index] = True  # a0.h0 -> logits
    kept = prune(g, mask)
    assert kept[0, k0] and kept[g.writer_index(0, 0), g.logits_index]
    assert circuit_nodes(g, kept) == ["input", "a0.h0", "logits"]
    mask[g.writer_index(0, 0), g.logits_index] = False
    mask[g.writer_index(0, 2), g.logits_index] = True  # a0.h2 reads a0.kv1, not a0.kv0
    assert not prune(g, mask)[0, k0]
