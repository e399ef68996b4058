"""Algorithmic stability of IOI (Tigges et al. 2024 §4.2, Fig. 4 B–D): path patching of every head into the three
receiver sets of the IOI algorithm (Wang et al. 2023), and the share of each receiver's effect carried by the class
of heads the algorithm assigns to it.

**Path patching** (Wang et al. 2023 §3; Goldowsky-Dill et al. 2023). Sender = one head, whose output is taken from
the corrupted prompts (ABB->ABA, BAB->BAA); receivers = a set of reader inputs (at every position); effect = the
change of the normalised logit difference

    effect = (m_patched − m_clean) / (m_clean − m_corrupted)

(means over the prompts: 0 = no effect, −1 = the whole clean-to-corrupted drop) when only the sender -> receiver
paths carry the corrupted sender. Two forms (reference.md §5):

- ``"paper"`` (form (a), McDougall's ``path_patch`` with its default ``direct_includes_mlps=True``, which the
  paper's ``get_ioi_consistency`` scripts use): a second run on the clean prompts in which every other head is
  frozen at its clean output (its q, k and v inputs are held at the clean run's), the sender writes its corrupted
  output and the MLPs are recomputed, so sender -> MLP -> ... -> receiver paths count; the receivers' inputs of
  that run are patched into a third, clean run whose logits give ``m_patched``. For the logits receiver the second
  run's logits are the result.
- ``"direct"`` (form (b)): only the graph's edges sender -> receiver are corrupted, an edge-mask patch
  (:func:`circuit_stability.attribution.patched_metric`); every other path sees the clean sender.

A head in the receivers' layer or later has no path to them: its effect is exactly 0 in both forms (not run).
With GPT-NeoX's parallel attention an MLP reads only earlier layers, so the two forms agree for a sender with no MLP
between it and the receivers (e.g. a last-layer head and the logits); with sequential blocks (GPT-2, Llama, OLMo)
the sender's own layer's MLP reads it too, so form (a) counts that path as well. Under grouped-query attention the
values of an S-inhibition head are its key/value group's value input, shared with the group's other heads (patched
once per group: :func:`receiver_readers`).

**Receiver sets and classes** (the paper's Fig. 4; reference.md §5):

- B ``logits``: receiver = the logits; class = name-mover heads (copy score > the copy threshold and a negative
  effect) and negative name-mover heads (negative copy score > the threshold and a non-zero effect). Copy-
  suppression heads (CSPA > 0.1) are not identified: CSPA is not computed (the components issue).
- C ``name_mover_queries``: receivers = the queries of the name-mover heads of the components stage, jointly;
  class = the heads that pass the S-inhibition test.
- D ``s_inhibition_values``: receivers = the values of the S-inhibition heads, jointly (none is excluded as a copy-
  suppression head); class = induction and duplicate-token heads: score above the checkpoint's mean over heads
  and effect < −``candidate_effect`` (the paper: −0.001).

**Metric** (:func:`class_share`): 100 × Σ_{h in class} |effect_h| / Σ_{h in all heads} |effect_h| on that
receiver set, and the variant whose sums run over the IOI circuit's heads only. The paper's text calls it the
class's direct effect divided by the sum of the direct effects of all edges with the same endpoint; its helper
(``get_pct_effect``) was never published, so this definition is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from circuit_stability.attribution import Prompts
from circuit_stability.graph import Graph
from circuit_stability.tasks.base import example_metric

FORMS = {"paper": "(a) other heads frozen at the clean run, MLPs recomputed (McDougall's path_patch)",
         "direct": "(b) direct edges sender -> receiver only (edge-mask patch)"}
"""The two forms of path patching (module docstring), by the name used in files and tables."""

MIN_LAYERS = 3
"""Fewest layers that can host the IOI algorithm's three stages (induction / duplicate-token heads feed S-inhibition
heads, which feed name movers); a smaller model's checkpoints get no path patching and that reason."""

RECEIVER_SETS = {"logits": "B", "name_mover_queries": "C", "s_inhibition_values": "D"}
"""Receiver set -> the panel of the paper's Fig. 4 that measures it."""


def receiver_readers(graph: Graph, receiver_set: str, heads: list[tuple[int, int]] | None = None) -> list[int]:
    """The graph reader columns of a receiver set.

    Args:
        receiver_set: a key of :data:`RECEIVER_SETS`.
        heads: ``(layer, head)`` of the name movers (C) or S-inhibition heads (D); ignored for the logits.

    Returns:
        Reader indices (:meth:`Graph.reader_index`): ``[logits]``, the heads' ``q`` or their ``v`` inputs (with
        grouped-query attention a head's ``v`` input is its key/value group's, shared with the group's other heads:
        patching it is the one intervention the model allows on that head's values).

    Raises:
        ValueError: for an unknown receiver set, or a head that is not in the graph.
    """
    if receiver_set not in RECEIVER_SETS:
        raise ValueError(f"unknown receiver set {receiver_set!r}; valid: {list(RECEIVER_SETS)}")
    if receiver_set == "logits":
        return [graph.logits_index]
    bad = [h for h in heads or [] if not (0 <= h[0] < graph.n_layers and 0 <= h[1] < graph.n_heads)]
    if bad:
        raise ValueError(f"receiver heads {bad} are not heads of {graph}")
    qkv = "q" if receiver_set == "name_mover_queries" else "v"
    # with grouped-query attention two S-inhibition heads of one group share their value input: listed once
    return list(dict.fromkeys(graph.reader_index(l, h, qkv) for l, h in heads or []))


def senders_with_path(graph: Graph, readers: list[int]) -> list[tuple[int, int]]:
    """The heads with at least one graph edge into ``readers`` (the others have effect 0), layer-major."""
    if not readers:
        return []
    reach = int(max(graph.n_upstream[r] for r in readers))
    return [(l, h) for l in range(graph.n_layers) for h in range(graph.n_heads) if graph.writer_index(l, h) < reach]


@dataclass(frozen=True)
class _Runs:
    """The clean and corrupted runs path patching starts from (float32, on the prompts' device): ``delta``
    ``[n_layers, n_heads, N, pos, d_model]`` every head's output (``attn.hook_result``), corrupted minus clean;
    ``resid_pre`` and ``mlp_in`` ``[n_layers, N, pos, d_model]`` (the residual
    stream each layer's heads and MLP read, before their LayerNorms), ``mlp_out`` likewise; ``final``
    ``[N, pos, d_model]`` (``blocks.{L-1}.hook_resid_post``); ``clean``, ``corrupted`` the mean task metric;
    ``block_kwargs`` the keyword arguments each block was called with in the clean run (attention mask, position
    ids, rotary embeddings), to run the blocks from a receiver layer on (:func:`_run_from`)."""

    delta: torch.Tensor
    resid_pre: torch.Tensor
    mlp_in: torch.Tensor
    mlp_out: torch.Tensor
    final: torch.Tensor
    clean: float
    corrupted: float
    block_kwargs: tuple[dict, ...] = ()


def _runs(bridge, prompts: Prompts) -> _Runs:
    L = bridge.cfg.n_layers
    seen: dict[str, torch.Tensor] = {}

    def keep(name, squeeze=False):
        def f(x, hook):
            seen[name] = (x[:, :, 0] if squeeze else x).detach().float()
        return f

    hooks = [(f"blocks.{l}.attn.hook_result", keep(f"result{l}")) for l in range(L)]
    clean_hooks = hooks + [(f"blocks.{L - 1}.hook_resid_post", keep("final"))]
    for l in range(L):
        clean_hooks += [(f"blocks.{l}.hook_q_input", keep(f"pre{l}", squeeze=True)),
                        (f"blocks.{l}.hook_mlp_in", keep(f"mlp_in{l}")), (f"blocks.{l}.hook_mlp_out", keep(f"mlp{l}"))]
    kwargs: list[dict] = [{} for _ in range(L)]

    def call(layer):
        def f(module, args, kw):
            kwargs[layer] = dict(kw)
        return f

    handles = [bridge.blocks[l].register_forward_pre_hook(call(l), with_kwargs=True) for l in range(L)]
    try:
        with torch.no_grad(), bridge.hooks(fwd_hooks=clean_hooks):
            clean = float(prompts.metric_values(bridge(prompts.clean)).float().mean())
    finally:
        for h in handles:
            h.remove()
    stack = lambda name: torch.stack([seen.pop(f"{name}{l}") for l in range(L)])  # noqa: E731
    heads = stack("result").permute(0, 3, 1, 2, 4)  # [L, H, N, P, d]
    resid_pre, mlp_in, mlp_out, final = stack("pre"), stack("mlp_in"), stack("mlp"), seen.pop("final")
    with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
        corrupted = float(prompts.metric_values(bridge(prompts.corrupted)).float().mean())
    delta = stack("result").permute(0, 3, 1, 2, 4) - heads
    return _Runs(delta, resid_pre, mlp_in, mlp_out, final, clean, corrupted, tuple(kwargs))


def _run_from(bridge, runs: _Runs, start: int, copies: int, at: torch.Tensor) -> torch.Tensor:
    """The logits at the read positions of ``copies`` stacked copies of the clean prompts, run from block ``start``
    on: blocks ``0 .. start-1`` are not run (their clean output, ``runs.resid_pre[start]``, enters block ``start``),
    each block gets the clean run's attention mask, position ids and rotary embeddings repeated along the batch
    (no KV cache), and only the read positions go through ``ln_final`` and the unembedding. Hooks on the blocks
    fire as in a full forward, so a patch in a block from ``start`` on gives the full forward's logits.

    Args:
        copies: ``S``, the number of stacked copies (senders); at: ``[N]`` the read positions.

    Returns:
        ``[S·N, 1, d_vocab]`` logits.
    """
    N = runs.resid_pre.shape[1]

    def rep(v):
        if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == N and N > 1:
            return v.repeat(copies, *([1] * (v.ndim - 1)))
        return tuple(rep(x) for x in v) if isinstance(v, tuple) else v

    x = runs.resid_pre[start].repeat(copies, 1, 1).to(next(bridge.parameters()).dtype)  # float32 -> the model's
    for layer in range(start, len(bridge.blocks)):
        kw = {k: None if k in ("layer_past", "past_key_values") else False if k == "use_cache" else rep(v)
              for k, v in runs.block_kwargs[layer].items()}
        out = bridge.blocks[layer](x, **kw)
        x = out[0] if isinstance(out, tuple) else out
    pos = at.repeat(copies)
    final = x[torch.arange(len(pos), device=x.device), pos][:, None]
    return bridge.unembed(bridge.ln_final(final))


def _receiver_inputs(bridge, graph: Graph, runs: _Runs, senders: list[tuple[int, int]], layers: list[int],
                     form: str, at: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """The residual stream the receivers of each layer in ``layers`` read under each sender's patch (``L`` stands for
    the logits), position by position: every head other than the sender is frozen at its clean output in both
    forms, so nothing here needs attention. Form (b): clean + Δ_sender where the sender is upstream. Form (a): plus
    the change of every MLP in between, each MLP recomputed (its LayerNorm and weights, ``blocks.{l}.ln2`` and
    ``blocks.{l}.mlp``) on its clean input + Δ_sender + the changes of the MLPs before it.

    Args:
        at: ``[N]`` one position per prompt (the read position), or None for every position.

    Returns:
        layer -> ``[S, N, pos, d_model]`` (``pos`` = 1 with ``at``) float32.
    """
    L, H = graph.n_layers, graph.n_heads
    writers = torch.tensor([graph.writer_index(l, h) for l, h in senders])
    pick = (lambda t: t) if at is None else (  # noqa: E731
        lambda t: t[..., torch.arange(len(at)), at, :][..., None, :])  # [..., N, P, d] -> [..., N, 1, d]
    delta = pick(torch.stack([runs.delta[l, h] for l, h in senders]))  # [S, N, P, d]
    up = lambda reach: (writers < reach).float().to(delta.device)[:, None, None, None]  # noqa: E731
    head_reach = lambda l: 1 + l * (H + 1)  # noqa: E731
    out: dict[int, torch.Tensor] = {}
    model_dtype = next(bridge.parameters()).dtype
    changed = torch.zeros_like(delta)  # Σ of the MLP changes so far (form (a))
    for l in range(max(layers) + 1 if layers else 0):
        if l in layers:
            base = pick(runs.final) if l == L else pick(runs.resid_pre[l])
            out[l] = base + delta * up(head_reach(l) if l < L else graph.n_writers) + changed
        if form == "paper" and l < L:
            x = pick(runs.mlp_in[l]) + delta * up(int(graph.n_upstream[graph.reader_index(l)])) + changed
            block = bridge.blocks[l]
            with torch.no_grad():  # float32 -> the model's dtype for the MLP, its change back in float32
                changed = changed + block.mlp(block.ln2(x.to(model_dtype))).float() - pick(runs.mlp_out[l])
    return out


def path_patch(bridge, graph: Graph, prompts: Prompts, senders: list[tuple[int, int]], readers: list[int],
               form: str, max_rows: int = 256, runs: _Runs | None = None) -> torch.Tensor:
    """The mean task metric with each sender's output patched from the corrupted prompts into ``readers`` only, in
    ``form`` (module docstring).

    The receivers' inputs under the patch are computed position by position (:func:`_receiver_inputs`: in both
    forms every head other than the sender is frozen, and MLPs act on each position alone). For the logits that is
    the whole computation: the final residual at the read position, through ``ln_final`` and the unembedding. For
    head receivers the clean prompts then run once more with the receivers' inputs replaced at every position
    (``blocks.{l}.hook_{q,k,v}_input``), all senders stacked along the batch (at most ``max_rows`` rows per pass;
    ~256 rows is fastest on one CPU core, where 4,096 rows took 40% longer), from the first receiver layer on
    (:func:`_run_from`: the layers before it are clean) and without per-head outputs.

    Args:
        senders: ``(layer, head)`` of the ``S`` sending heads.
        readers: graph reader columns: the logits, or head ``q``/``k``/``v`` inputs (not with each other).
        form: a key of :data:`FORMS`.
        runs: the clean and corrupted runs, if already taken (:func:`_runs`).

    Returns:
        ``[S]`` float32 mean metric (task-metric units: the logit difference for IOI).

    Raises:
        ValueError: for an unknown form, an MLP reader, or the logits mixed with head readers.
    """
    if form not in FORMS:
        raise ValueError(f"unknown path-patching form {form!r}; valid: {list(FORMS)}")
    L, H = graph.n_layers, graph.n_heads
    heads_in: dict[tuple[int, str], list[int]] = {}  # (layer, "q"/"k"/"v") -> receiver head indices
    for r in readers:
        if r == graph.logits_index:
            continue
        l, c, h = graph.reader_slot(r)  # h: the index along the hook's head axis (a key/value head for k, v)
        if c == "mlp":
            raise ValueError(f"path patching into an MLP input ({graph.reader_names[r]}) is not supported; "
                             "receivers are the logits or head q/k/v inputs")
        heads_in.setdefault((l, c), []).append(h)
    if heads_in and graph.logits_index in readers:
        raise ValueError("path patching into the logits and head inputs at once is not supported; one receiver set "
                         "is either the logits or head inputs")
    runs = runs or _runs(bridge, prompts)
    model_dtype = next(bridge.parameters()).dtype  # the float32 residuals go back into the model in its dtype
    N = len(prompts)
    out = torch.empty(len(senders), dtype=torch.float32)
    per_pass = max(1, max_rows // N)
    for s0 in range(0, len(senders), per_pass):
        group = senders[s0 : s0 + per_pass]
        S = len(group)
        rep = lambda t: t.repeat(S, *([1] * (t.ndim - 1)))  # noqa: E731
        if not heads_in:  # the logits: the final residual at the read position
            final = _receiver_inputs(bridge, graph, runs, group, [L], form, at=prompts.position)[L]
            with torch.no_grad():
                logits = bridge.unembed(bridge.ln_final(final.reshape(S * N, 1, -1).to(model_dtype)))
            pos = torch.zeros(S * N, dtype=torch.long, device=logits.device)
        else:
            inputs = _receiver_inputs(bridge, graph, runs, group, sorted({l for l, _ in heads_in}), form)

            def patch(layer, receivers):
                new = inputs[layer].reshape(S * N, *inputs[layer].shape[2:])  # [S·N, P, d]

                def f(x, hook):  # [S·N, P, H, d]
                    x = x.clone()
                    x[:, :, receivers] = new[:, :, None].to(x.dtype)
                    return x
                return f

            hooks = [(f"blocks.{l}.hook_{c}_input", patch(l, hs)) for (l, c), hs in heads_in.items()]
            per_head = bool(bridge.cfg.use_attn_result)
            bridge.set_use_attn_result(False)  # per-head outputs are not needed here: a fifth of the time
            try:
                with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
                    logits = _run_from(bridge, runs, min(l for l, _ in heads_in), S, prompts.position)
            finally:
                bridge.set_use_attn_result(per_head)
            pos = torch.zeros(S * N, dtype=torch.long, device=logits.device)
        metric = example_metric(logits, pos, rep(prompts.answer_ids), rep(prompts.flags), prompts.metric)
        out[s0 : s0 + S] = metric.float().view(S, N).mean(1).cpu()
    return out


def path_patching_effects(bridge, graph: Graph, prompts: Prompts, readers: list[int], form: str,
                          max_rows: int = 256, runs: _Runs | None = None) -> np.ndarray:
    """Every head's normalised path-patching effect on ``readers`` (module docstring), in ``form``.

    Args:
        readers: graph reader columns (:func:`receiver_readers`); empty gives all zeros.
        form: a key of :data:`FORMS`.
        max_rows: batch rows per forward; runs: see :func:`path_patch`.

    Returns:
        ``[n_layers, n_heads]`` float32: (m_patched − m_clean)/(m_clean − m_corrupted); 0 for a head with no path;
        NaN everywhere when m_clean = m_corrupted.

    Raises:
        ValueError: for an unknown form (before any forward pass), and see :func:`path_patch`.
    """
    if form not in FORMS:
        raise ValueError(f"unknown path-patching form {form!r}; valid: {list(FORMS)}")
    effect = np.zeros((graph.n_layers, graph.n_heads), dtype=np.float32)
    senders = senders_with_path(graph, readers)
    if not senders:
        return effect
    runs = runs or _runs(bridge, prompts)
    if runs.clean == runs.corrupted:
        return np.full_like(effect, np.nan)
    patched = path_patch(bridge, graph, prompts, senders, readers, form, max_rows, runs)
    for (l, h), m in zip(senders, patched.tolist()):
        effect[l, h] = (m - runs.clean) / (runs.clean - runs.corrupted)
    return effect


def class_share(effect: np.ndarray, members: np.ndarray, among: np.ndarray | None = None) -> float:
    """The algorithm metric: 100 × Σ_{h ∈ members ∩ among} |effect_h| / Σ_{h ∈ among} |effect_h| (percent; our
    definition, module docstring).

    Args:
        effect: ``[n_layers, n_heads]`` effects on one receiver set.
        members: ``[n_layers, n_heads]`` bool, the class.
        among: ``[n_layers, n_heads]`` bool, the heads the sums run over (the circuit's heads), or None for all.

    Returns:
        A value in [0, 100]; NaN when the denominator is 0 (no head among ``among`` has an effect).
    """
    among = np.ones_like(members, dtype=bool) if among is None else among.astype(bool)
    total = float(np.abs(effect[among]).sum())
    if total == 0.0 or not np.isfinite(total):
        return float("nan")
    return 100.0 * float(np.abs(effect[among & members.astype(bool)]).sum()) / total


def ioi_classes(scores: dict[str, np.ndarray], effects: dict[str, np.ndarray], copy_threshold: float,
                negative_copy_threshold: float, candidate_effect: float) -> dict[str, np.ndarray]:
    """The class of each receiver set (module docstring), from one checkpoint's component scores and effects.

    Args:
        scores: component score -> ``[n_layers, n_heads]`` (``copy``, ``negative_copy``, ``induction``,
            ``duplicate_token``, ``s_inhibition``; a missing ``s_inhibition`` means no head passes).
        effects: receiver set -> ``[n_layers, n_heads]`` effects (one form); a missing set gets an empty class.
        copy_threshold, negative_copy_threshold: percent (``components.thresholds``; the paper: 10).
        candidate_effect: the D effect threshold (``components.candidate_effect``; the paper: 0.001).

    Returns:
        Receiver set -> ``[n_layers, n_heads]`` bool.
    """
    shape = scores["copy"].shape
    none = np.zeros(shape, dtype=bool)
    out = {k: none.copy() for k in RECEIVER_SETS}
    if "logits" in effects:
        e = effects["logits"]
        out["logits"] = ((scores["copy"] > copy_threshold) & (e < 0)) \
            | ((scores["negative_copy"] > negative_copy_threshold) & (e != 0))
    if "s_inhibition" in scores:
        out["name_mover_queries"] = np.nan_to_num(scores["s_inhibition"]) >= 1.0
    if "s_inhibition_values" in effects:
        e = effects["s_inhibition_values"]
        above = (scores["induction"] > scores["induction"].mean()) \
            | (scores["duplicate_token"] > scores["duplicate_token"].mean())
        out["s_inhibition_values"] = above & (e < -candidate_effect)
    return out


def checkpoint_effects(bridge, prompts: Prompts, scores: dict[str, np.ndarray], circuit_heads: set[str],
                       copy_threshold: float, negative_copy_threshold: float, candidate_effect: float,
                       forms: tuple[str, ...] = tuple(FORMS), max_rows: int = 256) -> tuple[Any, dict]:
    """Every head's effect on each IOI receiver set that exists at this checkpoint, in each form, with its class and
    circuit membership (the rows of :class:`~circuit_stability.records.StabilityRecord`).

    Receivers come from the components stage: the name movers (``scores["name_mover"]``) and the S-inhibition heads
    (``scores["s_inhibition"]``, absent where there is no name mover). One clean and one corrupted forward serve
    every set and form.

    Args:
        prompts: the IOI prompts (clean, corrupted ABB->ABA, read positions).
        scores: the checkpoint's component scores (:class:`~circuit_stability.records.ComponentsRecord`).
        circuit_heads: the head nodes (``a{L}.h{H}``) of the checkpoint's IOI circuit.
        copy_threshold, negative_copy_threshold, candidate_effect: see :func:`ioi_classes`.

    Returns:
        ``(frame, meta)``: rows with columns ``STABILITY_COLUMNS`` and ``{"undefined": {set: reason},
        "receivers": {set: [head names]}, "metric_clean", "metric_corrupted"}``.
    """
    import pandas as pd

    from circuit_stability.graph import head_name
    from circuit_stability.records import STABILITY_COLUMNS

    graph = Graph.from_config(bridge.cfg)
    L, H = graph.n_layers, graph.n_heads
    heads_of = lambda name: [(int(l), int(h)) for l, h in np.argwhere(np.nan_to_num(scores.get(name, np.zeros((L, H))))  # noqa: E731
                                                                      >= 1.0)]
    movers, inhibitors = heads_of("name_mover"), heads_of("s_inhibition")
    receivers = {"logits": None, "name_mover_queries": movers, "s_inhibition_values": inhibitors}
    undefined = {}
    if not movers:
        undefined["name_mover_queries"] = "no name-mover head"
        undefined["s_inhibition_values"] = "no name-mover head, so no S-inhibition test"
    elif not inhibitors:
        undefined["s_inhibition_values"] = "no head passes the S-inhibition test"
    runs = _runs(bridge, prompts)
    in_circuit = np.array([[head_name(l, h) in circuit_heads for h in range(H)] for l in range(L)])
    rows = []
    for form in forms:
        effects = {name: path_patching_effects(bridge, graph, prompts, receiver_readers(graph, name, heads), form,
                                               max_rows, runs)
                   for name, heads in receivers.items() if name not in undefined}
        classes = ioi_classes(scores, effects, copy_threshold, negative_copy_threshold, candidate_effect)
        for name, effect in effects.items():
            rows += [(name, form, head_name(l, h), l, h, float(effect[l, h]), bool(classes[name][l, h]),
                      bool(in_circuit[l, h])) for l in range(L) for h in range(H)]
    meta = {"undefined": undefined,
            "receivers": {k: [head_name(*x) for x in v] for k, v in receivers.items() if v and k not in undefined},
            "metric_clean": runs.clean, "metric_corrupted": runs.corrupted}
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS), meta


def algorithm_rows(frame, meta: dict) -> list[dict]:
    """The algorithm metrics (Fig. 4 B–D; :func:`class_share`) of one checkpoint's stability record, both
    denominators and every form, each with the reason when it is NaN.

    Args:
        frame, meta: a :class:`~circuit_stability.records.StabilityRecord`'s rows and metadata.

    Returns:
        Rows ``panel`` (B, C, D), ``receivers``, ``form``, ``denominator`` (``"all"``: every head; ``"circuit"``:
        the IOI circuit's heads), ``value`` (percent or NaN), ``n_class``, ``class_heads`` (comma-separated),
        ``reason`` (None when the value is a number).
    """
    forms = sorted(set(frame["form"])) or list(FORMS)
    out = []
    for name, panel in RECEIVER_SETS.items():
        for form in forms:
            part = frame[(frame["receivers"] == name) & (frame["form"] == form)]
            base = {"panel": panel, "receivers": name, "form": form}
            if not meta.get("valid", True) or name in meta.get("undefined", {}) or part.empty:
                reason = meta.get("reason") or meta.get("undefined", {}).get(name) or "not computed"
                out += [{**base, "denominator": d, "value": float("nan"), "n_class": 0, "class_heads": "",
                         "reason": reason} for d in ("all", "circuit")]
                continue
            effect, members = part["effect"].to_numpy(), part["in_class"].to_numpy()
            heads = ",".join(part.loc[part["in_class"], "head"])
            for denominator, among in (("all", None), ("circuit", part["in_circuit"].to_numpy())):
                value = class_share(effect, members, among)
                reason = None
                if not np.isfinite(value):
                    layer0 = all(h.startswith("a0.") for h in meta.get("receivers", {}).get(name, []))
                    reason = ("the receivers are in layer 0: no head has a path to them" if layer0 and name != "logits"
                              else "no head upstream of the receivers has an effect" if among is None
                              else "no head of the circuit has an effect on the receivers")
                out.append({**base, "denominator": denominator, "value": value, "n_class": int(members.sum()),
                            "class_heads": heads, "reason": reason})
    return out
