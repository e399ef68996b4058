"""Derived members: a head permutation that changes no function (the planted hand-over of issue 28)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from circuit_stability.suite.derive import derive_model, permute_heads, relabel


def _model(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=16, rotary_pct=1.0, use_parallel_residual=True,
                        tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0,
                        attn_implementation="eager")
    model = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises biases to zero: make them matter
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_permutation_moves_each_heads_rows_and_columns_by_hand():
    """2 heads of d_head 2 (d_model 4): query_key_value rows 0-5 are head 0's (q, k, v), rows 6-11 head 1's;
    dense columns 0-1 head 0's, 2-3 head 1's. Swapping the heads swaps those blocks and leaves dense's bias."""
    name = "gpt_neox.layers.0.attention"
    state = {f"{name}.query_key_value.weight": torch.arange(12.0)[:, None].repeat(1, 4),
             f"{name}.query_key_value.bias": torch.arange(12.0),
             f"{name}.dense.weight": torch.arange(4.0)[None, :].repeat(4, 1),
             f"{name}.dense.bias": torch.arange(4.0)}
    out = permute_heads(state, 0, [1, 0], n_heads=2)
    assert out[f"{name}.query_key_value.bias"].tolist() == [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]
    assert out[f"{name}.query_key_value.weight"][:, 0].tolist() == [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]
    assert out[f"{name}.dense.weight"][0].tolist() == [2, 3, 0, 1]
    assert out[f"{name}.dense.bias"] is state[f"{name}.dense.bias"]
    assert relabel(0, [1, 0]) == 1 and relabel(2, [3, 2, 0, 1]) == 1 and relabel(0, [3, 2, 0, 1]) == 2


def test_permuted_model_computes_the_same_function_and_its_heads_move():
    """Logits equal within float rounding of the reordered sum; head i's attention pattern in the permuted layer
    is the source's head order[i]; a wrong block layout (rows cut as [q of all heads; k; v]) changes the function."""
    source, order = _model(), [2, 0, 3, 1]
    derived = _model(1)
    derived.load_state_dict(permute_heads(source.state_dict(), 1, order, n_heads=4))
    tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = source(tokens, output_attentions=True)
        b = derived(tokens, output_attentions=True)
    assert torch.allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.attentions[0], b.attentions[0])  # layer 0 untouched
    for i, h in enumerate(order):
        assert torch.allclose(b.attentions[1][:, i], a.attentions[1][:, h], atol=1e-6)
    wrong = dict(source.state_dict())
    w = wrong["gpt_neox.layers.1.attention.query_key_value.weight"]
    d = 16 // 4
    by_kind = torch.cat([torch.arange(k * 16 + h * d, k * 16 + (h + 1) * d) for k in range(3) for h in order])
    wrong["gpt_neox.layers.1.attention.query_key_value.weight"] = w[by_kind]
    derived.load_state_dict(wrong)
    with torch.no_grad():
        assert not torch.allclose(a.logits, derived(tokens).logits, atol=1e-3)


def test_bad_orders_are_refused_naming_the_order():
    state = _model().state_dict()
    with pytest.raises(ValueError, match=r"order \[0, 0, 1, 2\] is not a permutation of the 4 heads 0..3"):
        permute_heads(state, 0, [0, 0, 1, 2], 4)
    with pytest.raises(ValueError, match="is the identity"):
        permute_heads(state, 0, [0, 1, 2, 3], 4)
    with pytest.raises(ValueError, match="no attention parameters for layer 5.*the model has 2 layers"):
        permute_heads(state, 5, [1, 0, 2, 3], 4)


def test_derived_checkpoints_copy_before_and_permute_from_the_step(tmp_path):
    source = _model()
    for step in (0, 10, 20):
        source.save_pretrained(tmp_path / f"src/step{step}")
    derive_model(tmp_path / "src", tmp_path / "out", [0, 10, 20], layer=0, order=[1, 0, 2, 3], from_step=10)
    assert (tmp_path / "out/step0/model.safetensors").read_bytes() == \
        (tmp_path / "src/step0/model.safetensors").read_bytes()
    for step in (10, 20):
        derived = GPTNeoXForCausalLM.from_pretrained(tmp_path / f"out/step{step}")
        qkv = "gpt_neox.layers.0.attention.query_key_value.weight"
        assert torch.equal(derived.state_dict()[qkv][:12], source.state_dict()[qkv][12:24])
    with pytest.raises(ValueError, match=r"from_step 5 is not a checkpoint step; valid: \[0, 10, 20\]"):
        derive_model(tmp_path / "src", tmp_path / "bad", [0, 10, 20], layer=0, order=[1, 0, 2, 3], from_step=5)
