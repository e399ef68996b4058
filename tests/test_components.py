"""Head-function scores: attention-pattern scores and OV-circuit scores on hand-built heads and a trained model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from circuit_stability.components import (content_token_ids, copy_scores, effective_embedding, head_inputs,
                                         head_path_patch, head_scores, ioi_head_effects, ioi_name_positions,
                                         ioi_position_swap, name_attention, normalised_effect, ov_head_scores,
                                         ov_logits, ov_weights, pattern_scores, repeated_random_tokens,
                                         s_inhibition_test, successor_scores, successor_sequences)


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


# ------------------------------------------------------------------ OV-circuit scores on hand-built heads
def _ov(maps: list[torch.Tensor], d: int):
    """One layer of heads whose OV circuit is the matrix maps[h] ([d, d], d_head = d), no bias."""
    W_V = torch.stack([torch.eye(d) for _ in maps])[None]  # [1, H, d, d]
    W_O = torch.stack(maps)[None]
    return W_V, torch.zeros(1, len(maps), d), W_O


def test_copy_scores_of_hand_built_heads():
    """Vocabulary of 6 tokens = the residual basis; W_U the identity. Names at 4 positions: 0, 1, 4, 5. Head 0
    copies (identity): copy 100, negative 0. Head 1 is its negation: copy 0, negative 100. Head 2 copies tokens
    0 and 1 but writes token 2 for 4 and 5: copy 50. Top-1."""
    d = 6
    names = torch.tensor([0, 1, 4, 5])
    x = torch.eye(d)[names][None]  # [1 layer, 4 positions, d]
    half = torch.eye(d)
    half[4], half[5] = torch.eye(d)[2], torch.eye(d)[2]
    W_V, b_V, W_O = _ov([torch.eye(d), -torch.eye(d), half], d)
    copy = copy_scores(x, names, W_V, b_V, W_O, torch.eye(d), k=1)
    negative = copy_scores(x, names, W_V, b_V, W_O, torch.eye(d), k=1, negative=True)
    assert copy.tolist() == [[100.0, 0.0, 50.0]]
    assert negative[0, :2].tolist() == [0.0, 100.0]
    # the final LayerNorm's centring: a head that writes along the all-ones direction writes no logits
    flat = ov_logits(x[0], torch.eye(d)[None], torch.zeros(1, d), torch.ones(1, d, d), torch.eye(d))
    assert flat.abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"k must lie in \[1, 6\]"):
        copy_scores(x, names, W_V, b_V, W_O, torch.eye(d), k=7)


def test_successor_scores_of_hand_built_heads():
    """Two sequences over 7 tokens: 0 1 2 (pairs 0→1, 1→2) and a cyclic 3 4 5 6 3 (4 pairs, 6→3 included). Head 0
    maps each token to its successor: 1. Head 1 is the identity (each token's own logit is highest): 0. Head 2 writes
    nothing: every logit ties, which is a failure, 0. Head 3 is right on the first sequence only: 2/6."""
    d = 7
    sequences = [[0, 1, 2], [3, 4, 5, 6, 3]]
    succ = torch.zeros(d, d)
    for a, b in [(0, 1), (1, 2), (3, 4), (4, 5), (5, 6), (6, 3)]:
        succ[a, b] = 1.0
    first_only = succ.clone()
    first_only[3:] = 0.0
    W_V, b_V, W_O = _ov([succ, torch.eye(d), torch.zeros(d, d), first_only], d)
    tokens = torch.arange(d)
    s = successor_scores(torch.eye(d)[None], tokens, sequences, W_V, b_V, W_O, torch.eye(d))
    assert s[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 2 / 6])
    with pytest.raises(ValueError, match=r"missing ids \[9\]"):
        successor_scores(torch.eye(d)[None], tokens, [[0, 9]], W_V, b_V, W_O, torch.eye(d))


def test_ioi_name_positions_in_both_orders():
    """ABBA "A B B" and BABA "B A B": IO once, S twice; the positions are read from the clean ids."""
    import pandas as pd

    frame = pd.DataFrame({"clean": [[9, 1, 8, 2, 7, 2, 6], [9, 2, 8, 1, 7, 2, 6]], "answer_ids": [[1, 2], [1, 2]]})
    positions, ids = ioi_name_positions(frame)
    assert positions.tolist() == [[1, 3, 5], [3, 1, 5]] and ids.tolist() == [[1, 2, 2], [1, 2, 2]]
    with pytest.raises(ValueError, match="IOI row 0: the IO name occurs 1 times .* and S 1 times"):
        ioi_name_positions(pd.DataFrame({"clean": [[1, 2, 3]], "answer_ids": [[1, 2]]}))


def test_ov_inputs_are_what_the_model_computes(trained_bridge):
    """The effective embedding equals MLP0's output in a forward pass (``blocks.0.mlp.hook_out``), and a head's
    value vector computed from :func:`head_inputs` and W_V equals the model's own (``blocks.1.attn.v.hook_out``):
    the LayerNorms are applied as the model applies them."""
    bridge = trained_bridge
    tokens = torch.tensor([[11, 40, 57, 11, 300, 12]])
    seen = {}

    def keep(x, hook):
        seen[hook.name] = x.detach()

    names = ["blocks.0.mlp.hook_out", "blocks.1.hook_in", "blocks.1.attn.v.hook_out"]
    with torch.no_grad(), bridge.hooks(fwd_hooks=[(n, keep) for n in names]):
        bridge(tokens)
    torch.testing.assert_close(effective_embedding(bridge, tokens[0]), seen["blocks.0.mlp.hook_out"][0],
                               atol=1e-5, rtol=0)
    W_V, b_V, _, _ = ov_weights(bridge)
    x = head_inputs(bridge, seen["blocks.1.hook_in"][0])[1]
    v = torch.einsum("nd,hde->nhe", x, W_V[1]) + b_V[1]
    torch.testing.assert_close(v.flatten(1), seen["blocks.1.attn.v.hook_out"][0].flatten(1), atol=1e-5, rtol=0)


def test_ov_scores_of_a_trained_model_are_deterministic(trained_bridge):
    from circuit_stability.tasks import make_dataset

    ds = make_dataset("ioi", trained_bridge.tokenizer, 20, seed=1)
    a, b = ov_head_scores(trained_bridge, ds.frame), ov_head_scores(trained_bridge, ds.frame)
    for name in ("copy", "negative_copy", "successor"):
        assert a[name].shape == (trained_bridge.cfg.n_layers, trained_bridge.cfg.n_heads)
        assert torch.equal(a[name], b[name])
    tok = trained_bridge.tokenizer
    days = [tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Monday", "Tuesday", " Monday", " Tuesday")]
    sequences = successor_sequences(tok)
    assert sequences[0][:2] == days[:2] and sequences[1][:2] == days[2:] and sequences[1][-1] == days[2]  # cyclic


def test_heads_command_writes_every_score_of_every_head(trained_suite, trained_bridge, tmp_path):
    """`circuit-stability heads --out-dir` writes one long-format parquet per checkpoint that reads back to the
    scores the library computes; a dataset of another task is refused before any model is loaded."""
    from conftest import TRAINED_CFG

    from circuit_stability.cli import main
    from circuit_stability.components import ov_head_scores
    from circuit_stability.records import COMPONENT_SCORES, ComponentsRecord, RecordError, write_dataset
    from circuit_stability.tasks import make_dataset

    ds = make_dataset("ioi", trained_bridge.tokenizer, 20, seed=1)
    write_dataset(ds, tmp_path / "ioi.parquet")
    write_dataset(make_dataset("greater_than", trained_bridge.tokenizer, 5, seed=1), tmp_path / "gt.parquet")
    step = TRAINED_CFG.max_steps
    common = ["heads", "--model", "mini-t", "--suite-dir", str(trained_suite), "--steps", str(step),
              "--tokens-per-step", "2048", "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="holds the 'greater_than' task"):
        main([*common, "--ioi-dataset", str(tmp_path / "gt.parquet")])
    main([*common, "--ioi-dataset", str(tmp_path / "ioi.parquet")])
    record = ComponentsRecord.read(tmp_path / "out" / f"step{step}.parquet")
    # query effect and the S-inhibition test exist only where there is a name mover (none in this model)
    undefined = [] if record.meta["name_movers"] else ["query_effect", "s_inhibition"]
    assert list(record.scores) == [s for s in COMPONENT_SCORES if s not in undefined]
    assert record.meta["tokens_seen"] == step * 2048
    frame = record.frame()
    assert len(frame) == len(record.scores) * 3 * 6 and frame["head"].iloc[7] == "a1.h1"
    expected = ov_head_scores(trained_bridge, ds.frame)
    for name in ("copy", "negative_copy", "successor"):
        np.testing.assert_allclose(record.scores[name], expected[name].numpy(), rtol=0, atol=1e-6)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(RecordError, match="components file .*bad.parquet cannot be read"):
        ComponentsRecord.read(tmp_path / "bad.parquet")


# ---------------------------------------------------------------- path patching of single heads, S-inhibition
def test_position_swap_trades_the_io_and_s1_tokens():
    clean = torch.tensor([[5, 1, 7, 2, 9, 2, 4], [5, 2, 7, 1, 9, 2, 4]])  # ABBA and BABA, IO = 1, S = 2
    positions, _ = ioi_name_positions(pd.DataFrame({"clean": clean.tolist(), "answer_ids": [[1, 2], [1, 2]]}))
    swapped = ioi_position_swap(clean, positions)
    assert swapped.tolist() == [[5, 2, 7, 1, 9, 2, 4], [5, 1, 7, 2, 9, 2, 4]]
    assert clean[0, 1] == 1  # the input is left alone


def test_s_inhibition_test_needs_all_three_signs():
    """Accepted only when the logit difference falls, name-mover attention to IO falls and to S1 rises (hand
    numbers: the clean run has LD 2.0, attention 0.6 to IO and 0.1 to S1)."""
    t = lambda *x: torch.tensor(list(x))  # noqa: E731
    passed = s_inhibition_test(2.0, t(1.0, 1.0, 3.0, 1.0, 1.0), 0.6, t(0.3, 0.3, 0.3, 0.7, 0.3), 0.1,
                               t(0.4, 0.05, 0.4, 0.4, 0.1))
    assert passed.tolist() == [True, False, False, False, False]


def test_normalised_effect_by_hand():
    clean, corrupted = torch.tensor([3.0, 1.0]), torch.tensor([-1.0, -1.0])  # means 2 and -1: gap 3
    patched = torch.tensor([[2.0, 2.0], [-1.0, -1.0], [0.5, 0.5]])
    torch.testing.assert_close(normalised_effect(patched, clean, corrupted), torch.tensor([0.0, -1.0, -0.5]))
    assert torch.isnan(normalised_effect(patched, clean, clean)).all()


def test_direct_path_to_the_logits_equals_the_edge_patch(trained_bridge, ioi_prompts):
    """A head's direct effect (its output from the corrupted prompt on the head -> logits path only, computed with
    no forward pass) equals the engine's edge patch that drops exactly that edge (`patched_metric`, which patches the
    edge at every position, of which the metric reads the last); alternative = clean changes nothing."""
    from circuit_stability.attribution import patched_metric
    from circuit_stability.graph import Graph

    bridge, prompts = trained_bridge, ioi_prompts
    graph = Graph(bridge.cfg.n_layers, bridge.cfg.n_heads)
    senders = [(0, 1), (1, 3), (2, 0), (2, 5)]
    metric, attention = head_path_patch(bridge, prompts, prompts.corrupted, senders)
    assert attention is None and metric.shape == (4, len(prompts))
    keep = torch.ones((len(senders), graph.n_writers, graph.n_readers), dtype=torch.bool)
    for i, (l, h) in enumerate(senders):
        keep[i, graph.writer_index(l, h), graph.logits_index] = False
    expected = patched_metric(bridge, graph, prompts, keep, batch_size=len(prompts))
    torch.testing.assert_close(metric.mean(1), expected, atol=2e-5, rtol=1e-5)
    same, _ = head_path_patch(bridge, prompts, prompts.clean, senders)
    clean = prompts.metric_values(bridge(prompts.clean))
    torch.testing.assert_close(same, clean.expand(4, -1), atol=2e-5, rtol=1e-5)


def test_path_to_queries_equals_the_edge_patch_and_is_zero_without_a_path(trained_bridge, ioi_prompts):
    """Patching into a last-layer head's query at the read position equals dropping the edge sender -> query at every
    position (a last-layer head's earlier positions reach no logit the metric reads); batching senders
    (max_rows) changes nothing; a sender in the receiver's layer has no path and effect exactly 0."""
    from circuit_stability.attribution import patched_metric
    from circuit_stability.graph import Graph

    bridge, prompts = trained_bridge, ioi_prompts
    graph = Graph(bridge.cfg.n_layers, bridge.cfg.n_heads)
    receiver, senders = (2, 4), [(0, 0), (0, 3), (1, 2), (1, 5), (2, 1)]
    metric, attention = head_path_patch(bridge, prompts, prompts.corrupted, senders, [receiver])
    assert attention.shape == (5, 1, len(prompts), prompts.clean.shape[1])
    torch.testing.assert_close(attention.sum(-1), torch.ones(5, 1, len(prompts)), atol=1e-5, rtol=0)
    keep = torch.ones((4, graph.n_writers, graph.n_readers), dtype=torch.bool)
    for i, (l, h) in enumerate(senders[:4]):
        keep[i, graph.writer_index(l, h), graph.reader_index(*receiver, "q")] = False
    expected = patched_metric(bridge, graph, prompts, keep, batch_size=len(prompts))
    torch.testing.assert_close(metric[:4].mean(1), expected, atol=2e-5, rtol=1e-5)
    clean = prompts.metric_values(bridge(prompts.clean))
    torch.testing.assert_close(metric[4], clean, atol=1e-5, rtol=0)  # same layer: no path
    assert not torch.allclose(metric[:4], clean.expand(4, -1), atol=1e-3)  # the patch does something
    one_by_one, attention_1 = head_path_patch(bridge, prompts, prompts.corrupted, senders, [receiver],
                                              max_rows=len(prompts))
    torch.testing.assert_close(one_by_one, metric, atol=1e-5, rtol=0)
    torch.testing.assert_close(attention_1, attention, atol=1e-6, rtol=0)


def test_ioi_head_effects_follow_their_rules(trained_bridge, ioi_prompts):
    """Name movers are the heads with copy > threshold and a negative direct effect; the S-inhibition test runs only
    on candidates upstream of a name mover; heads at or after the last name mover's layer have query effect 0;
    deterministic. With a copy threshold no head reaches, there is no name mover, and query effect and S-inhibition
    are undefined (NaN)."""
    from circuit_stability.tasks import make_dataset

    bridge, prompts = trained_bridge, ioi_prompts
    positions, _ = ioi_name_positions(make_dataset("ioi", bridge.tokenizer, 20, seed=1).frame)
    copy = torch.full((bridge.cfg.n_layers, bridge.cfg.n_heads), 50.0)  # the name movers: negative direct effect
    out = ioi_head_effects(bridge, prompts, positions, copy, 10.0, 0.001)
    again = ioi_head_effects(bridge, prompts, positions, copy, 10.0, 0.001)
    for k in out:
        torch.testing.assert_close(out[k], again[k], equal_nan=True, atol=0, rtol=0)
    movers = (copy > 10) & (out["direct_effect"] < 0)
    assert torch.equal(out["name_mover"].bool(), movers) and movers.any()
    assert (out["direct_effect"] >= 0).any()  # the rule has heads to refuse
    last = int(torch.nonzero(movers)[:, 0].max())
    assert (out["query_effect"][last:] == 0).all() and (out["s_inhibition"][last:] == 0).all()
    si = out["s_inhibition"].bool()
    assert (out["query_effect"][si] < -0.001).all()
    none = ioi_head_effects(bridge, prompts, positions, copy, 100.0, 0.001)
    assert torch.isnan(none["query_effect"]).all() and torch.isnan(none["s_inhibition"]).all()
    assert not none["name_mover"].any()


def test_name_attention_is_the_models_own(trained_suite, trained_bridge, ioi_prompts):
    """Attention from the read position to IO, S1 and S2 equals Hugging Face's eager attention probabilities of the
    same checkpoint at those positions (right-padded prompts, each read at its own last token)."""
    from conftest import TRAINED_CFG
    from transformers import GPTNeoXForCausalLM

    from circuit_stability.tasks import make_dataset

    positions, _ = ioi_name_positions(make_dataset("ioi", trained_bridge.tokenizer, 20, seed=1).frame)
    ours = name_attention(trained_bridge, ioi_prompts, positions)
    hf = GPTNeoXForCausalLM.from_pretrained(trained_suite / "mini-t" / f"step{TRAINED_CFG.max_steps}",
                                            attn_implementation="eager").eval()
    with torch.no_grad():
        att = torch.stack(hf(ioi_prompts.clean, output_attentions=True).attentions, dim=1)  # [N, L, H, q, k]
    rows = torch.arange(len(ioi_prompts))
    from_read = att[rows, :, :, ioi_prompts.position]  # [N, L, H, k]
    for i, name in enumerate(("io", "s1", "s2")):
        ref = from_read[rows, :, :, positions[:, i]].mean(0)  # [L, H]
        torch.testing.assert_close(ours[f"attention_{name}"], ref, atol=1e-5, rtol=0)
    total = sum(ours.values())
    assert (total <= 1 + 1e-5).all() and ours["attention_io"].shape == (3, 6)
