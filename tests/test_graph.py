"""The edge graph: edge counts, names and the writer/reader index (design §4)."""

import pytest
import torch
from transformers import GPTNeoXConfig

from circuit_stability.graph import Graph, edge_count
from conftest import trainable

# Published Pythia shapes (L x H) and their edge counts from design §4 / reference.md §3.1.
PYTHIA = {"70m": (6, 8, 3_580), "160m": (12, 12, 32_347), "410m": (24, 16, 231_493), "1b": (16, 8, 27_545),
          "2.8b": (32, 32, 1_591_857), "12b": (36, 40, 3_131_263)}


@pytest.mark.parametrize("name", sorted(PYTHIA))
def test_edge_count_matches_formula(name):
    L, H, expected = PYTHIA[name]
    g = Graph(L, H)
    assert edge_count(L, H) == expected
    assert g.n_edges == expected
    assert int(g.edge_mask.sum()) == expected
    assert g.n_writers == 1 + L * (H + 1) and g.n_readers == L * (3 * H + 1) + 1


def test_pythia_160m_graph_from_its_config():
    """pythia-160m's published hyperparameters (no download): 12 layers x 12 heads -> 32,347 edges."""
    cfg = GPTNeoXConfig(vocab_size=50_304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3_072, rotary_pct=0.25, use_parallel_residual=True)
    g = Graph.from_config(cfg)
    assert (g.n_layers, g.n_heads, g.parallel_attn_mlp) == (12, 12, True)
    assert g.n_edges == 32_347


def test_edge_names_follow_the_contract():
    g = Graph(3, 4)
    names = g.edge_names
    assert len(names) == len(set(names)) == g.n_edges
    for example in ("input->a0.h2<v>", "a0.h2->m1", "m1->logits", "a0.h3->a2.h1<q>", "input->logits"):
        assert example in names
    assert "a1.h0->m1" not in names  # parallel attention: MLP l does not read layer l's heads
    assert "a1.h0->m1" in Graph(3, 4, parallel_attn_mlp=False).edge_names
    assert edge_count(3, 4, parallel_attn_mlp=False) == Graph(3, 4, False).n_edges == g.n_edges + 3 * 4


def test_writers_of_a_reader_are_a_prefix():
    g = Graph(2, 3)
    q = g.reader_index(1, 2, "q")
    assert g.n_upstream[q] == 1 + (g.n_heads + 1)  # input + layer-0 heads + m0
    assert g.writer_names[g.writer_index(0)] == "m0" and g.reader_names[g.reader_index(1)] == "m1"


def test_invalid_graph():
    with pytest.raises(ValueError, match="n_layers"):
        Graph(0, 4)


def test_edge_count_equals_transformer_lens_enumeration(random_suite):
    """TransformerLens 4 enumerates edges per position; at one position its count must equal ours."""
    from transformer_lens.tools.analysis.attribution_patching import (_edge_hook_names,
                                                                      cache_activation_and_gradient, enumerate_edges)

    from circuit_stability.models import load_model

    bridge = load_model("rand", 0, random_suite)
    with trainable(bridge):
        cache = cache_activation_and_gradient(bridge, torch.tensor([[5]]), lambda logits: logits[0, -1, 0],
                                              names_filter=_edge_hook_names(3))
    assert len(enumerate_edges(bridge, cache)) == Graph.from_config(bridge.cfg).n_edges == edge_count(3, 4)


def test_config_without_parallel_attention_flag_is_an_error():
    """The edge set depends on whether MLP l reads layer l's heads, so a config of an unknown family that does not
    say is refused, not defaulted; the sequential families are known by their model type."""
    from transformers import BloomConfig

    with pytest.raises(ValueError, match="neither 'parallel_attn_mlp'.*nor 'use_parallel_residual'.*sequential"):
        Graph.from_config(BloomConfig(n_layer=2, n_head=2))
    sequential = GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=2, use_parallel_residual=False)
    assert Graph.from_config(sequential) == Graph(2, 2, parallel_attn_mlp=False)


def test_gpt2_small_graph_has_the_edge_count_of_eap_ig_and_mib():
    """GPT-2 small's published shape (12 layers x 12 heads, sequential blocks: MLP l reads layer l's heads; the
    learned positions belong to `input`): 32,491 edges, the count hannamw/EAP-IG and MIB give for it."""
    from transformers import GPT2Config

    g = Graph.from_config(GPT2Config(n_layer=12, n_head=12, n_embd=768))
    assert (g.n_layers, g.n_heads, g.parallel_attn_mlp, g.n_kv_heads) == (12, 12, False, 12)
    assert g.n_edges == edge_count(12, 12, parallel_attn_mlp=False) == 32_491
    assert "a3.h1->m3" in g.edge_names and "a3.h1->a3.h2<q>" not in g.edge_names


def _enumerate(L, H, K, parallel):
    """Edges counted from the definition, reader by reader (independent of the formula and of the mask)."""
    n = 0
    for l in range(L):
        before = 1 + l * (H + 1)
        n += (H + 2 * K) * before + (before if parallel else before + H)
    return n + 1 + L * (H + 1)


@pytest.mark.parametrize("shape", [(30, 9, 3, False), (2, 4, 2, False), (4, 8, 1, True), (3, 4, 4, False)])
def test_grouped_query_attention_edges(shape):
    """SmolLM2-135M's shape (30 layers, 9 query heads, 3 key/value heads) among others: one k and one v reader
    per key/value head, read by the H/K query heads of its group (h // (H/K), transformers' repeat_kv)."""
    L, H, K, parallel = shape
    g = Graph(L, H, parallel, K)
    assert g.n_edges == edge_count(L, H, parallel, K) == _enumerate(L, H, K, parallel) == int(g.edge_mask.sum())
    assert g.n_readers == L * (H + 2 * K + 1) + 1 == len(set(g.reader_names))
    size = H // K
    for h in range(H):
        k = g.reader_index(L - 1, h, "k")
        assert g.reader_names[k] == (f"a{L - 1}.kv{h // size}<k>" if K < H else f"a{L - 1}.h{h}<k>")
        assert g.writer_index(L - 1, h) in g.reader_owners[k]
        assert k in g.writer_readers[g.writer_index(L - 1, h)]
    assert [len(o) for o in g.reader_owners[: H + 2 * K + 1]] == [1] * H + [size] * 2 * K + [1]


def test_invalid_key_value_heads():
    with pytest.raises(ValueError, match="n_kv_heads must divide n_heads = 6"):
        Graph(2, 6, False, 4)


def test_olmo2_is_refused_saying_why():
    """OLMo 2 normalises each sublayer's output before the residual: per-head edges are not additive."""
    from transformers import Olmo2Config

    with pytest.raises(NotImplementedError, match="not additive"):
        Graph.from_config(Olmo2Config(num_hidden_layers=2, num_attention_heads=4, hidden_size=32))
