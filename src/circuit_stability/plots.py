"""Figures, drawn from the tables only (never recomputes anything).

- ``behavior_{task}.png``: the task metric against tokens seen, one line per model size (Tigges et al. 2024,
  Figure 1; log x-axis, symmetric-log near 0 so the initialisation, step 0, is shown).
- ``circuit_size.png``: minimal-circuit size in edges against tokens seen, one line per model, one panel per
  task (Tigges et al. 2024, Figure 5 left); hollow markers where no circuit reached the threshold. Before the
  task is learnt (m(M) below half its final value) f_paper = m(C)/m(M) divides by a near-zero metric and the
  "minimal circuit" is noise: those checkpoints are drawn as grey crosses, off the line.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from circuit_stability.artifacts import atomic_path  # noqa: E402

METRIC_LABELS = {"logit_diff": "logit difference", "prob_diff": "probability difference"}
TASK_TITLES = {"ioi": "IOI", "gp": "Gendered-Pronoun", "greater_than": "Greater-Than", "sva": "SVA"}


def _tokens_axis(ax, frame: pd.DataFrame) -> None:
    positive = frame.loc[frame["tokens_seen"] > 0, "tokens_seen"]
    ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("tokens seen")
    ax.grid(alpha=0.3)


def _save(fig, path: Path, dpi: int = 120) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def behavior_figure(behavior: pd.DataFrame, task: str, model_order: list[str], path: Path, dpi: int = 120) -> None:
    """Task metric (split 'all') against tokens seen, one line per model."""
    frame = behavior[(behavior["task"] == task) & (behavior["split"] == "all")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in [m for m in model_order if m in set(frame["model"])]:
        f = frame[frame["model"] == model].sort_values("tokens_seen")
        ax.plot(f["tokens_seen"], f["metric"], marker="o", ms=3, label=model)
    ax.axhline(0, color="grey", lw=0.8)
    _tokens_axis(ax, frame)
    ax.set_ylabel(METRIC_LABELS.get(frame["metric_name"].iloc[0], "metric"))
    ax.set_title(f"{TASK_TITLES.get(task, task)} behaviour over training")
    ax.legend(title="model")
    _save(fig, path, dpi)


def task_learnt(circuits: pd.DataFrame) -> pd.Series:
    """Per checkpoint of one model and task: m(M) ≥ half of its value at the last checkpoint (and > 0)."""
    final = circuits.sort_values("step")["metric_model"].iloc[-1]
    return (circuits["metric_model"] >= 0.5 * final) & (final > 0)


def circuit_size_figure(circuits: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120) -> None:
    """Minimal-circuit size (edges) against tokens seen; hollow markers where the threshold was not reached."""
    tasks = sorted(set(circuits["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        frame = circuits[circuits["task"] == task]
        for model in [m for m in model_order if m in set(frame["model"])]:
            f = frame[frame["model"] == model].sort_values("tokens_seen")
            learnt = task_learnt(f)
            ax.scatter(f.loc[~learnt, "tokens_seen"], f.loc[~learnt, "n_edges"], marker="x", color="0.6", s=12)
            f = f[learnt]
            line, = ax.plot(f["tokens_seen"], f["n_edges"], label=model)
            ok = f["reached"].astype(bool)
            ax.scatter(f.loc[ok, "tokens_seen"], f.loc[ok, "n_edges"], color=line.get_color(), s=12)
            ax.scatter(f.loc[~ok, "tokens_seen"], f.loc[~ok, "n_edges"], facecolors="none",
                       edgecolors=line.get_color(), s=12)
        _tokens_axis(ax, frame)
        ax.set_ylabel("circuit size (edges)")
        ax.set_title(f"{TASK_TITLES.get(task, task)}: minimal circuit\n(hollow: not reached; grey x: task not yet learnt)")
        ax.legend(title="model")
    _save(fig, path, dpi)


def make_figures(tables: Path, out: Path, model_order: list[str], dpi: int = 120) -> list[Path]:
    """Draw every figure from ``tables/behavior.parquet`` and ``tables/circuits.parquet`` into ``out`` (PNG)."""
    behavior = pd.read_parquet(tables / "behavior.parquet")
    circuits = pd.read_parquet(tables / "circuits.parquet")
    paths = []
    for task in sorted(set(behavior["task"])):
        paths.append(out / f"behavior_{task}.png")
        behavior_figure(behavior, task, model_order, paths[-1], dpi)
    paths.append(out / "circuit_size.png")
    circuit_size_figure(circuits, model_order, paths[-1], dpi)
    return paths
