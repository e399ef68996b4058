"""Figures, drawn from the tables only (never recomputes anything).

- ``figure1_behavior.png``: each task's metric against tokens seen, one line per model size, one panel per task
  (Tigges et al. 2024, Figure 1: IOI and Gendered-Pronoun logit difference, Greater-Than and SVA probability
  difference; log x-axis, linear near 0 so the initialisation, step 0, is shown).
- ``emergence.png``: tokens seen when each task first reaches half its final metric, per model and task.
- ``faithfulness_curves.png``: f_norm against the fraction of edges kept (MIB's grid) for the largest model,
  one panel per task, one line per selected checkpoint (the first with a valid circuit, the middle valid one,
  the last), with CPR (area under the curve) in the legend.
- ``circuit_size.png``: minimal-circuit size in edges against tokens seen, one line per model, one panel per
  task (Tigges et al. 2024, Figure 5 left); hollow markers where no circuit reached the threshold. Checkpoints
  whose circuit is not ``valid`` (the model does not perform the task, so f_paper = m(C)/m(M) divides by
  noise; :func:`circuits.circuit_validity`) are drawn as grey crosses, off the line.
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
TASK_ORDER = ("ioi", "gp", "greater_than", "sva")  # the paper's Figure 1 panel order


def _tasks(frame: pd.DataFrame) -> list[str]:
    present = set(frame["task"])
    return [t for t in TASK_ORDER if t in present] + sorted(present - set(TASK_ORDER))


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


def behavior_figure(behavior: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120) -> None:
    """Figure 1: task metric (split 'all') against tokens seen, one panel per task, one line per model."""
    tasks = _tasks(behavior)
    ncols = min(2, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        frame = behavior[(behavior["task"] == task) & (behavior["split"] == "all")]
        for model in [m for m in model_order if m in set(frame["model"])]:
            f = frame[frame["model"] == model].sort_values("tokens_seen")
            ax.plot(f["tokens_seen"], f["metric"], marker="o", ms=3, label=model)
        ax.axhline(0, color="grey", lw=0.8)
        _tokens_axis(ax, frame)
        ax.set_ylabel(METRIC_LABELS.get(frame["metric_name"].iloc[0], "metric"))
        ax.set_title(TASK_TITLES.get(task, task))
        ax.legend(title="model", fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle("Task behaviour over training (Tigges et al. 2024, Figure 1)")
    fig.tight_layout()
    _save(fig, path, dpi)


def emergence_figure(emergence: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120) -> None:
    """Tokens seen at each task's onset (metric ≥ half its final value), grouped by task, one bar per model."""
    tasks = _tasks(emergence)
    models = [m for m in model_order if m in set(emergence["model"])]
    fig, ax = plt.subplots(figsize=(1.8 * len(tasks) + 3, 3.8))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        f = emergence[emergence["model"] == model].set_index("task").reindex(tasks)
        ax.bar([i + k * width for i in range(len(tasks))], f["emergence_tokens"], width, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(tasks))],
                  [TASK_TITLES.get(t, t) for t in tasks])
    ax.set_yscale("log")
    ax.set_ylabel("tokens seen at onset")
    ax.set_title("Onset: first checkpoint with metric ≥ half its final value")
    ax.legend(title="model", fontsize=8)
    _save(fig, path, dpi)


def circuit_size_figure(circuits: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120) -> None:
    """Minimal-circuit size (edges) against tokens seen; hollow markers where the threshold was not reached."""
    tasks = _tasks(circuits)
    ncols = min(2, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4 * nrows), squeeze=False)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks):
        frame = circuits[circuits["task"] == task]
        for model in [m for m in model_order if m in set(frame["model"])]:
            f = frame[frame["model"] == model].sort_values("tokens_seen")
            valid = f["valid"].astype(bool)
            ax.scatter(f.loc[~valid, "tokens_seen"], f.loc[~valid, "n_edges"], marker="x", color="0.6", s=12)
            f = f[valid]
            line, = ax.plot(f["tokens_seen"], f["n_edges"], label=model)
            ok = f["reached"].astype(bool)
            ax.scatter(f.loc[ok, "tokens_seen"], f.loc[ok, "n_edges"], color=line.get_color(), s=12)
            ax.scatter(f.loc[~ok, "tokens_seen"], f.loc[~ok, "n_edges"], facecolors="none",
                       edgecolors=line.get_color(), s=12)
        _tokens_axis(ax, frame)
        ax.set_ylabel("circuit size (edges)")
        ax.set_title(f"{TASK_TITLES.get(task, task)}: minimal circuit\n(hollow: not reached; grey x: not valid)")
        ax.legend(title="model")
    fig.tight_layout()
    _save(fig, path, dpi)


def faithfulness_figure(faith: pd.DataFrame, circuits: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120) -> None:
    """f_norm against the fraction of edges for the largest model at three checkpoints, one panel per task."""
    model = [m for m in model_order if m in set(circuits["model"])][-1]
    tasks = _tasks(circuits)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        c = circuits[(circuits["model"] == model) & (circuits["task"] == task)].sort_values("step")
        learnt = c[c["valid"].astype(bool)]
        steps = sorted({int(learnt["step"].iloc[0]), int(learnt["step"].iloc[len(learnt) // 2]),
                        int(c["step"].iloc[-1])}) if len(learnt) else [int(c["step"].iloc[-1])]
        for step in steps:
            f = faith[(faith["model"] == model) & (faith["task"] == task) & (faith["step"] == step)
                      & (faith["source"] == "mib")].sort_values("fraction")
            cpr = c.loc[c["step"] == step, "cpr"].iloc[0]
            ax.plot(f["fraction"], f["f_norm"], marker="o", ms=3, label=f"step {step} (CPR {cpr:.2f})")
        ax.set_xscale("log")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xlabel("fraction of edges kept")
        ax.set_ylabel("f_norm = (m(C) − m(∅)) / (m(M) − m(∅))")
        ax.set_title(f"{model}: {TASK_TITLES.get(task, task)}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path, dpi)


FIGURES = ("figure1_behavior.png", "circuit_size.png", "emergence.png", "faithfulness_curves.png")


def make_figures(tables: Path, out: Path, model_order: list[str], dpi: int = 120) -> list[Path]:
    """Draw :data:`FIGURES` from ``tables/{behavior,circuits,emergence,faithfulness}.parquet`` into ``out``
    (PNG at ``dpi`` dots per inch)."""
    circuits = pd.read_parquet(tables / "circuits.parquet")
    behavior_figure(pd.read_parquet(tables / "behavior.parquet"), model_order, out / FIGURES[0], dpi)
    circuit_size_figure(circuits, model_order, out / FIGURES[1], dpi)
    emergence_figure(pd.read_parquet(tables / "emergence.parquet"), model_order, out / FIGURES[2], dpi)
    faithfulness_figure(pd.read_parquet(tables / "faithfulness.parquet"), circuits, model_order, out / FIGURES[3],
                        dpi)
    return [out / f for f in FIGURES]
