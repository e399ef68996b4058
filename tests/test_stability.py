"""IOI algorithm stability: both forms of path patching, the class-share metric and the algorithm table."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from circuit_stability.graph import Graph
from circuit_stability.stability import (_runs, algorithm_rows, class_share, ioi_classes, path_patch,
                                         path_patching_effects, receiver_readers, senders_with_path)
from conftest import hooked_paper_form


# ---------------------------------------------------------------- hand-checked arithmetic
def test_class_share_by_hand():
    """|−0.5| of |−0.5| + |0.25| + |0.25| is 50 %; over the first two heads only (the circuit) 0.5/0.75; a class
    with no effect 0 %; no effect at all NaN, not 0."""
    effect = np.array([[-0.5, 0.25], [0.25, 0.0]])
    members = np.array([[True, False], [False, True]])
    assert class_share(effect, members) == pytest.approx(50.0)
    assert class_share(effect, members, np.array([[True, True], [False, False]])) == pytest.approx(100 * 0.5 / 0.75)
    assert class_share(effect, np.zeros((2, 2), bool)) == 0.0
    assert np.isnan(class_share(np.zeros((2, 2)), members))
    assert class_share(effect, np.ones((2, 2), bool)) == pytest.approx(100.0)


def test_ioi_classes_by_hand():
    scores = {"copy": np.array([[20.0, 20.0, 0.0]]), "negative_copy": np.array([[0.0, 0.0, 30.0]]),
              "induction": np.array([[0.9, 0.1, 0.1]]), "duplicate_token": np.array([[0.0, 0.0, 0.6]]),
              "s_inhibition": np.array([[0.0, 1.0, 0.0]])}
    effects = {"logits": np.array([[-0.2, 0.1, 0.3]]), "s_inhibition_values": np.array([[-0.01, -0.5, -0.0005]])}
    c = ioi_classes(scores, effects, 10.0, 10.0, 0.001)
    assert c["logits"].tolist() == [[True, False, True]]  # name mover; positive effect; negative name mover
    assert c["name_mover_queries"].tolist() == [[False, True, False]]
    assert c["s_inhibition_values"].tolist() == [[True, False, False]]  # below the mean; effect above −0.001


def test_receivers_and_senders_follow_the_graph():
    g = Graph(3, 2)
    assert receiver_readers(g, "logits") == [g.logits_index]
    assert receiver_readers(g, "name_mover_queries", [(2, 1)]) == [g.reader_index(2, 1, "q")]
    assert receiver_readers(g, "s_inhibition_values", [(1, 0)]) == [g.reader_index(1, 0, "v")]
    assert senders_with_path(g, receiver_readers(g, "s_inhibition_values", [(1, 0)])) == [(0, 0), (0, 1)]
    assert senders_with_path(g, receiver_readers(g, "s_inhibition_values", [(0, 1)])) == []
    assert len(senders_with_path(g, [g.logits_index])) == 6
    with pytest.raises(ValueError, match="unknown receiver set 'values'"):
        receiver_readers(g, "values", [(1, 0)])
    with pytest.raises(ValueError, match=r"\[\(3, 0\)\] are not heads"):
        receiver_readers(g, "name_mover_queries", [(3, 0)])


def _record(frame_rows, meta):
    from circuit_stability.records import STABILITY_COLUMNS

    return pd.DataFrame(frame_rows, columns=STABILITY_COLUMNS), meta


def test_algorithm_rows_give_nan_with_the_reason():
    """An invalid checkpoint and an undefined receiver set give NaN with their reasons; receivers in layer 0 (no head
    upstream) give NaN, not 0; a defined set gives the class share over all heads and over the circuit's heads."""
    frame, meta = _record([], {"valid": False, "reason": "IOI circuit not valid: no", "undefined": {}, "receivers": {}})
    rows = algorithm_rows(frame, meta)
    assert len(rows) == 12 and all(np.isnan(r["value"]) and r["reason"] == meta["reason"] for r in rows)
    heads = [("a0.h0", 0, 0), ("a0.h1", 0, 1), ("a1.h0", 1, 0), ("a1.h1", 1, 1)]
    logits = [("logits", "paper", n, l, h, e, m, c) for (n, l, h), e, m, c in
              zip(heads, [-0.3, 0.1, -0.6, 0.0], [False, False, True, False], [True, False, True, True])]
    values = [("s_inhibition_values", "paper", n, l, h, 0.0, False, False) for n, l, h in heads]
    frame, meta = _record(logits + values, {"valid": True, "reason": None, "receivers": {
        "name_mover_queries": ["a1.h0"], "s_inhibition_values": ["a0.h1"]},
        "undefined": {"name_mover_queries": "no name-mover head"}})
    by = {(r["panel"], r["denominator"]): r for r in algorithm_rows(frame, meta)}
    assert by["B", "all"]["value"] == pytest.approx(60.0) and by["B", "all"]["class_heads"] == "a1.h0"
    assert by["B", "circuit"]["value"] == pytest.approx(100 * 0.6 / 0.9)
    assert np.isnan(by["C", "all"]["value"]) and by["C", "all"]["reason"] == "no name-mover head"
    assert np.isnan(by["D", "all"]["value"]) and "layer 0" in by["D", "all"]["reason"]


def test_algorithm_table_marks_formed_checkpoints(tmp_path):
    """``formed`` holds where every class exists in that form, and only there."""
    from circuit_stability.records import STABILITY_COLUMNS, StabilityRecord
    from circuit_stability.tables import algorithm_table

    def write(step, members):
        rows = [(name, "paper", "a0.h0", 0, 0, -0.5, m, True) for name, m in members.items()]
        meta = {"model": "m", "step": step, "tokens_seen": step * 10, "valid": True, "reason": None, "undefined": {},
                "receivers": {"name_mover_queries": ["a1.h0"], "s_inhibition_values": ["a1.h1"]}}
        StabilityRecord(pd.DataFrame(rows, columns=STABILITY_COLUMNS), meta).write(tmp_path / f"step{step}.parquet")
        return tmp_path / f"step{step}.parquet"

    sets = ("logits", "name_mover_queries", "s_inhibition_values")
    paths = [write(1, dict.fromkeys(sets, True)), write(2, {**dict.fromkeys(sets, True), "s_inhibition_values": False})]
    t = algorithm_table(paths)
    assert t.groupby("step")["formed"].agg(set).to_dict() == {1: {True}, 2: {False}}
    assert set(t["value"][t["step"] == 1]) == {100.0}


# ---------------------------------------------------------------- path patching on a trained model
def test_paper_form_equals_the_three_run_path_patch(trained_bridge, ioi_prompts):
    """The position-wise form (a) (MLPs recomputed on [batch, d] vectors, no attention in run 2) equals McDougall's
    three full forward runs built from hooks, for senders in layers 0 and 1 into two layer-2 values."""
    bridge, prompts = trained_bridge, ioi_prompts
    graph = Graph.from_config(bridge.cfg)
    heads, senders = [(2, 3), (2, 5)], [(0, 0), (1, 0)]
    readers = [graph.reader_index(l, h, "v") for l, h in heads]
    fast = path_patch(bridge, graph, prompts, senders, readers, "paper")
    slow = torch.tensor([hooked_paper_form(bridge, graph, prompts, s, readers) for s in senders])
    torch.testing.assert_close(fast, slow, atol=2e-5, rtol=1e-5)
    clean = float(prompts.metric_values(bridge(prompts.clean)).mean())
    assert (fast - clean).abs().min() > 1e-4  # the patches do something


def test_direct_form_equals_the_edge_mask_patch(trained_bridge, ioi_prompts):
    """Form (b) equals the engine's edge-mask patch (`patched_metric`) dropping exactly the edges sender -> receivers,
    for the logits and for two queries jointly; batching the senders (max_rows) changes nothing."""
    from circuit_stability.attribution import patched_metric

    bridge, prompts = trained_bridge, ioi_prompts
    graph = Graph.from_config(bridge.cfg)
    senders = [(0, 0), (0, 5), (1, 1), (1, 4)]
    for readers in ([graph.logits_index], [graph.reader_index(2, 0, "q"), graph.reader_index(2, 3, "q")]):
        ours = path_patch(bridge, graph, prompts, senders, readers, "direct")
        keep = torch.ones((len(senders), graph.n_writers, graph.n_readers), dtype=torch.bool)
        for i, (l, h) in enumerate(senders):
            keep[i, graph.writer_index(l, h), readers] = False
        torch.testing.assert_close(ours, patched_metric(bridge, graph, prompts, keep, len(prompts)),
                                   atol=2e-5, rtol=1e-5)
        for form in ("direct", "paper"):
            batched = path_patch(bridge, graph, prompts, senders, readers, form, max_rows=len(senders) * len(prompts))
            one_at_a_time = path_patch(bridge, graph, prompts, senders, readers, form, max_rows=len(prompts))
            torch.testing.assert_close(batched, one_at_a_time, atol=1e-5, rtol=0)


def test_bfloat16_path_patching_agrees_with_float32(trained_suite, trained_bridge, ioi_prompts):
    """config/pythia.yaml loads models from 1b up in bfloat16: path patching into the logits and into two queries,
    both forms, on the trained model loaded in bfloat16 gives the float32 model's mean metric (logit difference,
    ~7.5 here) within bfloat16's rounding (an 8-bit mantissa: ~0.4% per value; measured 2026-12-02: at most 0.043
    apart; 0.1 allowed)."""
    from circuit_stability.models import load_model

    bf16 = load_model("mini-t", 1200, trained_suite, device="cpu", dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    graph = Graph.from_config(trained_bridge.cfg)
    senders = [(0, 0), (0, 5), (1, 1), (1, 4)]
    for readers in ([graph.logits_index], [graph.reader_index(2, 0, "q"), graph.reader_index(2, 3, "q")]):
        for form in ("direct", "paper"):
            want = path_patch(trained_bridge, graph, ioi_prompts, senders, readers, form)
            got = path_patch(bf16, graph, ioi_prompts, senders, readers, form)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, atol=0.1, rtol=0.02)


def test_forms_differ_only_where_an_mlp_sits_between(trained_bridge, ioi_prompts):
    """Into the logits, a last-layer head reaches no MLP (GPT-NeoX's MLP l reads only earlier layers), so both forms
    agree; a layer-0 head feeds MLPs 1 and 2, and they differ. A head with no path to the receivers (same layer or
    later) has effect exactly 0 in both forms."""
    bridge, prompts = trained_bridge, ioi_prompts
    graph = Graph.from_config(bridge.cfg)
    runs = _runs(bridge, prompts)
    paper = path_patching_effects(bridge, graph, prompts, [graph.logits_index], "paper", runs=runs)
    direct = path_patching_effects(bridge, graph, prompts, [graph.logits_index], "direct", runs=runs)
    np.testing.assert_allclose(paper[2], direct[2], atol=1e-5)
    assert np.abs(paper[0] - direct[0]).max() > 1e-3
    readers = [graph.reader_index(1, 2, "v")]
    for form in ("paper", "direct"):
        e = path_patching_effects(bridge, graph, prompts, readers, form, runs=runs)
        assert (e[1:] == 0).all() and np.abs(e[0]).max() > 0
        assert (path_patching_effects(bridge, graph, prompts, [graph.reader_index(0, 2, "v")], form, runs=runs)
                == 0).all()


def test_forms_agree_without_mlps(trained_suite, ioi_prompts, tmp_path):
    """The trained model with every MLP's output weights zeroed (an MLP then writes only its constant bias): no path
    runs through an MLP, so the two forms agree for every sender, into the logits and into a query."""
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from circuit_stability.models import load_model

    source = trained_suite / "mini-t" / "step1200"
    model = GPTNeoXForCausalLM.from_pretrained(source)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            layer.mlp.dense_4h_to_h.weight.zero_()
    model.save_pretrained(tmp_path / "no-mlp" / "step0")
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "no-mlp" / "step0")
    bridge = load_model("no-mlp", 0, tmp_path, device="cpu")
    graph = Graph.from_config(bridge.cfg)
    prompts = ioi_prompts
    clean = float(prompts.metric_values(bridge(prompts.clean)).mean())
    for readers in ([graph.logits_index], [graph.reader_index(2, 5, "v")]):
        senders = senders_with_path(graph, readers)
        paper = path_patch(bridge, graph, prompts, senders, readers, "paper")
        direct = path_patch(bridge, graph, prompts, senders, readers, "direct")
        torch.testing.assert_close(paper, direct, atol=1e-5, rtol=1e-5)
        assert (direct - clean).abs().max() > 1e-3  # the patches do something


def test_stability_command_writes_a_record_per_step(trained_suite, trained_bridge, tmp_path):
    """The CLI: components from the `heads` command, a hand-written valid circuit at step 1,200 and an invalid one at
    step 0; the record of step 1,200 holds both forms of every defined receiver set, the other none and the reason;
    an unknown form is refused before any model loads."""
    from circuit_stability.records import CircuitRecord, StabilityRecord, write_dataset
    from circuit_stability.tasks import make_dataset

    ds = make_dataset("ioi", trained_bridge.tokenizer, 20, seed=1)
    write_dataset(ds, tmp_path / "ioi.parquet")
    common = ["--model", "mini-t", "--suite-dir", str(trained_suite), "--steps", "0,1200", "--tokens-per-step", "2048"]
    subprocess.run(["circuit-stability", "heads", *common, "--ioi-dataset", str(tmp_path / "ioi.parquet"),
                    "--out-dir", str(tmp_path / "components")], check=True, capture_output=True)
    base = dict(model="mini-t", task="ioi", method="EAP-IG", selection="greedy", pruned=True, threshold=0.8,
                max_fraction=0.05, min_search_edges=20, max_edges=10, total_edges=100, size=2,
                edges=["input->a0.h1<v>", "a0.h1->logits"], nodes=["input", "a0.h1", "logits"], n_edges=2,
                validity_margin=0.0, emergence_fraction=0.5, metric_final=1.0, metric_circuit=1.0, metric_model=1.0,
                metric_empty=0.0, faithfulness={"2": {"paper": 1.0, "normalized": 1.0, "n_edges": 2, "metric": 1.0}},
                mib={}, version="test")
    CircuitRecord(step=0, tokens_seen=0, reached=False, valid=False, invalid_reason="m(M) <= 0", **base).write(
        tmp_path / "circuits/step0.json")
    CircuitRecord(step=1200, tokens_seen=1200 * 2048, reached=True, valid=True, invalid_reason=None, **base).write(
        tmp_path / "circuits/step1200.json")
    cmd = ["circuit-stability", "stability", *common, "--ioi-dataset", str(tmp_path / "ioi.parquet"),
           "--components-dir", str(tmp_path / "components"), "--circuits-dir", str(tmp_path / "circuits"),
           "--out-dir", str(tmp_path / "stability")]
    bad = subprocess.run(cmd + ["--forms", "paper,patched"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown path-patching form(s) ['patched']" in bad.stderr
    subprocess.run(cmd, check=True, capture_output=True)
    none = StabilityRecord.read(tmp_path / "stability/step0.parquet")
    assert none.frame.empty and none.meta["reason"] == "IOI circuit not valid: m(M) <= 0"
    r = StabilityRecord.read(tmp_path / "stability/step1200.parquet")
    sets = {"logits"} | ({"name_mover_queries"} if r.meta["receivers"].get("name_mover_queries") else set())
    assert set(r.frame["receivers"]) >= sets and set(r.frame["form"]) == {"paper", "direct"}
    n_heads = trained_bridge.cfg.n_layers * trained_bridge.cfg.n_heads
    assert (r.frame.groupby(["receivers", "form"]).size() == n_heads).all()
    assert r.frame.loc[r.frame["head"] == "a0.h1", "in_circuit"].all() and r.frame["in_circuit"].sum() == len(
        r.frame) // n_heads
    assert r.meta["metric_clean"] > r.meta["metric_corrupted"]

    # bfloat16 (config/pythia.yaml's dtype from 1b up): the same commands at step 1,200 give the float32 record's
    # heads, receiver sets and rows, every score and effect within bfloat16's rounding
    bf16 = ["--steps", "1200", "--dtype", "bfloat16"]
    subprocess.run(["circuit-stability", "heads", *common, *bf16, "--ioi-dataset", str(tmp_path / "ioi.parquet"),
                    "--out-dir", str(tmp_path / "components-bf16")], check=True, capture_output=True)
    subprocess.run([*cmd, *bf16, "--out-dir", str(tmp_path / "stability-bf16")], check=True, capture_output=True)
    from circuit_stability.records import ComponentsRecord

    heads32, heads16 = (ComponentsRecord.read(tmp_path / d / "step1200.parquet").scores
                        for d in ("components", "components-bf16"))
    r16 = StabilityRecord.read(tmp_path / "stability-bf16/step1200.parquet")
    assert set(heads16) == set(heads32)
    for name in heads32:  # measured 2026-12-02: continuous scores at most 0.003 apart; one successor pair flipped
        a, b = np.asarray(heads16[name], dtype=float), np.asarray(heads32[name], dtype=float)
        if name in ("successor", "copy", "negative_copy", "name_mover"):  # counts: a near tie may flip one
            assert np.abs(a - b).mean() <= 0.05 * max(1.0, np.abs(b).max()), name
        else:
            np.testing.assert_allclose(a, b, atol=0.01, err_msg=name)
    keys = ["receivers", "form", "head"]
    assert r16.frame[keys].equals(r.frame[keys])
    np.testing.assert_allclose(r16.frame["effect"], r.frame["effect"], atol=0.01)  # measured: 0.0007 apart
