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
from circuit_stability.records import BehaviorRecord, CircuitRecord, ComponentsRecord


def behavior_table(paths: list[str | Path]) -> pd.DataFrame:
    """Rows ``model, step, tokens_seen, task, metric_name, split ('all'|'seen'|'held_out'), metric, accuracy,
    metric_corrupted, n`` from behaviour JSONs."""
    rows = []
    for p in paths:
        b = BehaviorRecord.read(p)
        base = {"model": b.model, "step": b.step, "tokens_seen": b.tokens_seen, "task": b.task,
                "metric_name": b.metric_name}
        rows.append({**base, "split": "all", "metric": b.metric, "accuracy": b.accuracy,
                     "metric_corrupted": b.metric_corrupted, "n": b.n_examples})
        rows += [{**base, "split": s, "metric": v["metric"], "accuracy": v["accuracy"], "metric_corrupted": np.nan,
                  "n": v["n"]} for s, v in b.splits.items()]
    return pd.DataFrame(rows).sort_values(["model", "task", "split", "step"], kind="stable", ignore_index=True)


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
    """Onset of each task in each model: the first step whose metric (split 'all') is ≥ ``fraction`` × the final
    checkpoint's metric.

    Returns:
        Rows ``model, task, metric_name, final_metric, emergence_step, emergence_tokens`` (NaN when the final
        metric is ≤ 0: the task was never learnt), plus per task ``spread_ratio`` = max/min emergence tokens
        across the models that learnt it, and ``spread_log10_std`` = standard deviation of log10 tokens.
    """
    rows = []
    frame = behavior[behavior["split"] == "all"]
    for (model, task), f in frame.groupby(["model", "task"], sort=True):
        f = f.sort_values("step")
        final = float(f["metric"].iloc[-1])
        hit = f[f["metric"] >= fraction * final] if final > 0 else f.iloc[:0]
        step = int(hit["step"].iloc[0]) if len(hit) else np.nan
        tokens = int(hit["tokens_seen"].iloc[0]) if len(hit) else np.nan
        rows.append({"model": model, "task": task, "metric_name": f["metric_name"].iloc[0], "final_metric": final,
                     "emergence_step": step, "emergence_tokens": tokens})
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
        ValueError: naming the scores of ``components`` that have no threshold.
    """
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


def write_tables(behavior: list[str | Path], circuits: list[str | Path], out: Path, emergence_fraction: float,
                 components: list[str | Path], component_thresholds: dict[str, float]) -> None:
    """Write ``behavior``, ``circuits``, ``faithfulness``, ``emergence``, ``components`` and
    ``component_emergence`` ``.parquet`` into ``out`` (``emergence_fraction``: the onset rule of
    :func:`emergence_table`; ``components``: the components parquets, none for a study without them;
    ``component_thresholds``: :func:`component_emergence_table`'s)."""
    c = components_table(list(components))
    write_parquet(c, out / "components.parquet")
    write_parquet(component_emergence_table(c, component_thresholds), out / "component_emergence.parquet")
    b = behavior_table(behavior)
    write_parquet(b, out / "behavior.parquet")
    write_parquet(circuit_table(circuits), out / "circuits.parquet")
    write_parquet(faithfulness_table(circuits), out / "faithfulness.parquet")
    write_parquet(emergence_table(b, emergence_fraction), out / "emergence.parquet")
