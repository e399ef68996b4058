"""Study-wide tables (design §4 "Tables"): long-format frames built from the per-checkpoint records
(:mod:`circuit_stability.records`).

- behaviour: one row per (model, task, step, split) with the task metric and accuracy;
- circuits: one row per (model, task, step) with the minimal circuit's size, faithfulness and ``valid`` flag
  (with ``invalid_reason``): later stages and figures use only valid circuits;
- faithfulness: every evaluated point of every faithfulness curve;
- components: one row per (model, step, head, score): the head-function scores (induction, duplicate-token,
  previous-token, successor, copy, negative copy) of every head at every analysed checkpoint;
- component emergence: one row per (model, score type): the first checkpoint at which some head reaches the
  type's threshold (``components.thresholds``), and the best head at the last checkpoint;
- emergence: one row per (model, task): the first checkpoint whose metric reaches a fraction (the config's
  ``analysis.emergence_fraction``, 0.5: half) of the final checkpoint's (Tigges et al. 2024 §3.1 compare such
  onsets across sizes), in steps and tokens, and the
  spread of that onset across model sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from circuit_stability.artifacts import write_parquet
from circuit_stability.learnt import LearntCriterion
from circuit_stability.records import EFFECT_SCORES, BehaviorRecord, CircuitRecord, ComponentsRecord


def behavior_table(paths: list[str | Path], learnt: LearntCriterion) -> pd.DataFrame:
    """Rows ``model, step, tokens_seen, task, metric_name, split ('all'|'seen'|'held_out'), metric, accuracy,
    metric_corrupted, n, learnt`` from behaviour JSONs; ``learnt``: whether the task is learnt on that split at that
    checkpoint by ``learnt`` (:class:`~circuit_stability.learnt.LearntCriterion`)."""
    rows = []
    for p in paths:
        b = BehaviorRecord.read(p)
        base = {"model": b.model, "step": b.step, "tokens_seen": b.tokens_seen, "task": b.task,
                "metric_name": b.metric_name}
        rows.append({**base, "split": "all", "metric": b.metric, "accuracy": b.accuracy,
                     "metric_corrupted": b.metric_corrupted, "n": b.n_examples})
        rows += [{**base, "split": s, "metric": v["metric"], "accuracy": v["accuracy"], "metric_corrupted": np.nan,
                  "n": v["n"]} for s, v in b.splits.items()]
    frame = pd.DataFrame(rows).sort_values(["model", "task", "split", "step"], kind="stable", ignore_index=True)
    frame["learnt"] = learnt.learnt(frame)
    return frame


def circuit_table(paths: list[str | Path]) -> pd.DataFrame:
    """Rows ``model, step, tokens_seen, task, method, n_edges, size, reached, valid, invalid_reason,
    metric_model, metric_empty, metric_circuit, total_edges, n_nodes, f_paper, f_norm, cpr, cmd`` from circuit
    JSONs (``invalid_reason`` is None for valid circuits)."""
    rows = []
    for p in paths:
        c = CircuitRecord.read(p)
        rows.append({k: getattr(c, k) for k in ("model", "step", "tokens_seen", "task", "method", "n_edges", "size",
                                                "reached", "valid", "invalid_reason", "metric_model",
                                                "metric_empty", "metric_circuit", "total_edges")}
                    | {"n_nodes": len(c.nodes), "f_paper": c.f_paper, "f_norm": c.f_norm,
                       "cpr": c.mib.get("cpr", np.nan), "cmd": c.mib.get("cmd", np.nan)})
    return pd.DataFrame(rows).sort_values(["model", "task", "step"], kind="stable", ignore_index=True)


def circuit_edges_table(paths: list[str | Path]) -> pd.DataFrame:
    """Every edge of every valid minimal circuit: rows ``model, task, step, tokens_seen, src, dst`` (writer and
    reader names of :class:`~circuit_stability.graph.Graph`, e.g. ``a0.h2 -> a2.h6<q>``); the circuit drawings and
    the similarity measures read this."""
    rows = []
    for p in paths:
        c = CircuitRecord.read(p)
        if c.valid:
            rows += [(c.model, c.task, c.step, c.tokens_seen, *e.split("->")) for e in c.edges]
    return pd.DataFrame(rows, columns=["model", "task", "step", "tokens_seen", "src", "dst"]).sort_values(
        ["model", "task", "step"], kind="stable", ignore_index=True)


def faithfulness_table(paths: list[str | Path]) -> pd.DataFrame:
    """Long-format faithfulness curves: rows ``model, step, tokens_seen, task, valid, n (greedy size), n_edges
    (after pruning), fraction (of all edges, for MIB's grid, else NaN), f_paper, f_norm, source
    ('search'|'mib')``."""
    rows = []
    for p in paths:
        c = CircuitRecord.read(p)
        base = {"model": c.model, "step": c.step, "tokens_seen": c.tokens_seen, "task": c.task, "valid": c.valid}
        for n, v in c.faithfulness.items():
            rows.append({**base, "n": int(n), "n_edges": v["n_edges"], "fraction": np.nan, "f_paper": v["paper"],
                         "f_norm": v["normalized"], "source": "search"})
        for frac, v in c.mib.get("fractions", {}).items():
            rows.append({**base, "n": v["n"], "n_edges": v["n"], "fraction": float(frac), "f_paper": v["paper"],
                         "f_norm": v["normalized"], "source": "mib"})
    return pd.DataFrame(rows).sort_values(["model", "task", "step", "source", "n"], kind="stable",
                                          ignore_index=True)


def emergence_table(behavior: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Onset of each task in each model: the first step (split 'all') at which the task is learnt (the behaviour
    table's ``learnt``: :class:`~circuit_stability.learnt.LearntCriterion`) and its metric is ≥ ``fraction`` × the
    final checkpoint's metric. A task not learnt at the final checkpoint has no onset (NaN: "not learnt"), however
    its metric moved.

    Returns:
        Rows ``model, task, metric_name, final_metric, learnt (at the final checkpoint), emergence_step,
        emergence_tokens`` (NaN when the task is not learnt at the final checkpoint), plus per task
        ``spread_ratio`` = max/min emergence tokens across the models that learnt it, and ``spread_log10_std`` =
        standard deviation of log10 tokens.

    Raises:
        ValueError: if ``behavior`` has no ``learnt`` column (:func:`behavior_table` adds it).
    """
    if "learnt" not in behavior:
        raise ValueError("the behaviour table has no 'learnt' column: build it with behavior_table(paths, learnt)")
    rows = []
    frame = behavior[behavior["split"] == "all"]
    for (model, task), f in frame.groupby(["model", "task"], sort=True):
        f = f.sort_values("step")
        final, learnt = float(f["metric"].iloc[-1]), bool(f["learnt"].iloc[-1])
        hit = f[f["learnt"].astype(bool) & (f["metric"] >= fraction * final)] if learnt else f.iloc[:0]
        step = int(hit["step"].iloc[0]) if len(hit) else np.nan
        tokens = int(hit["tokens_seen"].iloc[0]) if len(hit) else np.nan
        rows.append({"model": model, "task": task, "metric_name": f["metric_name"].iloc[0], "final_metric": final,
                     "learnt": learnt, "emergence_step": step, "emergence_tokens": tokens})
    out = pd.DataFrame(rows)
    spread = {}
    for task, f in out.groupby("task"):
        t = f["emergence_tokens"].dropna().astype(float)
        t = t[t > 0]
        spread[task] = (float(t.max() / t.min()) if len(t) else np.nan,
                        float(np.log10(t).std(ddof=0)) if len(t) else np.nan)
    out["spread_ratio"] = out["task"].map(lambda t: spread[t][0])
    out["spread_log10_std"] = out["task"].map(lambda t: spread[t][1])
    return out


def components_table(paths: list[str | Path]) -> pd.DataFrame:
    """Rows ``model, step, tokens_seen, head, layer, head_index, score, value`` from components parquets
    (:class:`~circuit_stability.records.ComponentsRecord`; ``score`` names one of
    :data:`~circuit_stability.records.COMPONENT_SCORES`)."""
    frames = []
    for p in paths:
        rec = ComponentsRecord.read(p)
        frame = rec.frame()
        frame.insert(0, "tokens_seen", int(rec.meta["tokens_seen"]))
        frame.insert(0, "step", int(rec.meta["step"]))
        frame.insert(0, "model", str(rec.meta["model"]))
        frames.append(frame)
    columns = ["model", "step", "tokens_seen", "head", "layer", "head_index", "score", "value"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).sort_values(["model", "score", "step", "layer", "head_index"],
                                                            kind="stable", ignore_index=True)


def component_emergence_table(components: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """When each head-function type appears in each model: the first checkpoint at which some head's score reaches
    that score's threshold (the components counterpart of :func:`emergence_table`).

    Args:
        components: :func:`components_table`'s rows.
        thresholds: score name -> threshold, in the score's units (fraction, or percent for the copy scores).

    Returns:
        Rows ``model, score, threshold, emergence_step, emergence_tokens, emergence_head`` (the highest-scoring head
        at that step; NaN / None when no head ever reaches it), ``final_best`` and ``final_head`` (the best head at
        the model's last checkpoint), sorted by model and score.

    Raises:
        ValueError: naming the scores of ``components`` that have no threshold (effect scores,
            :data:`~circuit_stability.records.EFFECT_SCORES`, have none and are left out).
    """
    components = components[~components["score"].isin(EFFECT_SCORES)]
    missing = sorted(set(components["score"]) - set(thresholds))
    if missing:
        raise ValueError(f"no threshold for component score(s) {missing}; thresholds given: {sorted(thresholds)}")
    rows = []
    for (model, score), f in components.groupby(["model", "score"], sort=True):
        best = f.sort_values(["step", "value"], ascending=[True, False], kind="stable").groupby("step").head(1)
        hit = best[best["value"] >= thresholds[score]]
        first = hit.iloc[0] if len(hit) else None
        last = best.iloc[-1]
        rows.append({"model": model, "score": score, "threshold": float(thresholds[score]),
                     "emergence_step": int(first["step"]) if first is not None else np.nan,
                     "emergence_tokens": int(first["tokens_seen"]) if first is not None else np.nan,
                     "emergence_head": first["head"] if first is not None else None,
                     "final_best": float(last["value"]), "final_head": last["head"]})
    return pd.DataFrame(rows, columns=["model", "score", "threshold", "emergence_step", "emergence_tokens",
                                       "emergence_head", "final_best", "final_head"])


# Roles (Tigges et al. 2024 §3.2, App. E; reference.md §4.6): a head holds a role at a checkpoint when its scores
# pass the role's rule. The pattern scores use the paper's relative rule (above the checkpoint's mean over heads)
# *and* an absolute floor (``components.thresholds``): the relative rule alone gives half the heads of an untrained
# model every role.
ROLES = {
    "induction": "induction >= thresholds.induction and > the checkpoint's mean induction score over heads",
    "duplicate_token": "duplicate_token >= thresholds.duplicate_token and > the checkpoint's mean over heads",
    "previous_token": "previous_token >= thresholds.previous_token and > the checkpoint's mean over heads",
    "successor": "successor >= thresholds.successor",
    "name_mover": "copy > thresholds.copy and direct_effect < 0 (the paper's consistency script)",
    "negative_name_mover": "negative_copy > thresholds.negative_copy and direct_effect != 0 (the paper's rule)",
    "s_inhibition": "passes the S-inhibition test (candidates: query_effect < -components.candidate_effect)",
}
_RELATIVE = ("induction", "duplicate_token", "previous_token")

# The task whose circuit each role serves in the paper (Figure 2: name movers, copy suppression and S-inhibition in
# IOI; successor and induction heads in Greater-Than; duplicate-token and previous-token heads feed IOI's induction
# and S-inhibition heads, Wang et al. 2023).
ROLE_TASKS = {
    "ioi": ("name_mover", "negative_name_mover", "s_inhibition", "induction", "duplicate_token", "previous_token"),
    "greater_than": ("successor", "induction"),
}


def role_flags(components: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """Which roles (:data:`ROLES`) each head holds at each checkpoint.

    Args:
        components: :func:`components_table`'s rows.
        thresholds: ``components.thresholds`` (score units).

    Returns:
        One row per (model, step, head): ``model, step, tokens_seen, head, layer, head_index`` and one bool
        column per role of :data:`ROLES` (False where the role's scores are absent at that checkpoint, e.g.
        no IOI task, or S-inhibition without a name mover), plus ``s_inhibition_defined``.
    """
    keys = ["model", "step", "tokens_seen", "head", "layer", "head_index"]
    wide = components.pivot_table(index=keys, columns="score", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    out = wide[keys].copy()
    col = lambda name: wide[name] if name in wide else pd.Series(np.nan, index=wide.index)  # noqa: E731
    for name in _RELATIVE:
        mean = col(name).groupby([wide["model"], wide["step"]]).transform("mean")
        out[name] = (col(name) >= thresholds[name]) & (col(name) > mean)
    out["successor"] = col("successor") >= thresholds["successor"]
    out["name_mover"] = (col("copy") > thresholds["copy"]) & (col("direct_effect") < 0)
    out["negative_name_mover"] = (col("negative_copy") > thresholds["negative_copy"]) & (col("direct_effect") != 0) \
        & col("direct_effect").notna()
    out["s_inhibition"] = col("s_inhibition") >= 1.0
    out["s_inhibition_defined"] = col("s_inhibition").notna()
    return out.sort_values(["model", "step", "layer", "head_index"], kind="stable", ignore_index=True)


def circuit_heads(paths: list[str | Path]) -> pd.DataFrame:
    """Rows ``model, task, step, valid, heads`` (the circuit's head nodes, a frozenset of ``a{L}.h{H}``) from
    circuit JSONs."""
    rows = []
    for p in paths:
        c = CircuitRecord.read(p)
        rows.append({"model": c.model, "task": c.task, "step": c.step, "valid": c.valid,
                     "heads": frozenset(n for n in c.nodes if n.startswith("a"))})
    return pd.DataFrame(rows, columns=["model", "task", "step", "valid", "heads"])


def roles_table(flags: pd.DataFrame, circuits: pd.DataFrame) -> pd.DataFrame:
    """The roles table (item 2 of the components issue): one row per (model, step, task, head).

    Args:
        flags: :func:`role_flags`' rows.
        circuits: :func:`circuit_heads`' rows (every task with circuits).

    Returns:
        ``model, step, tokens_seen, task, head, layer, head_index, circuit_valid, in_circuit`` (whether the head
        is a node of the task's minimal circuit at that step; NA where the circuit is not valid, or the step has
        no circuit, so only valid circuits count, design §5), then the role columns of :data:`ROLES`.
    """
    roles = [r for r in ROLES if r in flags]
    rows = []
    for (model, task), c in circuits.groupby(["model", "task"], sort=True):
        f = flags[flags["model"] == model]
        c = c.set_index("step")
        valid = f["step"].map(c["valid"]).astype("boolean")
        heads = f["step"].map(c["heads"])
        member = pd.array([h in hs if isinstance(hs, frozenset) else pd.NA for h, hs in zip(f["head"], heads)],
                          dtype="boolean")
        member[~valid.fillna(False).to_numpy()] = pd.NA
        part = f[["model", "step", "tokens_seen"]].copy()
        part["task"] = task
        part[["head", "layer", "head_index"]] = f[["head", "layer", "head_index"]]
        part["circuit_valid"] = valid.to_numpy()
        part["in_circuit"] = member
        part[roles] = f[roles]
        rows.append(part)
    columns = ["model", "step", "tokens_seen", "task", "head", "layer", "head_index", "circuit_valid", "in_circuit",
               *roles]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True)[columns].sort_values(
        ["model", "task", "step", "layer", "head_index"], kind="stable", ignore_index=True)


# Checkpoints on each side of a hand-over that a persistent one needs (:func:`handovers`)
HANDOVER_PERSISTENCE = 2


def handovers(flags: pd.DataFrame, behavior: pd.DataFrame, emergence: pd.DataFrame, fraction: float,
              persistence: int = HANDOVER_PERSISTENCE) -> pd.DataFrame:
    """Role hand-overs between consecutive checkpoints while the task is performed (Tigges et al. 2024 §4.1), raw
    and persistent.

    A hand-over of role ``r`` from step ``t`` to the next analysed step ``t'`` is a head that holds ``r`` at ``t``
    and not at ``t'`` while another head that did not hold it at ``t`` holds it at ``t'``; it counts only when the
    role's task (:data:`ROLE_TASKS`) is performed at both steps (learnt there, and metric >= ``fraction`` x the
    final metric: the onset rule of :func:`emergence_table`, "performance held").

    Role tests at a threshold flicker from one checkpoint to the next (a score near its threshold), so a raw
    hand-over may be noise. A hand-over is *persistent* when some head that left held the role at the
    ``persistence`` analysed checkpoints up to ``t`` and at none of the ``persistence`` from ``t'`` on, some head
    that joined did the reverse, and the task is performed at all ``2 · persistence`` of them (a hand-over within
    ``persistence - 1`` checkpoints of either end of the run cannot be persistent).

    Args:
        flags: :func:`role_flags`' rows; behavior: :func:`behavior_table`'s; emergence: :func:`emergence_table`'s
            (with the same ``fraction``); persistence: checkpoints on each side (≥ 1; 1 makes every raw hand-over
            persistent).

    Returns:
        Rows ``model, task, role, step_from, step_to, tokens_to, left, joined`` (comma-separated heads),
        ``persistent`` (bool), ``left_persistent``, ``joined_persistent`` (the heads that satisfy it; empty when
        not persistent).

    Raises:
        ValueError: if ``persistence`` < 1.
    """
    if persistence < 1:
        raise ValueError(f"persistence {persistence}: a hand-over needs at least 1 checkpoint on each side")
    frame = behavior[behavior["split"] == "all"]
    rows = []
    for task, task_roles in ROLE_TASKS.items():
        for model in sorted(set(flags["model"])):
            e = emergence[(emergence["model"] == model) & (emergence["task"] == task)]
            rows_b = frame[(frame["model"] == model) & (frame["task"] == task)].set_index("step")
            if e.empty or rows_b.empty or np.isnan(e["emergence_step"].iloc[0]):
                continue
            bar = fraction * float(e["final_metric"].iloc[0])
            b = rows_b["metric"].where(rows_b["learnt"].astype(bool), -np.inf)  # not learnt: not performed
            performed = {s: s in b.index and b[s] >= bar for s in set(flags.loc[flags["model"] == model, "step"])}
            f = flags[flags["model"] == model]
            steps = sorted(set(f["step"]))
            for role in (r for r in task_roles if r in f):
                held = {s: set(f.loc[(f["step"] == s) & f[role], "head"]) for s in steps}
                for i, (t0, t1) in enumerate(zip(steps, steps[1:])):
                    if not (performed[t0] and performed[t1]):
                        continue
                    left, joined = held[t0] - held[t1], held[t1] - held[t0]
                    if not (left and joined):
                        continue
                    before, after = steps[i + 1 - persistence:i + 1], steps[i + 1:i + 1 + persistence]
                    window = (len(before) == persistence and i + 1 - persistence >= 0 and len(after) == persistence
                              and all(performed[s] for s in (*before, *after)))
                    stays_left = sorted(h for h in left if window and all(h in held[s] for s in before)
                                        and not any(h in held[s] for s in after))
                    stays_joined = sorted(h for h in joined if window and not any(h in held[s] for s in before)
                                          and all(h in held[s] for s in after))
                    persistent = bool(stays_left and stays_joined)
                    rows.append({"model": model, "task": task, "role": role, "step_from": t0, "step_to": t1,
                                 "tokens_to": int(f.loc[f["step"] == t1, "tokens_seen"].iloc[0]),
                                 "left": ",".join(sorted(left)), "joined": ",".join(sorted(joined)),
                                 "persistent": persistent,
                                 "left_persistent": ",".join(stays_left) if persistent else "",
                                 "joined_persistent": ",".join(stays_joined) if persistent else ""})
    return pd.DataFrame(rows, columns=HANDOVER_COLUMNS).astype({"persistent": bool})


HANDOVER_COLUMNS = ["model", "task", "role", "step_from", "step_to", "tokens_to", "left", "joined", "persistent",
                    "left_persistent", "joined_persistent"]


def component_lag_table(component_emergence: pd.DataFrame, emergence: pd.DataFrame,
                        hand: pd.DataFrame) -> pd.DataFrame:
    """Whether the components a task relies on (:data:`ROLE_TASKS`) emerged before, with or after the task, per
    (model, task) (the components issue, item 4; Tigges et al. 2024 §3.2).

    Component emergence is :func:`component_emergence_table`'s first step some head reaches the score's threshold
    (for a role with a score of its own name; the IOI pattern roles by their score; negative name movers by the
    negative copy score). Lag = component step − task onset step (negative: the component came first).

    Returns:
        Rows ``model, task, role, task_step, task_tokens, component_step, component_tokens, lag_steps,
        lag_tokens, relation`` (``before`` / ``with`` / ``after``; ``never`` when the component never appears,
        ``task never`` when the task is never learnt), ``handovers`` and ``handovers_persistent``
        (:func:`handovers`' raw and persistent counts for that role).
    """
    score_of = {"negative_name_mover": "negative_copy"}
    rows = []
    for _, e in emergence.iterrows():
        for role in ROLE_TASKS.get(e["task"], ()):
            ce = component_emergence[(component_emergence["model"] == e["model"])
                                     & (component_emergence["score"] == score_of.get(role, role))]
            c_step = float(ce["emergence_step"].iloc[0]) if len(ce) else np.nan
            c_tok = float(ce["emergence_tokens"].iloc[0]) if len(ce) else np.nan
            t_step, t_tok = float(e["emergence_step"]), float(e["emergence_tokens"])
            lag = c_step - t_step
            relation = ("task never" if np.isnan(t_step) else "never" if np.isnan(c_step)
                        else "before" if lag < 0 else "with" if lag == 0 else "after")
            mine = (hand["model"] == e["model"]) & (hand["task"] == e["task"]) & (hand["role"] == role)
            n, n_persistent = int(mine.sum()), int((mine & hand["persistent"].astype(bool)).sum())
            rows.append({"model": e["model"], "task": e["task"], "role": role, "task_step": t_step,
                         "task_tokens": t_tok, "component_step": c_step, "component_tokens": c_tok,
                         "lag_steps": lag, "lag_tokens": c_tok - t_tok, "relation": relation, "handovers": n,
                         "handovers_persistent": n_persistent})
    return pd.DataFrame(rows, columns=["model", "task", "role", "task_step", "task_tokens", "component_step",
                                       "component_tokens", "lag_steps", "lag_tokens", "relation", "handovers",
                                       "handovers_persistent"])


ALGORITHM_COLUMNS = ["model", "step", "tokens_seen", "panel", "receivers", "form", "denominator", "value", "n_class",
                     "class_heads", "formed", "reason"]


def algorithm_table(paths: list[str | Path]) -> pd.DataFrame:
    """The IOI algorithm metrics (Tigges et al. 2024 Fig. 4 B–D; :func:`circuit_stability.stability.algorithm_rows`)
    of every stability file: one row per (model, step, panel, form, denominator).

    ``formed`` marks the checkpoints where, in that form, all three classes exist (a name mover or negative name
    mover for B, an S-inhibition head for C, an induction or duplicate-token head for D): the paper's "after the
    circuit has formed".

    Returns:
        Columns :data:`ALGORITHM_COLUMNS`; ``value`` in percent, NaN with its ``reason`` where undefined.
    """
    from circuit_stability.records import StabilityRecord
    from circuit_stability.stability import algorithm_rows

    rows = []
    for p in paths:
        r = StabilityRecord.read(p)
        key = {k: r.meta[k] for k in ("model", "step", "tokens_seen")}
        rows += [{**key, **row} for row in algorithm_rows(r.frame, r.meta)]
    out = pd.DataFrame(rows, columns=[c for c in ALGORITHM_COLUMNS if c != "formed"])
    present = out[out["denominator"] == "all"].groupby(["model", "step", "form"])["n_class"].agg(
        lambda n: bool(len(n) == 3 and (n > 0).all()))
    out["formed"] = [bool(present.get((m, s, f), False)) for m, s, f in zip(out["model"], out["step"], out["form"])]
    out = out[ALGORITHM_COLUMNS].sort_values(["model", "step", "panel", "form", "denominator"], kind="stable")
    return out.astype({"step": "int64", "tokens_seen": "int64", "value": "float64", "n_class": "int64"}).reset_index(
        drop=True)


def similarity_table(paths: list[str | Path]) -> pd.DataFrame:
    """The per-model similarity files (:func:`circuit_stability.similarity.model_similarity`) of the study, one row
    per (model, task, scored step), with ``real_change``: whether the change from the previous scored step exceeds
    the noise floor (:func:`circuit_stability.similarity.real_change`: edge Jaccard below the 2.5th percentile of
    the within-checkpoint Jaccard at both steps; NA where any of them is undefined)."""
    from circuit_stability.similarity import SIMILARITY_COLUMNS, real_change

    frames = [pd.read_parquet(p) for p in paths]
    out = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SIMILARITY_COLUMNS))
    out = out.sort_values(["model", "task", "step"], kind="stable", ignore_index=True)
    floor = out.set_index(["model", "task", "step"])["boot_main_lo"].to_dict()
    out["real_change"] = pd.array(
        [real_change(j, floor.get((m, t, p), np.nan), floor.get((m, t, s), np.nan)) if np.isfinite(p) else None
         for m, t, s, p, j in zip(out["model"], out["task"], out["step"], out["prev_step"].astype(float),
                                  out["jaccard_prev"].astype(float))], dtype="boolean")
    return out


ROLE_ORDER = ("name_mover", "negative_name_mover", "s_inhibition", "induction", "duplicate_token", "previous_token",
              "successor")
"""A head's one label for the composition table: its first role in this order, else ``other head``."""


def _node_role(node: str, labels: dict[str, str]) -> str:
    node = node.split("<")[0]
    if node == "input" or node == "logits":
        return node
    if node.startswith("m"):
        return "mlp"
    return labels.get(node, "other head")


def composition_table(edges: pd.DataFrame, roles: pd.DataFrame) -> pd.DataFrame:
    """The composition of every valid circuit by role pair: the share of its edges from heads (or nodes) of one role
    into another, comparable across seeds and sizes, where head indices mean nothing (the similarity issue, item 4).

    A head's label is its first role in :data:`ROLE_ORDER` at that checkpoint (roles of the components stage), else
    ``other head``; ``input``, ``mlp`` and ``logits`` label themselves.

    Args:
        edges: :func:`circuit_edges_table`'s rows; roles: :func:`role_flags`' rows.

    Returns:
        Rows ``model, task, step, tokens_seen, src_role, dst_role, n_edges, share`` (share of the circuit's edges;
        sums to 1 per circuit).
    """
    cols = ["model", "task", "step", "tokens_seen", "src_role", "dst_role", "n_edges", "share"]
    if edges.empty:
        return pd.DataFrame(columns=cols)
    present = [r for r in ROLE_ORDER if r in roles]
    labels: dict[tuple[str, int], dict[str, str]] = {}
    for (model, step), f in roles.groupby(["model", "step"], sort=False):
        flags = f[present].to_numpy(dtype=bool)
        first = [present[int(np.argmax(row))] if row.any() else "other head" for row in flags]
        labels[(model, step)] = dict(zip(f["head"], first))
    rows = []
    for (model, task, step), f in edges.groupby(["model", "task", "step"], sort=True):
        lab = labels.get((model, step), {})
        pairs = pd.Series([(_node_role(a, lab), _node_role(b, lab)) for a, b in zip(f["src"], f["dst"])])
        counts = pairs.value_counts(sort=False)
        for (src, dst), n in sorted(counts.items()):
            rows.append({"model": model, "task": task, "step": int(step), "tokens_seen": int(f["tokens_seen"].iloc[0]),
                         "src_role": src, "dst_role": dst, "n_edges": int(n), "share": n / len(f)})
    return pd.DataFrame(rows, columns=cols)


def cross_model_table(composition: pd.DataFrame, edges: pd.DataFrame) -> pd.DataFrame:
    """Circuit similarity between the study's models at matched steps (seeds in the seeds study, sizes in the
    default one): for every task, step and pair of models with valid circuits at that step, the weighted Jaccard
    of their role-pair compositions (Σ min(share) / Σ max(share)), and the edge Jaccard where both models have the
    same graph (same layers and heads: seeds of one shape; NaN otherwise: head indices are not comparable).

    Returns:
        Rows ``task, step, tokens_seen, model_a, model_b, composition_jaccard, edge_jaccard``.
    """
    from circuit_stability.similarity import jaccard, weighted_jaccard

    cols = ["task", "step", "tokens_seen", "model_a", "model_b", "composition_jaccard", "edge_jaccard"]
    rows = []
    for (task, step), f in composition.groupby(["task", "step"], sort=True):
        models = sorted(set(f["model"]))
        shares = {m: f[f["model"] == m].set_index(["src_role", "dst_role"])["share"] for m in models}
        edge_sets = {m: set(zip(*[edges.loc[(edges["model"] == m) & (edges["task"] == task) & (edges["step"] == step),
                                            c] for c in ("src", "dst")])) for m in models}
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                keys = sorted(set(shares[a].index) | set(shares[b].index))
                wa = shares[a].reindex(keys, fill_value=0.0).to_numpy()
                wb = shares[b].reindex(keys, fill_value=0.0).to_numpy()
                same = _shape(a) == _shape(b)
                rows.append({"task": task, "step": int(step), "tokens_seen": int(f["tokens_seen"].iloc[0]),
                             "model_a": a, "model_b": b, "composition_jaccard": weighted_jaccard(wa, wb),
                             "edge_jaccard": jaccard(edge_sets[a], edge_sets[b]) if same else np.nan})
    return pd.DataFrame(rows, columns=cols)


def _shape(model: str) -> str:
    """A model's shape for cross-model comparisons: members named ``<base>-seed{k}``, ``-data-seed{k}`` or
    ``-weight-seed{k}`` share their base's shape (suite/seeds.py); other names are their own shape."""
    import re

    return re.sub(r"-(data-|weight-)?seed\d+$", "", model)


def _no_formation(rows: pd.DataFrame) -> str:
    """Why a model has no formed checkpoint: its algorithm rows' reason when they share one."""
    reasons = sorted(set(rows["reason"].dropna()))
    text = "no checkpoint is formed (all three classes present)"
    return f"{text}: {reasons[0]}" if len(reasons) == 1 else text


CLASS_OF_PANEL = {"B": "name-mover class", "C": "S-inhibition heads", "D": "induction or duplicate-token heads"}
"""The class of heads whose share of the path-patching effect each Fig. 4 panel measures (Tigges et al. 2024
Fig. 4; :data:`circuit_stability.stability.RECEIVER_SETS`)."""


def _class_presence(rows: pd.DataFrame) -> str:
    """For a model that never forms the IOI algorithm (one form's rows, every checkpoint): at how many
    checkpoints each panel's class of heads exists, and what share of the effect it carries where defined
    (the path-patching decomposition of what carries IOI instead)."""
    parts = []
    steps = rows["step"].nunique()
    for panel, name in CLASS_OF_PANEL.items():
        f = rows[rows["panel"] == panel]
        present = int(f.loc[f["n_class"] > 0, "step"].nunique())
        v = f.loc[f["n_class"] > 0, "value"].dropna()
        share = f", carrying {v.mean():.0f}% of the effect on average (min {v.min():.0f}%, max {v.max():.0f}%)" \
            if len(v) else ""
        parts.append(f"{panel}: {name} at {present} of {steps} checkpoints{share}")
    return "; ".join(parts)


FINDINGS_COLUMNS = ["finding", "figure", "model", "task", "quantity", "value", "low", "high", "n", "note"]


def findings_table(emergence: pd.DataFrame, lag: pd.DataFrame, hand: pd.DataFrame, algorithm: pd.DataFrame,
                   similarity: pd.DataFrame, cross: pd.DataFrame, behavior: pd.DataFrame,
                   controls: list[dict] = ()) -> pd.DataFrame:
    """The paper's four findings and the noise-floor one, each as measured numbers with their uncertainty
    (the report's and README's findings section). Rows (:data:`FINDINGS_COLUMNS`):

    - ``i acquisition``: per task, the onset (tokens, :func:`emergence_table`) across the study's models: ``value``
      = max/min onset ratio, ``low``/``high`` = the earliest and latest onset in tokens; ``n`` models that learnt
      it (uncertainty: an onset is known to the spacing of checkpoints, given in the note).
    - ``ii components with task``: per task, the lag of each component role behind the task's onset
      (:func:`component_lag_table`): ``value`` median lag in steps, ``low``/``high`` min and max, ``n`` roles
      that emerged; the note counts before / with / after / never.
    - ``iii hand-overs``: per model, two rows: the raw hand-overs while the task is performed and the persistent
      ones (:func:`handovers`): ``value`` count, the note per role.
    - ``iv algorithm``: per model, path-patching form (``paper`` first, then ``direct``) and panel (denominator
      every head), the mean of the metric over formed checkpoints, ``low``/``high`` min and max; NaN where no
      checkpoint is formed, with a note saying why, at how many checkpoints each panel's class of heads exists
      and the share of the effect it carries where it does (what carries IOI instead).
    - ``v beyond noise``: per (model, task), ``value`` the fraction of consecutive valid checkpoint pairs whose
      change exceeds the noise floor (``real_change``), ``low``/``high`` the median edge Jaccard between
      consecutive checkpoints and the median within-checkpoint Jaccard; ``n`` pairs.
    - ``cross-model``: per task at the last step, the median composition Jaccard between models (min, max).
    - ``control``: the planted controls' rows (:func:`control_rows`), appended as given.
    """
    rows = []
    add = lambda **r: rows.append({c: r.get(c, np.nan if c in ("value", "low", "high", "n") else None)  # noqa: E731
                                   for c in FINDINGS_COLUMNS})
    steps = sorted(set(behavior["step"])) if len(behavior) else []
    for task, f in emergence.groupby("task", sort=True):
        t = f["emergence_tokens"].dropna().astype(float)
        add(finding="i acquisition", figure="emergence.png", task=task, quantity="onset spread (max/min tokens)",
            value=float(t.max() / t.min()) if len(t) and t.min() > 0 else np.nan,
            low=float(t.min()) if len(t) else np.nan, high=float(t.max()) if len(t) else np.nan, n=len(t),
            note=f"{len(f) - len(t)} model(s) never learnt it; onsets are known to the checkpoint spacing "
                 f"(steps {steps[:3]} ... {steps[-2:]})" if steps else None)
    for task, f in lag.groupby("task", sort=True):
        d = f["lag_steps"].dropna().astype(float)
        rel = f["relation"].value_counts()
        add(finding="ii components with task", figure="figure2_components.png, component_lag.html", task=task,
            quantity="lag of component behind task onset (steps)", value=float(d.median()) if len(d) else np.nan,
            low=float(d.min()) if len(d) else np.nan, high=float(d.max()) if len(d) else np.nan, n=len(d),
            note=", ".join(f"{k} {int(rel.get(k, 0))}" for k in ("before", "with", "after", "never", "task never")))
    for model in sorted(set(emergence["model"])):
        h = hand[hand["model"] == model]
        add(finding="iii hand-overs", figure="component_lag.html", model=model, quantity="role hand-overs while "
            "the task is performed", value=float(len(h)), n=len(h),
            note=", ".join(f"{r} {n}" for r, n in h["role"].value_counts().sort_index().items()) or "none")
        p = h[h["persistent"].astype(bool)]
        add(finding="iii hand-overs", figure="component_lag.html", model=model,
            quantity=f"persistent role hand-overs (held {HANDOVER_PERSISTENCE} checkpoints on each side)",
            value=float(len(p)), n=len(p),
            note=", ".join(f"{r} {n}" for r, n in p["role"].value_counts().sort_index().items()) or "none")
    a = algorithm[algorithm["denominator"] == "all"] if len(algorithm) else algorithm
    for model in sorted(set(a["model"])) if len(a) else []:
        for form in sorted(set(a["form"]), key=lambda x: (x != "paper", x)):  # the paper's form first
            m = a[(a["model"] == model) & (a["form"] == form)]
            for panel in ("B", "C", "D"):
                f = m[m["panel"] == panel]
                formed = f[f["formed"]]["value"].dropna()
                add(finding="iv algorithm", figure="figure4_algorithm.png", model=model, task="ioi",
                    quantity=f"Fig. 4 {panel} after formation (%, form {form})",
                    value=float(formed.mean()) if len(formed) else np.nan,
                    low=float(formed.min()) if len(formed) else np.nan,
                    high=float(formed.max()) if len(formed) else np.nan,
                    n=len(formed), note=None if len(formed) else f"{_no_formation(f)}; {_class_presence(m)}")
    for (model, task), f in similarity.groupby(["model", "task"], sort=True):
        pairs = f[f["jaccard_prev"].notna()]
        real = pairs["real_change"].dropna()
        add(finding="v beyond noise", figure="similarity.png", model=model, task=task,
            quantity="share of consecutive changes beyond the noise floor",
            value=float(real.mean()) if len(real) else np.nan,
            low=float(pairs["jaccard_prev"].median()) if len(pairs) else np.nan,
            high=float(f["boot_main_median"].median()) if f["boot_main_median"].notna().any() else np.nan,
            n=len(real), note="low: median edge Jaccard between consecutive valid circuits; high: median "
                              "within-checkpoint Jaccard (resample vs main circuit)")
    if len(cross):
        last = cross[cross["step"] == cross["step"].max()]
        for task, f in last.groupby("task", sort=True):
            c = f["composition_jaccard"].dropna()
            add(finding="cross-model", figure="similarity.png", task=task,
                quantity=f"role-pair composition Jaccard between models at step {int(f['step'].iloc[0])}",
                value=float(c.median()) if len(c) else np.nan, low=float(c.min()) if len(c) else np.nan,
                high=float(c.max()) if len(c) else np.nan, n=len(c))
    rows += [{c: r.get(c, np.nan if c in ("value", "low", "high", "n") else None) for c in FINDINGS_COLUMNS}
             for r in controls]
    out = pd.DataFrame(rows, columns=FINDINGS_COLUMNS)
    return out.astype({"value": "float64", "low": "float64", "high": "float64", "n": "float64"})


def relabel_flags(flags: pd.DataFrame, source: str, model: str, layer: int, order: list[int],
                  from_step: int) -> pd.DataFrame:
    """The role flags a member derived from ``source`` by permuting ``layer``'s heads with ``order`` from
    ``from_step`` on must have (:mod:`circuit_stability.suite.derive`): the source's rows, renamed ``model``, with
    the head ``a{layer}.h{h}`` renamed ``a{layer}.h{i}`` (``order[i] == h``) at the steps from ``from_step``."""
    from circuit_stability.graph import head_name
    from circuit_stability.suite.derive import relabel

    f = flags[flags["model"] == source].copy()
    f["model"] = model
    moved = (f["step"] >= from_step) & (f["layer"] == layer)
    new_index = f["head_index"].map({h: relabel(h, order) for h in range(len(order))})
    f["head_index"] = f["head_index"].where(~moved, new_index).astype(f["head_index"].dtype)
    f["head"] = [head_name(layer, int(i)) if m else h for h, i, m in zip(f["head"], f["head_index"], moved)]
    return f.sort_values(["model", "step", "layer", "head_index"], kind="stable", ignore_index=True)


def control_rows(derived: dict[str, dict], behavior: pd.DataFrame, flags: pd.DataFrame, hand: pd.DataFrame,
                 emergence: pd.DataFrame, fraction: float, algorithm: pd.DataFrame, edges: pd.DataFrame | None = None,
                 similarity: pd.DataFrame | None = None, cross: pd.DataFrame | None = None) -> list[dict]:
    """The planted controls' findings rows (design §5 "Planted controls"): for each derived member, whether the
    analyses recover the known answer of its head permutation.

    - ``behaviour``: ``value`` the largest |metric difference| from the source over every task and checkpoint, in
      units of the source's largest |metric| (0 up to float rounding).
    - ``hand-overs``: ``value`` the hand-overs found that the permutation predicts (:func:`handovers` on the
      source's role flags relabelled, :func:`relabel_flags`, with the member's own behaviour); ``low`` the
      predicted ones not found, ``high`` the ones found and not predicted; ``n`` predicted at ``from_step``
      (the planted ones). All three must match for the control to pass: the note says which do not.
    - ``algorithm``: the largest |difference| of the Fig. 4 B–D metrics from the source's (percentage points,
      every form and denominator; NaN where neither has a value).
    - ``edge Jaccard`` (given ``edges`` and ``similarity``), per task with valid circuits at the first scored step
      from ``from_step`` on and at the scored step before it: ``value`` the member's edge Jaccard between the two
      circuits, ``low`` the value the permutation predicts (the source's earlier circuit against its later circuit
      with the permuted layer's heads renamed, :func:`~circuit_stability.suite.derive.relabel_node`), ``high``
      the source's own; the note says whether the member's change is beyond the noise floor (``real_change``),
      which it must be wherever the prediction is below the within-checkpoint Jaccard.
    - ``composition`` (given ``cross``): ``value`` the smallest role-pair composition Jaccard between the member
      and its source over every (task, step) where both have a valid circuit (1: roles, not head indices, carry
      the composition), ``high`` the largest, ``n`` the pairs compared.

    Args:
        derived: member → ``{"source", "layer", "order", "from_step"}``; the other arguments: this module's
            tables of the study.
    """
    rows = []
    key = ["task", "role", "step_from", "step_to", "left", "joined"]
    for model, d in sorted(derived.items()):
        src = d["source"]
        a = behavior[(behavior["model"] == src) & (behavior["split"] == "all")].set_index(["task", "step"])["metric"]
        b = behavior[(behavior["model"] == model) & (behavior["split"] == "all")].set_index(["task", "step"])["metric"]
        common = a.index.intersection(b.index)
        diff = float((a[common] - b[common]).abs().max() / max(a[common].abs().max(), 1e-12)) if len(common) else np.nan
        rows.append({"finding": "control", "figure": "behavior", "model": model, "quantity":
                     f"behaviour: largest |metric difference| from {src} (units of its largest |metric|)",
                     "value": diff, "n": len(common), "note": f"planted: layer {d['layer']} heads in order "
                     f"{d['order']} from step {d['from_step']}"})
        predicted = handovers(relabel_flags(flags, src, model, d["layer"], d["order"], d["from_step"]),
                              behavior, emergence, fraction)
        found = hand[hand["model"] == model]
        p, f = set(map(tuple, predicted[key].values.tolist())), set(map(tuple, found[key].values.tolist()))
        planted = sum(1 for r in p if r[3] == d["from_step"])
        missing, extra = sorted(p - f), sorted(f - p)
        rows.append({"finding": "control", "figure": "component_lag.html", "model": model,
                     "quantity": "hand-overs found as the permutation predicts (low: missing, high: not predicted)",
                     "value": float(len(p & f)), "low": float(len(missing)), "high": float(len(extra)),
                     "n": planted, "note": "; ".join(
                         [f"missing {r[1]} {r[4]}->{r[5]} at {r[3]}" for r in missing]
                         + [f"not predicted {r[1]} {r[4]}->{r[5]} at {r[3]}" for r in extra]) or
                     f"every hand-over as predicted ({planted} planted at step {d['from_step']})"})
        cols = ["step", "panel", "receivers", "form", "denominator"]
        if len(algorithm):
            x = algorithm[algorithm["model"] == src].set_index(cols)["value"]
            y = algorithm[algorithm["model"] == model].set_index(cols)["value"]
            both = x.index.intersection(y.index)
            gap = (x[both] - y[both]).abs()
            value = float(gap.max()) if gap.notna().any() else np.nan
        else:
            both, value = [], np.nan
        rows.append({"finding": "control", "figure": "figure4_algorithm.png", "model": model,
                     "quantity": f"Fig. 4 B-D: largest |difference| from {src} (percentage points)",
                     "value": value, "n": len(both),
                     "note": None if np.isfinite(value) else "no algorithm metric defined in either"})
        if edges is not None and similarity is not None and len(similarity):
            rows += _edge_jaccard_controls(model, d, edges, similarity)
        if cross is not None and len(cross):
            pair = cross[((cross["model_a"] == src) & (cross["model_b"] == model))
                         | ((cross["model_a"] == model) & (cross["model_b"] == src))]["composition_jaccard"].dropna()
            rows.append({"finding": "control", "figure": "similarity.png", "model": model,
                         "quantity": f"role-pair composition Jaccard with {src} (smallest; high: largest)",
                         "value": float(pair.min()) if len(pair) else np.nan,
                         "high": float(pair.max()) if len(pair) else np.nan, "n": len(pair),
                         "note": "every (task, step) with valid circuits in both" if len(pair) else
                         "no (task, step) with valid circuits in both"})
    return rows


def _edge_jaccard_controls(model: str, d: dict, edges: pd.DataFrame, similarity: pd.DataFrame) -> list[dict]:
    """The ``edge Jaccard`` control rows of :func:`control_rows` (one per task with valid circuits at both
    steps)."""
    from circuit_stability.similarity import jaccard
    from circuit_stability.suite.derive import relabel_node

    src = d["source"]
    scored = sorted(s for s in set(similarity.loc[similarity["model"] == model, "step"]) if s >= d["from_step"])
    if not scored:
        return []
    step = int(scored[0])  # the first scored checkpoint of the permuted model
    rows = []
    for task in sorted(set(similarity.loc[similarity["model"] == model, "task"])):
        mine = similarity[(similarity["model"] == model) & (similarity["task"] == task) & (similarity["step"] == step)]
        theirs = similarity[(similarity["model"] == src) & (similarity["task"] == task) & (similarity["step"] == step)]
        if mine.empty or theirs.empty or not np.isfinite(float(mine["jaccard_prev"].iloc[0])):
            continue
        prev = int(mine["prev_step"].iloc[0])

        def edge_set(m, s, rename=False):
            e = edges[(edges["model"] == m) & (edges["task"] == task) & (edges["step"] == s)]
            f = (lambda n: relabel_node(n, d["layer"], d["order"])) if rename else (lambda n: n)
            return {(f(u), f(v)) for u, v in zip(e["src"], e["dst"])}

        predicted = jaccard(edge_set(src, prev), edge_set(src, step, rename=True))
        flagged = mine["real_change"].iloc[0] if "real_change" in mine else None
        rows.append({"finding": "control", "figure": "similarity.png", "model": model, "task": task,
                     "quantity": f"edge Jaccard of step {step} with step {prev} (low: predicted by the permutation; "
                                 f"high: {src}'s own)",
                     "value": float(mine["jaccard_prev"].iloc[0]), "low": float(predicted),
                     "high": float(theirs["jaccard_prev"].iloc[0]), "n": 1,
                     "note": "beyond the noise floor: " + ("undefined" if flagged is None or pd.isna(flagged) else
                                                          "yes" if bool(flagged) else "no")})
    return rows


def write_tables(behavior: list[str | Path], circuits: list[str | Path], out: Path, emergence_fraction: float,
                 components: list[str | Path], component_thresholds: dict[str, float],
                 stability: list[str | Path] = (), similarity: list[str | Path] = (), *,
                 learnt: LearntCriterion, derived: dict[str, dict] | None = None) -> None:
    """Write ``behavior``, ``circuits``, ``circuit_edges``, ``faithfulness``, ``emergence``, ``components``, ``component_emergence``,
    ``roles``, ``handovers``, ``component_lag`` and ``algorithm`` ``.parquet`` into ``out`` (``emergence_fraction``:
    the onset rule of :func:`emergence_table`; ``components``: the components parquets; ``component_thresholds``:
    ``components.thresholds``, for :func:`component_emergence_table` and :func:`role_flags`; ``stability``: the
    stability parquets, for :func:`algorithm_table`; ``similarity``: the per-model similarity parquets, for
    ``similarity``, ``composition``, ``cross_model`` and ``findings``; ``learnt``: when a task is learnt, for
    :func:`behavior_table`; ``derived``: the study's derived members, member → source, layer, order, from_step,
    for the findings' control rows, :func:`control_rows`)."""
    c = components_table(list(components))
    component_emergence = component_emergence_table(c, component_thresholds)
    write_parquet(c, out / "components.parquet")
    write_parquet(component_emergence, out / "component_emergence.parquet")
    b = behavior_table(behavior, learnt)
    e = emergence_table(b, emergence_fraction)
    write_parquet(b, out / "behavior.parquet")
    write_parquet(circuit_table(circuits), out / "circuits.parquet")
    edges = circuit_edges_table(circuits)
    write_parquet(edges, out / "circuit_edges.parquet")
    write_parquet(faithfulness_table(circuits), out / "faithfulness.parquet")
    write_parquet(e, out / "emergence.parquet")
    flags = role_flags(c, component_thresholds)
    hand = handovers(flags, b, e, emergence_fraction)
    write_parquet(roles_table(flags, circuit_heads(circuits)), out / "roles.parquet")
    write_parquet(hand, out / "handovers.parquet")
    lag = component_lag_table(component_emergence, e, hand)
    write_parquet(lag, out / "component_lag.parquet")
    algorithm = algorithm_table(list(stability))
    write_parquet(algorithm, out / "algorithm.parquet")
    sim = similarity_table(list(similarity))
    write_parquet(sim, out / "similarity.parquet")
    composition = composition_table(edges, flags)
    write_parquet(composition, out / "composition.parquet")
    cross = cross_model_table(composition, edges)
    write_parquet(cross, out / "cross_model.parquet")
    controls = control_rows(derived or {}, b, flags, hand, e, emergence_fraction, algorithm, edges, sim, cross)
    write_parquet(findings_table(e, lag, hand, algorithm, sim, cross, b, controls), out / "findings.parquet")
