"""The attribution engine on other architectures than GPT-NeoX: sequential blocks with learned positions (GPT-2),
sequential blocks with grouped-query attention and RMSNorm (Llama: SmolLM2, Amber), sequential blocks with
non-parametric layer norm (OLMo 1); OLMo 2 refused. Small random models of each, saved as Hugging Face folders
and loaded through the same `load_model` path as the suite: the patching identities (every edge kept = the clean
run, none = the corrupted run, a partial mask = the value rebuilt by hand), EAP-IG against exact patching, and the
probe that refuses a graph which does not describe the model."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from circuit_stability.attribution import Prompts, edge_attribution, exact_scores, interpolation_points, patched_metric
from circuit_stability.behavior import example_metrics
from circuit_stability.graph import Graph
from circuit_stability.models import check_reader_inputs, load_model
from circuit_stability.suite import corpus
from circuit_stability.suite.tokenizer import build_tokenizer
from circuit_stability.tasks import make_dataset
from conftest import direct_effect_mask, hooked_paper_form, largest_direct_effect_by_hand

B = 16


def _config(arch: str, vocab: int):
    """A 3-layer, 4-head, d_model 32 model of each family (Llama with 2 key/value heads), weights drawn wider than
    the default initialisation (std 0.1, not 0.02) so that clean and corrupted runs differ by more than rounding.
    Wider still makes the random model so nonlinear that EAP-IG and exact patching part for every family alike
    (measured 2026-12-04 at std 0.2: Pearson r 0.85 GPT-NeoX, 0.86 Llama, 0.88 OLMo, 0.92 GPT-2; at 0.1: 0.97,
    0.97, 0.97, 0.99)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Olmo2Config, OlmoConfig

    common = dict(vocab_size=vocab, initializer_range=0.1, tie_word_embeddings=False)
    sized = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                 max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    if arch == "neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, **common)
    if arch == "gpt2":
        return GPT2Config(n_positions=64, n_embd=32, n_layer=3, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, **common)
    if arch == "llama-gqa":
        return LlamaConfig(num_key_value_heads=2, **sized, **common)
    if arch == "olmo":
        return OlmoConfig(**sized, **common)
    if arch == "olmo2":
        return Olmo2Config(num_key_value_heads=2, **sized, **common)
    raise ValueError(arch)


EXPECTED = {"neox": Graph(3, 4, True), "gpt2": Graph(3, 4, False), "llama-gqa": Graph(3, 4, False, 2), "olmo": Graph(3, 4, False)}


def _save(root, arch: str):
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(corpus.lexicon_sample())
    torch.manual_seed(0)
    folder = root / arch / "step0"
    AutoModelForCausalLM.from_config(_config(arch, len(tok))).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


_LOADED: dict = {}


def _loaded(arch: str, tmp_path_factory):
    if arch not in _LOADED:
        root = tmp_path_factory.mktemp(arch)
        _save(root, arch)
        bridge = load_model(arch, 0, root, device="cpu")  # runs check_reader_inputs on the model's graph
        ds = make_dataset("ioi", bridge.tokenizer, 8, seed=1)
        _LOADED[arch] = (arch, bridge, Prompts.from_dataset(ds, bridge.tokenizer.pad_token_id))
    return _LOADED[arch]


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def arch_model(request, tmp_path_factory):
    return _loaded(request.param, tmp_path_factory)


def test_graph_of_each_architecture(arch_model):
    arch, bridge, _ = arch_model
    assert Graph.from_config(bridge.cfg) == EXPECTED[arch]


@pytest.mark.parametrize("form", ["keep", "drop"])
def test_full_and_empty_graph_through_the_hooks(arch_model, form):
    """Every edge kept, sent through the patching hooks, reproduces the clean run's metric; every edge dropped the
    corrupted run's (tolerance 1e-4 of the metric's scale: float32 sums in another order)."""
    arch, bridge, prompts = arch_model
    graph = Graph.from_config(bridge.cfg)
    clean, corrupted = example_metrics(bridge, prompts, B)
    assert np.abs(clean - corrupted).max() > 0.05  # the two runs differ
    keep = torch.stack([torch.ones(graph.n_writers, graph.n_readers, dtype=torch.bool),
                        torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)])
    full, empty = patched_metric(bridge, graph, prompts, keep, B, form=form, skip_trivial=False).tolist()
    assert full == pytest.approx(float(clean.mean()), abs=1e-4)
    assert empty == pytest.approx(float(corrupted.mean()), abs=1e-4)


def test_partial_mask_equals_the_value_rebuilt_by_hand(arch_model):
    """A head's direct effect (every edge kept but those into the logits, of which only a_H->logits): the logits
    read resid_post(corrupted) + a_H(clean) − a_H(corrupted), rebuilt through the final norm and unembedding."""
    arch, bridge, prompts = arch_model
    graph = Graph.from_config(bridge.cfg)
    layer, head, expected, m_corrupted = largest_direct_effect_by_hand(bridge, graph, prompts)
    assert abs(expected - m_corrupted) > 0.01  # the patch moves the metric
    keep = direct_effect_mask(graph, layer, head)
    for form in ("keep", "drop"):
        assert float(patched_metric(bridge, graph, prompts, keep, B, form=form)[0]) == pytest.approx(expected, abs=1e-4)


def test_a_shared_key_input_patches_its_whole_group(tmp_path_factory):
    """Grouped-query attention: dropping the edge input->a{l}.kv{g}<k> (or <v>) gives every query head of group g
    the key (value) input in which the embedding is the corrupted one — one intervention on the shared input. The
    engine's patched metric equals the clean run with that input (blocks.{l}.hook_{k,v}_input, index g of its
    key/value-head axis) rebuilt by hand as x − (embed(clean) − embed(corrupted)), for the (layer, group, input)
    whose patch moves the metric most (tolerance 2e-5)."""
    _, bridge, prompts = _loaded("llama-gqa", tmp_path_factory)
    graph = Graph.from_config(bridge.cfg)
    assert graph.reader_names[graph.reader_index(0, 1, "k")] == "a0.kv0<k>" == \
        graph.reader_names[graph.reader_index(0, 0, "k")]
    _, clean = bridge.run_with_cache(prompts.clean, names_filter=lambda n: n == "hook_embed")
    _, corr = bridge.run_with_cache(prompts.corrupted, names_filter=lambda n: n == "hook_embed")
    delta = clean["hook_embed"] - corr["hook_embed"]

    def by_hand(layer: int, g: int, c: str) -> float:
        def swap(x, hook):
            x = x.clone()
            x[:, :, g] -= delta.to(x.dtype)
            return x

        with torch.no_grad(), bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_{c}_input", swap)]):
            return float(prompts.metric_values(bridge(prompts.clean)).mean())

    m_clean = float(example_metrics(bridge, prompts, B)[0].mean())
    cases = [(l, g, c) for l in range(graph.n_layers) for g in range(graph.n_kv_heads) for c in "kv"]
    layer, g, c = max(cases, key=lambda x: abs(by_hand(*x) - m_clean))
    expected = by_hand(layer, g, c)
    assert abs(expected - m_clean) > 5e-3  # the patch moves the metric
    keep = torch.from_numpy(graph.edge_mask.copy()).unsqueeze(0)
    keep[0, 0, graph.reader_columns(layer, c)[g]] = False
    for form in ("keep", "drop"):
        assert float(patched_metric(bridge, graph, prompts, keep, B, form=form)[0]) == pytest.approx(expected, abs=2e-5)


def test_eap_ig_agrees_with_exact_patching(arch_model):
    """EAP-IG (m = 5) against exact patching of every edge, one edge per forward."""
    arch, bridge, prompts = arch_model
    graph = Graph.from_config(bridge.cfg)
    ig = edge_attribution(bridge, graph, prompts, interpolation_points("EAP-IG", 5, "paper"), B).scores
    exact = exact_scores(bridge, graph, prompts, B)
    m = graph.edge_mask
    r = pearsonr(ig[m], exact[m])[0]
    print(f"\n{arch}: Pearson r of EAP-IG with exact patching over {graph.n_edges} edges: {r:.4f}")
    assert r >= 0.95


def test_a_graph_that_misreads_the_blocks_is_refused(arch_model):
    """The broken variant: a sequential model read as parallel (MLP l not reading layer l's heads). The probe
    refuses it, and patching with it does not reproduce the clean run with every edge kept. (GPT-NeoX read as
    sequential is refused by the probe too.)"""
    arch, bridge, prompts = arch_model
    right = Graph.from_config(bridge.cfg)
    if right.parallel_attn_mlp:  # GPT-NeoX: the broken variant is the other way round
        wrong = Graph(right.n_layers, right.n_heads, False, right.n_kv_heads)
        with pytest.raises(RuntimeError, match=r"blocks\.\d\.hook_mlp_in: the change of this reader input"):
            check_reader_inputs(bridge, wrong)
        return
    wrong = Graph(right.n_layers, right.n_heads, True, right.n_kv_heads)
    with pytest.raises(RuntimeError, match=r"blocks\.\d\.hook_mlp_in: the change of this reader input"):
        check_reader_inputs(bridge, wrong)
    clean, _ = example_metrics(bridge, prompts, B)
    keep = torch.ones((1, wrong.n_writers, wrong.n_readers), dtype=torch.bool)
    full = float(patched_metric(bridge, wrong, prompts, keep, B, form="keep", skip_trivial=False)[0])
    assert abs(full - float(clean.mean())) > 1e-3


def test_olmo2_is_refused_at_load(tmp_path):
    _save(tmp_path, "olmo2")
    with pytest.raises(NotImplementedError, match="OLMo 2 normalises each attention and MLP output"):
        load_model("olmo2", 0, tmp_path, device="cpu")


def test_ov_weights_of_each_family(tmp_path_factory):
    """The OV-circuit weights the component scores read: with grouped-query attention query head h gets its
    group's value weights (Hugging Face's v_proj rows of key/value head h // (H/K), read here from the model
    itself), a bias-free value projection a zero b_V, a norm without a scale (OLMo 1) γ = 1, and only a LayerNorm
    (not an RMSNorm) centres the head's output."""
    from transformers import AutoModelForCausalLM

    from circuit_stability.components import centres, ov_weights

    for arch, centred in (("llama-gqa", False), ("olmo", True), ("gpt2", True), ("neox", True)):
        _, bridge, _ = _loaded(arch, tmp_path_factory)
        W_V, b_V, W_O, W_U = ov_weights(bridge)
        H, d_head = bridge.cfg.n_heads, bridge.cfg.d_head
        assert W_V.shape == (3, H, 32, d_head) and b_V.shape == (3, H, d_head) and W_O.shape == (3, H, d_head, 32)
        assert centres(bridge) is centred
        if arch in ("llama-gqa", "olmo"):
            hf = AutoModelForCausalLM.from_pretrained(bridge.cfg.model_name).eval()
            assert not b_V.any()
            size = H // (bridge.cfg.n_key_value_heads or H)
            for layer in range(3):
                v = hf.model.layers[layer].self_attn.v_proj.weight.detach()  # [K·d_head, d_model]
                for h in range(H):
                    g = h // size
                    torch.testing.assert_close(W_V[layer, h], v[g * d_head : (g + 1) * d_head].T)
            gamma = hf.model.norm.weight.detach() if arch == "llama-gqa" else torch.ones(32)
            torch.testing.assert_close(W_U, gamma[:, None] * hf.lm_head.weight.detach().T)


def test_path_patching_on_each_architecture(arch_model):
    """Path patching (circuit_stability.stability) on each family: form (b) equals the engine's edge-mask patch
    dropping exactly sender -> receivers, and form (a) equals the three hooked runs, for the logits, two layer-2
    queries and two layer-2 value inputs (one shared key/value input under grouped-query attention). With
    sequential blocks a layer-1 sender reaches its own layer's MLP: the hooked runs add its Δ there, so a
    stability module that skipped it would differ."""
    from circuit_stability.stability import path_patch, receiver_readers

    arch, bridge, prompts = arch_model
    graph = Graph.from_config(bridge.cfg)
    senders = [(0, 1), (1, 0), (1, 3)]
    sets = [[graph.logits_index], receiver_readers(graph, "name_mover_queries", [(2, 0), (2, 2)]),
            receiver_readers(graph, "s_inhibition_values", [(2, 0), (2, 1)])]
    assert len(sets[2]) == (1 if graph.grouped else 2)
    moved = 0.0
    for readers in sets:
        ours = path_patch(bridge, graph, prompts, senders, readers, "direct")
        keep = torch.ones((len(senders), graph.n_writers, graph.n_readers), dtype=torch.bool)
        for i, s in enumerate(senders):
            keep[i, graph.writer_index(*s), readers] = False
        torch.testing.assert_close(ours, patched_metric(bridge, graph, prompts, keep, B), atol=2e-5, rtol=1e-5)
        paper = path_patch(bridge, graph, prompts, senders, readers, "paper")
        slow = torch.tensor([hooked_paper_form(bridge, graph, prompts, s, readers) for s in senders])
        torch.testing.assert_close(paper, slow, atol=2e-5, rtol=1e-5, msg=lambda m: f"{readers}: {m}")
        moved = max(moved, float((paper - float(example_metrics(bridge, prompts, B)[0].mean())).abs().max()))
    assert moved > 1e-3  # the patches do something


def test_library_example_runs_on_any_bridge(trained_suite, tmp_path):
    """examples/library.py (docs/architectures.md) as a researcher runs it: on the trained test model it prints the
    scores and a valid minimal circuit; on a random GPT-2 folder (sequential blocks, learned positions) it runs
    the same code through to the search's verdict."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import TRAINED_CFG

    script = Path(__file__).parents[1] / "examples" / "library.py"
    out = subprocess.run([sys.executable, str(script), str(trained_suite / "mini-t" / f"step{TRAINED_CFG.max_steps}")],
                         capture_output=True, text=True, check=True).stdout
    assert "edges; logit difference" in out and "minimal circuit:" in out and "f_paper >= 0.8: True" in out, out
    folder = _save(tmp_path, "gpt2")
    out = subprocess.run([sys.executable, str(script), str(folder), "8"], capture_output=True, text=True,
                         check=True).stdout
    assert "262 edges" in out and ("minimal circuit:" in out or "no valid circuit:" in out), out


def test_cost_model_shapes_reproduce_published_parameter_counts():
    """The published shapes (circuit_stability.scale, the cost model's other-family rows and the scheduler's hub
    resources): parameters from each shape land within 1% of the totals the publishers give (GPT-2 124M and 355M,
    SmolLM2 135M, 362M and 1.7B, OLMo 1.2B and 6.9B, Amber (Llama-7B's shape) 6.7B, Llama 3 8.0B), and
    Llama-3-8B's EAP-IG fits one 80 GB GPU at a batch of at least 16 (bfloat16 weights, float32 buffers)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("cost_model", Path(__file__).parents[1] / "benchmarks" / "cost_model.py")
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    from circuit_stability.scale import PUBLISHED_SHAPES

    published = {"gpt2-small": 124e6, "gpt2-medium": 355e6, "smollm2-135m": 135e6, "smollm2-360m": 362e6,
                 "smollm2-1.7b": 1.71e9, "olmo-1b": 1.18e9, "olmo-7b": 6.89e9, "amber": 6.74e9, "llama-3-8b": 8.03e9}
    for name, total in published.items():
        assert PUBLISHED_SHAPES[name].n_parameters == pytest.approx(total, rel=0.01), name
    llama = cost.family_costs("llama-3-8b", 300.0, 5, 16)
    assert llama["edges"] == Graph(32, 32, False, 8).n_edges and 16 <= llama["max_batch"] and llama["gpu_gb"] < 80
