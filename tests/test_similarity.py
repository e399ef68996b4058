"""Circuit similarity, per-example scores and the bootstrap noise floor (circuit_stability.similarity), each on a case
small enough to check by hand, plus the per-example scores of a real trained model."""

import numpy as np
import pandas as pd
import pytest

from circuit_stability.circuits import select_circuit
from circuit_stability.graph import Graph
from circuit_stability.records import CircuitRecord, ExampleScoresRecord
from circuit_stability.similarity import (
    bootstrap_circuits,
    bootstrap_counts,
    circuit_mask,
    edge_weights,
    jaccard,
    model_similarity,
    pairwise_jaccard,
    real_change,
    summarise,
    weighted_jaccard,
)
from circuit_stability.tables import composition_table, cross_model_table, similarity_table


def test_jaccard_by_hand():
    a = np.array([[1, 1, 0, 0]], dtype=bool)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, ~a) == 0.0
    assert jaccard(a, np.array([[1, 0, 1, 0]], dtype=bool)) == pytest.approx(1 / 3)
    assert np.isnan(jaccard(np.zeros(3, bool), np.zeros(3, bool)))  # empty union: NaN, not 0 or 1
    assert jaccard({"a0.h1", "m0"}, {"m0", "logits"}) == pytest.approx(1 / 3)
    assert np.isnan(jaccard(set(), set()))


def test_weighted_jaccard_by_hand_and_invariant_to_scaling():
    assert weighted_jaccard([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]) == pytest.approx(0.5 / 1.5)
    assert np.isnan(weighted_jaccard([0, 0], [0, 0]))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_jaccard([-1, 0], [0, 1])
    g = Graph(2, 2)
    rng = np.random.default_rng(0)
    s, t = (np.where(g.edge_mask, rng.normal(size=g.edge_mask.shape), np.nan).astype(np.float32) for _ in range(2))
    base = weighted_jaccard(edge_weights(g, s), edge_weights(g, t))
    assert 0 < base < 1
    assert weighted_jaccard(edge_weights(g, 7.0 * s), edge_weights(g, -0.1 * t)) == pytest.approx(base, abs=1e-6)
    mask = np.zeros_like(g.edge_mask)
    mask[0, g.logits_index] = True  # input -> logits only
    w = edge_weights(g, s, mask)
    assert w.sum() == pytest.approx(1.0) and (w > 0).sum() == 1  # the circuit variant: its own edges only


def _circuit(graph: Graph, scores: np.ndarray, size: int, step: int = 1, valid: bool = True) -> CircuitRecord:
    mask = select_circuit(graph, scores, size) if valid else np.zeros_like(graph.edge_mask)
    src, dst = np.nonzero(mask)
    edges = [f"{graph.writer_names[u]}->{graph.reader_names[r]}" for u, r in zip(src, dst)]
    nodes = sorted({e.split("->")[0] for e in edges} | {e.split("->")[1].split("<")[0] for e in edges})
    return CircuitRecord(model="toy", step=step, task="ioi", method="EAP-IG", tokens_seen=step * 10,
                         selection="greedy", pruned=True, threshold=0.8, max_fraction=0.05, min_search_edges=20,
                         max_edges=20, total_edges=graph.n_edges, size=size if valid else 0, edges=edges, nodes=nodes,
                         n_edges=len(edges), reached=valid, valid=valid, invalid_reason=None if valid else "not learnt",
                         validity_margin=0.0, emergence_fraction=0.5, metric_final=1.0, metric_circuit=1.0,
                         metric_model=1.0, metric_empty=0.0,
                         faithfulness={str(size if valid else 0): {"paper": 1.0, "normalized": 1.0}}, mib={},
                         version="test")


def _examples(graph: Graph, n: int, seed: int, noise: float) -> np.ndarray:
    """[n, W, R] per-example scores: a fixed signal plus per-example noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=graph.edge_mask.shape)
    out = signal[None] + noise * rng.normal(size=(n, *graph.edge_mask.shape))
    return np.where(graph.edge_mask[None], out, np.nan).astype(np.float32)


def test_bootstrap_counts_refuse_one_distinct_example():
    with pytest.raises(ValueError, match="at least 2 examples; got 1"):
        bootstrap_counts(1, 50, 0)
    with pytest.raises(ValueError, match="at least 2 resamples"):
        bootstrap_counts(10, 1, 0)
    c = bootstrap_counts(10, 50, 3)
    assert c.shape == (50, 10) and (c.sum(1) == 10).all() and np.array_equal(c, bootstrap_counts(10, 50, 3))


def test_resampling_with_unit_weights_gives_the_main_circuit():
    """All weights 1 reproduce the mean scores, so the 're-sampled' circuit is the main one (Jaccard 1); noisy
    examples give resamples that differ."""
    g = Graph(2, 2)
    ex = _examples(g, 8, 0, noise=3.0)
    rec = ExampleScoresRecord.from_examples(g, ex, 1.0, {"model": "toy", "step": 1, "task": "ioi"})
    main = _circuit(g, ex.mean(0), 6)
    masks, beyond = bootstrap_circuits(g, rec, main, np.ones((2, 8), dtype=np.int64))
    assert [jaccard(m, circuit_mask(g, main)) for m in masks] == [1.0, 1.0] and not beyond.any()
    masks, _ = bootstrap_circuits(g, rec, main, bootstrap_counts(8, 20, 0))
    j = [jaccard(m, circuit_mask(g, main)) for m in masks]
    assert min(j) < 1.0
    with pytest.raises(ValueError, match="not valid"):
        bootstrap_circuits(g, rec, _circuit(g, ex.mean(0), 6, valid=False), np.ones((2, 8), dtype=np.int64))


def test_stored_fraction_keeps_the_top_edges_and_flags_resamples_that_could_reach_past_it():
    g = Graph(2, 2)
    ex = _examples(g, 8, 1, noise=0.0)  # no noise: every resample equals the mean
    full = ExampleScoresRecord.from_examples(g, ex, 1.0, {"model": "toy", "step": 1, "task": "ioi"})
    assert full.meta["unstored_bound"] == 0.0 and full.meta["n_stored"] == g.n_edges
    main = _circuit(g, ex.mean(0), 5)
    counts = bootstrap_counts(8, 10, 0)
    # the top half of edges by |mean|: the circuit's 5 largest-|score| edges lie well inside, nothing flagged
    half = ExampleScoresRecord.from_examples(g, ex, 0.5, {"model": "toy", "step": 1, "task": "ioi"})
    kept = set(zip(half.src.tolist(), half.dst.tolist()))
    rest = [(u, r) for u, r in zip(*g.edge_index) if (u, r) not in kept]
    mean = np.abs(ex.mean(0))
    assert min(mean[u, r] for u, r in kept) >= max(mean[u, r] for u, r in rest)  # the top half by |mean score|
    assert half.meta["unstored_bound"] == pytest.approx(max(mean[u, r] for u, r in rest))  # no noise: |mean| bounds
    masks, beyond = bootstrap_circuits(g, half, main, counts)
    assert not beyond.any() and all(jaccard(m, circuit_mask(g, main)) == 1.0 for m in masks)
    # storing only 2 edges: a 5-edge greedy circuit must use unstored edges (score 0), which is flagged
    tiny = ExampleScoresRecord.from_examples(g, ex, 2 / g.n_edges, {"model": "toy", "step": 1, "task": "ioi"})
    _, beyond = bootstrap_circuits(g, tiny, main, counts)
    assert beyond.all()


def test_example_scores_file_round_trip(tmp_path):
    g = Graph(2, 2)
    ex = _examples(g, 5, 2, noise=1.0)
    rec = ExampleScoresRecord.from_examples(g, ex, 0.3, {"model": "toy", "step": 3, "task": "gp"})
    rec.write(tmp_path / "step3.examples.parquet")
    back = ExampleScoresRecord.read(tmp_path / "step3.examples.parquet")
    assert np.array_equal(back.examples, rec.examples) and np.array_equal(back.src, rec.src)
    assert back.meta["n_stored"] == int(np.ceil(0.3 * g.n_edges)) and back.meta["unstored_bound"] > 0
    with pytest.raises(ValueError, match="stored_fraction must be in"):
        ExampleScoresRecord.from_examples(g, ex, 0.0, {})


def test_per_example_scores_average_to_the_stored_scores(trained_bridge, ioi_prompts):
    """The engine's per-example scores re-weighted with all weights 1 (their mean) give its scores to float32
    rounding, and keeping them does not change the scores."""
    from circuit_stability.attribution import edge_attribution, interpolation_points

    graph = Graph.from_config(trained_bridge.cfg)
    alphas = interpolation_points("EAP-IG", 5, "paper")
    plain = edge_attribution(trained_bridge, graph, ioi_prompts, alphas, 7)
    both = edge_attribution(trained_bridge, graph, ioi_prompts, alphas, 7, per_example=True)
    assert plain.per_example is None and np.array_equal(plain.scores, both.scores, equal_nan=True)
    assert both.per_example.shape == (len(ioi_prompts), graph.n_writers, graph.n_readers)
    rec = ExampleScoresRecord.from_examples(graph, both.per_example, 1.0, {"model": "t", "step": 0, "task": "ioi"})
    src, dst = graph.edge_index
    mean = rec.resampled(np.ones(len(ioi_prompts)))
    scale = float(np.abs(both.scores[src, dst]).max())
    np.testing.assert_allclose(mean, both.scores[src, dst], rtol=2e-6, atol=2e-7 * scale)  # float32 rounding
    assert np.abs(both.per_example[:, src, dst]).std(0).max() > 1e-3  # the examples do differ


def test_pairwise_jaccard_and_percentiles_by_hand():
    m = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=bool)
    p = pairwise_jaccard(m)  # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert p[0] == 0.5 and p[1] == 0.0 and np.isnan(p[5]) and len(p) == 6
    s = summarise(np.array([0.0, 1.0, np.nan]))
    assert (s["lo"], s["median"], s["hi"]) == pytest.approx((0.025, 0.5, 0.975))


def test_real_change_needs_to_fall_below_both_floors():
    assert real_change(0.3, 0.5, 0.6) is True
    assert real_change(0.55, 0.5, 0.6) is False  # above one floor
    assert real_change(float("nan"), 0.5, 0.6) is None


def test_similarity_rows_have_no_gaps_and_nan_where_invalid(tmp_path):
    g = Graph(2, 2)
    ex = {s: _examples(g, 6, s, noise=0.5) for s in (1, 2, 3)}
    recs = [_circuit(g, ex[1].mean(0), 5, 1), _circuit(g, ex[2].mean(0), 5, 2, valid=False),
            _circuit(g, ex[3].mean(0), 5, 3)]
    scores = {("ioi", s): ex[s].mean(0) for s in ex}
    stored = {s: ExampleScoresRecord.from_examples(g, ex[s], 1.0, {"model": "toy", "step": s, "task": "ioi"})
              for s in ex}
    frame = model_similarity(g, {"ioi": recs}, scores, lambda t, s: stored[s], 20, 0)
    assert list(frame["step"]) == [1, 2, 3] and list(frame["valid"]) == [True, False, True]
    bad = frame[~frame["valid"]]
    assert bad[["n_edges", "jaccard_prev", "boot_main_median"]].isna().all().all()
    assert bad["reason"].str.contains("not valid").all()
    assert np.isnan(frame.loc[2, "jaccard_prev"])  # its previous circuit is invalid
    assert frame.loc[2, "jaccard_final"] == 1.0 and frame.loc[2, "weighted_jaccard_final_all"] == 1.0
    assert frame.loc[0, "jaccard_final"] == pytest.approx(jaccard(circuit_mask(g, recs[0]), circuit_mask(g, recs[2])))
    assert 0 <= frame.loc[0, "boot_main_lo"] <= frame.loc[0, "boot_main_median"] <= frame.loc[0, "boot_main_hi"] <= 1
    path = tmp_path / "toy.parquet"
    frame.to_parquet(path)
    table = similarity_table([path])
    assert len(table) == 3 and table["real_change"].isna().all()  # no consecutive pair of valid circuits


def test_composition_by_role_pair_by_hand():
    edges = pd.DataFrame({"model": ["s1"] * 4 + ["s2"] * 2, "task": ["ioi"] * 6, "step": [5] * 6,
                          "tokens_seen": [50] * 6,
                          "src": ["input", "a0.h0", "a0.h1", "m0", "input", "a0.h1"],
                          "dst": ["a0.h0<q>", "a1.h0<v>", "logits", "logits", "a0.h1<k>", "logits"]})
    roles = pd.DataFrame({"model": ["s1"] * 3 + ["s2"] * 2, "step": [5] * 5,
                          "head": ["a0.h0", "a0.h1", "a1.h0", "a0.h0", "a0.h1"],
                          "induction": [True, False, False, False, False],
                          "name_mover": [False, True, True, False, True]})
    comp = composition_table(edges, roles)
    s1 = comp[comp["model"] == "s1"].set_index(["src_role", "dst_role"])["share"]
    assert s1.to_dict() == {("input", "induction"): 0.25, ("induction", "name_mover"): 0.25,
                            ("mlp", "logits"): 0.25, ("name_mover", "logits"): 0.25}
    cross = cross_model_table(comp, edges)
    # s2: input -> name mover 0.5, name mover -> logits 0.5; Σ min = 0.25 (name mover -> logits), Σ max = 1.75
    assert cross["composition_jaccard"].iloc[0] == pytest.approx(0.25 / 1.75)
    assert np.isnan(cross["edge_jaccard"].iloc[0])  # different names, different shapes: head indices not comparable
