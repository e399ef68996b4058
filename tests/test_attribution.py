"""The attribution engine against independent references, on a real trained suite model."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from circuit_stability.attribution import (edge_attribution, exact_scores, interpolation_points, patched_metric)
from circuit_stability.behavior import example_metrics
from circuit_stability.graph import Graph
from conftest import TRAINED_CFG, direct_effect_mask, largest_direct_effect_by_hand, trainable

IG5, EAP = interpolation_points("EAP-IG", 5, "paper"), interpolation_points("EAP", 1, "paper")
B = 70  # examples per forward pass

# TransformerLens 4 Node kinds -> our node names (design §4).
_WRITER = {"embed": lambda n: "input", "attn_head_out": lambda n: f"a{n.layer}.h{n.head}",
           "mlp_out": lambda n: f"m{n.layer}"}
_READER = {"q_input": lambda n: f"a{n.layer}.h{n.head}<q>", "k_input": lambda n: f"a{n.layer}.h{n.head}<k>",
           "v_input": lambda n: f"a{n.layer}.h{n.head}<v>", "mlp_in": lambda n: f"m{n.layer}",
           "logits": lambda n: "logits"}


def test_interpolation_points():
    assert interpolation_points("EAP-IG", 5, "paper") == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert interpolation_points("EAP-IG", 5, "code") == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert interpolation_points("EAP", 1, "paper") == [1.0]
    with pytest.raises(ValueError, match="convention"):
        interpolation_points("EAP-IG", 5, "middle")


def test_corrupted_gradient_eap_equals_transformer_lens(trained_bridge, ioi_prompts):
    """With the gradient at the corrupted input (alpha = 0) our scores are TransformerLens 4's edge EAP summed
    over positions with the sign flipped. Tolerance: 1e-4 of the largest |score| (float32 sums in a
    different order)."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    n = 6
    prompts = next(ioi_prompts.chunks(n))
    ours = edge_attribution(bridge, graph, prompts, [0.0], B).scores
    w_idx = {name: i for i, name in enumerate(graph.writer_names)}
    r_idx = {name: i for i, name in enumerate(graph.reader_names)}
    theirs = np.zeros_like(ours)
    for i in range(n):
        pos, io, s = int(prompts.position[i]), int(prompts.answer_ids[i, 0]), int(prompts.answer_ids[i, 1])
        metric = lambda logits, pos=pos, io=io, s=s: logits[0, pos, io] - logits[0, pos, s]  # noqa: E731
        width = pos + 1
        with trainable(bridge):
            res = attribution_patch(bridge, prompts.clean[i : i + 1, :width],
                                    prompts.corrupted[i : i + 1, :width], metric,
                                    EdgeAttributionConfig(granularity="edge"))
        for (u, v), score in res.edge_scores.items():
            theirs[w_idx[_WRITER[u.kind](u)], r_idx[_READER[v.kind](v)]] += score / n
    theirs[~graph.edge_mask] = np.nan
    m = graph.edge_mask
    scale = np.abs(theirs[m]).max()
    assert scale > 0.1
    np.testing.assert_allclose(ours[m], -theirs[m], atol=1e-4 * scale, rtol=0)


def test_eap_ig_agrees_with_exact_patching(trained_bridge, ioi_prompts):
    """EAP-IG (m = 5) against exact activation patching of every edge, one edge per forward."""
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    prompts = next(ioi_prompts.chunks(10))  # 10 examples x 478 edges: one patched forward per edge
    ig = edge_attribution(bridge, graph, prompts, IG5, B).scores
    eap = edge_attribution(bridge, graph, prompts, EAP, B).scores
    exact = exact_scores(bridge, graph, prompts, B)
    m = graph.edge_mask
    r_ig, r_eap = pearsonr(ig[m], exact[m])[0], pearsonr(eap[m], exact[m])[0]
    rho_ig = spearmanr(ig[m], exact[m])[0]
    print(f"\nPearson r with exact patching over {graph.n_edges} edges: EAP-IG {r_ig:.4f}, EAP {r_eap:.4f}; "
          f"Spearman EAP-IG {rho_ig:.3f}")
    assert r_ig >= 0.95 and r_ig > r_eap  # integrated gradients beat the single-gradient estimate
    # the top-20 edges by exact |effect| are mostly among EAP-IG's top 40
    top_exact = set(np.argsort(-np.abs(exact[m]))[:20])
    top_ig = set(np.argsort(-np.abs(ig[m]))[:40])
    assert len(top_exact & top_ig) >= 15


def test_eap_ig_agrees_with_exact_patching_on_probability_difference(trained_bridge, greater_than_prompts):
    """The same check on Greater-Than, whose metric is a probability difference over 100 answer tokens (a
    softmax in the gradient path): EAP-IG against exact patching of every edge (measured on the fixture:
    Pearson r 0.99, EAP 0.93; the top 20 edges by exact effect all among EAP-IG's top 40)."""
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    prompts = greater_than_prompts
    ig = edge_attribution(bridge, graph, prompts, IG5, B).scores
    eap = edge_attribution(bridge, graph, prompts, EAP, B).scores
    exact = exact_scores(bridge, graph, prompts, B)
    m = graph.edge_mask
    r_ig, r_eap = pearsonr(ig[m], exact[m])[0], pearsonr(eap[m], exact[m])[0]
    print(f"\nGreater-Than: Pearson r with exact patching: EAP-IG {r_ig:.4f}, EAP {r_eap:.4f}")
    assert r_ig >= 0.95 and r_ig > r_eap
    top_exact = set(np.argsort(-np.abs(exact[m]))[:20])
    assert len(top_exact & set(np.argsort(-np.abs(ig[m]))[:40])) >= 15


def test_completeness_of_input_edges(trained_bridge, ioi_prompts):
    """Edges leaving `input` sum to Δe · mean_k ∂M/∂e (every reader reads the embedding directly), a Riemann sum
    of the path integral, so it tends to M(corrupted) − M(clean) as m grows (Sundararajan et al. 2017)."""
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    errors = []
    for m in (1, 5, 20, 100):
        att = edge_attribution(bridge, graph, ioi_prompts, interpolation_points("EAP-IG", m, "paper"), B)
        target = att.metric_corrupted - att.metric_clean
        errors.append(abs(np.nansum(att.scores[0]) - target) / abs(target))
    print(f"\ncompleteness error at m = 1, 5, 20, 100: {[round(e, 4) for e in errors]}")
    assert errors[3] < errors[1] < errors[0] and errors[3] < 0.02, errors


def test_bfloat16_scores_rank_like_float32(trained_suite, ioi_prompts):
    """The same checkpoint in bfloat16: scores accumulate in float32 and rank the edges like float32 ones."""
    from circuit_stability.models import load_model

    f32 = load_model("mini-t", TRAINED_CFG.max_steps, trained_suite, device="cpu", dtype="float32")
    bf16 = load_model("mini-t", TRAINED_CFG.max_steps, trained_suite, device="cpu", dtype="bfloat16")
    graph = Graph.from_config(f32.cfg)
    a = edge_attribution(f32, graph, ioi_prompts, IG5, B).scores
    b = edge_attribution(bf16, graph, ioi_prompts, IG5, B).scores
    assert b.dtype == np.float32
    rho = spearmanr(a[graph.edge_mask], b[graph.edge_mask])[0]
    print(f"\nSpearman rho, bfloat16 vs float32 EAP-IG scores: {rho:.4f}")
    assert rho >= 0.95


@pytest.mark.parametrize("form", ["keep", "drop"])
def test_full_and_empty_graph_through_the_hooks(trained_bridge, ioi_prompts, form):
    """Every edge kept, sent through the patching hooks in either form (not the short-cut to the plain runs),
    reproduces the clean run's metric; every edge dropped reproduces the corrupted run's. Tolerance 1e-4
    (float32 sums of up to 20 writer outputs in another order)."""
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    clean, corrupted = example_metrics(bridge, ioi_prompts, B)
    keep = torch.stack([torch.ones(graph.n_writers, graph.n_readers, dtype=torch.bool),
                        torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)])
    full, empty = patched_metric(bridge, graph, ioi_prompts, keep, B, form=form, skip_trivial=False).tolist()
    assert clean.mean() > 3  # the model has learnt IOI, so the two runs differ
    assert full == pytest.approx(float(clean.mean()), abs=1e-4)
    assert empty == pytest.approx(float(corrupted.mean()), abs=1e-4)
    assert all(p.grad is None for p in bridge.parameters())  # parameters stay frozen


def test_partial_mask_equals_the_value_rebuilt_by_hand(trained_bridge, ioi_prompts):
    """A head's direct effect as an edge mask: keep every edge except those into the logits, and of those only
    aH->logits. Every node then reads the clean residual stream and writes its clean output, while the logits
    read resid_post(corrupted) + (a_H(clean) − a_H(corrupted)). Rebuilt from cached head outputs through the
    model's final layer norm and unembedding, this must equal the engine's patched metric in both forms
    (tolerance 1e-4), for the head with the largest direct effect."""
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    prompts = next(ioi_prompts.chunks(8))
    layer, head, expected, m_corrupted = largest_direct_effect_by_hand(bridge, graph, prompts)
    assert abs(expected - m_corrupted) > 0.5  # the patch moves the metric
    keep = direct_effect_mask(graph, layer, head)
    for form in ("keep", "drop"):
        engine = float(patched_metric(bridge, graph, prompts, keep, B, form=form)[0])
        assert engine == pytest.approx(expected, abs=1e-4), form


def test_masks_batched_equal_one_by_one(trained_bridge, ioi_prompts):
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    gen = torch.Generator().manual_seed(0)
    keep = torch.rand((3, graph.n_writers, graph.n_readers), generator=gen) < 0.5
    together = patched_metric(bridge, graph, ioi_prompts, keep, B)
    apart = torch.cat([patched_metric(bridge, graph, ioi_prompts, keep[i : i + 1], B) for i in range(3)])
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-5)


def test_both_patching_forms_agree(trained_bridge, ioi_prompts):
    """in − Σ_dropped Δ and in(corrupted) + Σ_kept Δ are the same patched input (the reader input is the sum of
    its upstream writers); masks of every density."""
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    gen = torch.Generator().manual_seed(1)
    keep = torch.rand((4, graph.n_writers, graph.n_readers), generator=gen) < torch.tensor([0.02, 0.3, 0.7, 0.98])[:, None, None]
    a = patched_metric(bridge, graph, ioi_prompts, keep, B, form="keep")
    b = patched_metric(bridge, graph, ioi_prompts, keep, B, form="drop")
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


def test_scores_are_deterministic(trained_bridge, ioi_prompts):
    bridge, graph = trained_bridge, Graph.from_config(trained_bridge.cfg)
    a = edge_attribution(bridge, graph, ioi_prompts, IG5, B).scores
    b = edge_attribution(bridge, graph, ioi_prompts, IG5, B).scores
    np.testing.assert_array_equal(a, b)
