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
    """The edge set depends on whether MLP l reads layer l's heads, so a config that does not say is refused
    (GPT-2's config has neither `use_parallel_residual` nor `parallel_attn_mlp`), not defaulted."""
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="neither 'parallel_attn_mlp'.*nor 'use_parallel_residual'"):
        Graph.from_config(GPT2Config(n_layer=2, n_head=2))
    sequential = GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=2, use_parallel_residual=False)
    assert Graph.from_config(sequential) == Graph(2, 2, parallel_attn_mlp=False)


def test_structure_lookups():
    """Graph owns node <-> reader structure: each reader's writer, each writer's readers, names -> indices."""
    g = Graph(2, 3)
    q = g.reader_index(1, 2, "q")
    assert g.reader_writer[q] == g.writer_index(1, 2) and g.reader_writer[g.logits_index] == -1
    assert [g.reader_names[r] for r in g.writer_readers[g.writer_index(1, 2)]] == ["a1.h2<q>", "a1.h2<k>", "a1.h2<v>"]
    assert list(g.writer_readers[g.writer_index(0)]) == [g.reader_index(0)] and len(g.writer_readers[0]) == 0
    src, dst = g.edge_ids(["input", "a0.h1"], ["logits", "a1.h2<v>"])
    assert g.edge_mask[src, dst].all() and g.writer_ids["a0.h1"] == src[1] and g.reader_ids["a1.h2<v>"] == dst[1]
    with pytest.raises(ValueError, match="a1.h0->m1 is not an edge"):  # parallel attention
        g.edge_ids(["a1.h0"], ["m1"])
    with pytest.raises(ValueError, match="edge a9.h0->logits names 'a9.h0', which is not a writer"):
        g.edge_ids(["input", "a9.h0"], ["logits", "logits"])
    with pytest.raises(ValueError, match=r"edge a0.h0->a7.h0<q> names 'a7.h0<q>', which is not a reader"):
        g.edge_ids(["a0.h0"], ["a7.h0<q>"])
    assert g.reader_node(q) == "a1.h2" and g.reader_node(g.logits_index) == "logits"
