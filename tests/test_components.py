"""Head-function scores from raw attention patterns (a first cut of the components stage)."""

from __future__ import annotations

import pytest
import torch

from circuit_stability.components import content_token_ids, head_scores, pattern_scores, repeated_random_tokens


def test_scores_of_hand_built_heads():
    """L = 3 (sequence a b c a b c). Head 0 attends from q to q - 2, the token after the earlier copy (positions
    0 and 1 attend to 0); head 1 spreads uniformly over its causal prefix."""
    L, T = 3, 6
    induction_head = torch.zeros(T, T)
    for q in range(T):
        induction_head[q, max(q - (L - 1), 0)] = 1.0
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    s = pattern_scores(torch.stack([induction_head, uniform]), L)
    # induction: the diagonal A[q, q-2], q = 2..5; duplicate-token: A[q, q-3], q = 3..5; previous: A[q, q-1], q = 1..5
    assert s["induction"].tolist() == pytest.approx([1.0, (1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 4])
    assert s["duplicate_token"].tolist() == pytest.approx([0.0, (1 / 4 + 1 / 5 + 1 / 6) / 3])
    assert s["previous_token"].tolist() == pytest.approx([1 / 5, (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 5])
    with pytest.raises(ValueError, match=r"patterns end in \(6, 6\); a repeated block of 4 tokens gives \(8, 8\)"):
        pattern_scores(uniform, 4)


def test_content_tokens_are_words_and_numbers(suite_tokenizer):
    ids = content_token_ids(suite_tokenizer).tolist()
    tokens = set(suite_tokenizer.convert_ids_to_tokens(ids))
    assert {"ĠMary", "Ġmary", "Ġ18", "Ġyear", "Ġhappy"} <= tokens  # years are two tokens, " 18" "50"
    assert not tokens & {"Mary", "50", ".", ",", "'t", "<|endoftext|>", "<|padding|>", "<|unk|>", "ĠĠ"}


def test_repeated_random_tokens():
    ids = torch.arange(100, 130)
    t = repeated_random_tokens(ids, 20, batch=3, seed=0)
    assert t.shape == (3, 40) and torch.equal(t[:, :20], t[:, 20:])
    assert all(len(set(row[:20].tolist())) == 20 for row in t) and set(t.flatten().tolist()) <= set(ids.tolist())
    assert torch.equal(t, repeated_random_tokens(ids, 20, batch=3, seed=0))
    with pytest.raises(ValueError, match="need 2 <= length <= 30 distinct ids; got length 31"):
        repeated_random_tokens(ids, 31, batch=1, seed=0)


def test_head_scores_read_the_models_own_attention_probabilities(trained_suite, trained_bridge):
    """The scores of a trained checkpoint computed from the bridge's pattern hooks equal those from Hugging Face's
    own attention probabilities (eager attention, output_attentions) of the same checkpoint."""
    from conftest import TRAINED_CFG
    from transformers import GPTNeoXForCausalLM

    tokens = repeated_random_tokens(torch.arange(10, trained_bridge.cfg.d_vocab), 20, batch=4, seed=0)
    ours = head_scores(trained_bridge, tokens)
    hf = GPTNeoXForCausalLM.from_pretrained(trained_suite / "mini-t" / f"step{TRAINED_CFG.max_steps}",
                                            attn_implementation="eager").eval()
    with torch.no_grad():
        att = hf(tokens, output_attentions=True).attentions  # n_layers x [batch, heads, q, k]
    ref = pattern_scores(torch.stack([a.mean(0) for a in att]), 20)
    for name in ("induction", "duplicate_token", "previous_token"):
        assert ours[name].shape == (3, 6)
        torch.testing.assert_close(ours[name], ref[name], atol=1e-5, rtol=0)
