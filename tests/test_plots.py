"""Figures without data say why (issue 27): a panel with nothing to draw carries one line of reason and no axis."""

import numpy as np
import pandas as pd
import pytest

from circuit_stability import plots
from circuit_stability.tables import ALGORITHM_COLUMNS


def _is_reason_panel(ax, words: str) -> bool:
    """No visible axis, no data artist, and a text that contains ``words``."""
    texts = " ".join(t.get_text() for t in ax.texts)
    return (not ax.axison and not ax.lines and not ax.collections and not ax.patches
            and words in texts.replace("\n", " "))


def test_algorithm_figure_without_ioi_circuit_says_why(tmp_path):
    """Issue 27's Intel build: no model learnt IOI, so no valid IOI circuit and no path patching. Panel A states that
    no model has a valid IOI circuit; B-D state that there is no path-patching result (before: empty axes with an x
    range of -0.04 to 0.04 tokens)."""
    algorithm = pd.DataFrame(columns=ALGORITHM_COLUMNS)
    edges = pd.DataFrame(columns=["model", "task", "step", "tokens_seen", "src", "dst"])
    roles = pd.DataFrame(columns=["model", "step", "task", "head", "layer", "head_index"])
    fig = plots.algorithm_figure(algorithm, edges, roles, ["s", "m", "l"], tmp_path / "f4.png")
    assert (tmp_path / "f4.png").exists()
    a, *bcd = fig.axes[:4]
    assert _is_reason_panel(a, "no model has a valid IOI circuit")
    assert all(_is_reason_panel(ax, "no path-patching result") for ax in bcd)


def test_algorithm_panel_with_only_undefined_values_gives_their_reason(tmp_path):
    """Rows exist for panel B but every value is NaN (no name mover at any checkpoint): the panel states the reason
    recorded with the values; a panel with a number draws it on a real axis."""
    rows = []
    for step in (10, 20):
        rows.append({"model": "l", "step": step, "tokens_seen": step * 64, "panel": "B", "receivers": "logits",
                     "form": "paper", "denominator": "all", "value": np.nan, "n_class": 0, "class_heads": "",
                     "formed": False, "reason": "no name-mover head"})
        rows.append({"model": "l", "step": step, "tokens_seen": step * 64, "panel": "C",
                     "receivers": "name_mover_queries", "form": "paper", "denominator": "all", "value": 40.0,
                     "n_class": 1, "class_heads": "a1.h0", "formed": False, "reason": None})
    fig = plots.algorithm_figure(pd.DataFrame(rows, columns=ALGORITHM_COLUMNS),
                                 pd.DataFrame(columns=["model", "task", "step", "tokens_seen", "src", "dst"]),
                                 pd.DataFrame(columns=["model", "step", "task", "head", "layer", "head_index"]),
                                 ["l"], tmp_path / "f4.png")
    b, c = fig.axes[1], fig.axes[2]
    assert _is_reason_panel(b, "undefined at every checkpoint: no name-mover head")
    assert c.axison and c.lines and not c.texts


def test_emergence_figure_marks_unlearnt_tasks_and_says_when_none_is_learnt(tmp_path):
    e = pd.DataFrame([{"model": "l", "task": "ioi", "emergence_tokens": np.nan},
                      {"model": "l", "task": "sva", "emergence_tokens": 5000.0}])
    fig = plots.emergence_figure(e, ["l"], tmp_path / "e.png")
    assert fig.axes[0].axison and "not learnt" in [t.get_text() for t in fig.axes[0].texts]
    fig = plots.emergence_figure(e.assign(emergence_tokens=np.nan), ["l"], tmp_path / "e.png")
    assert _is_reason_panel(fig.axes[0], "no model learnt any task")


def test_faithfulness_and_circuit_size_panels_without_valid_circuits_say_why(tmp_path):
    circuits = pd.DataFrame([{"model": "l", "task": t, "step": s, "tokens_seen": s * 64, "valid": t == "sva" and s == 20,
                              "reached": t == "sva" and s == 20, "n_edges": 3 if t == "sva" else 0, "cpr": 0.5}
                             for t in ("ioi", "sva") for s in (10, 20)])
    faith = pd.DataFrame([{"model": "l", "task": "sva", "step": 20, "source": "mib", "fraction": f, "f_norm": 0.5}
                          for f in (0.01, 0.1, 1.0)])
    fig = plots.faithfulness_figure(faith, circuits, ["l"], tmp_path / "f.png")
    assert _is_reason_panel(fig.axes[0], "l has no valid IOI circuit") and fig.axes[1].lines
    fig = plots.circuit_size_figure(circuits, ["l"], tmp_path / "c.png")
    assert _is_reason_panel(fig.axes[0], "no model has a valid circuit for this task") and fig.axes[1].axison


def test_tokens_axis_is_log_by_default_and_linear_on_request(tmp_path):
    """plots.tokens_axis: the paper's log axis (linear below the first checkpoint, so step 0 shows), or a linear
    one for evenly spaced checkpoints; anything else is refused naming the valid values."""
    steps = [0, 1, 2, 4, 250, 500, 750, 1000]
    behavior = pd.DataFrame({"model": "m", "task": "ioi", "split": "all", "metric_name": "logit_diff",
                             "step": steps, "tokens_seen": [s * 2048 for s in steps],
                             "metric": np.linspace(0, 3, len(steps))})
    log = plots.behavior_figure(behavior, ["m"], tmp_path / "log.png")
    linear = plots.behavior_figure(behavior, ["m"], tmp_path / "linear.png", tokens_axis="linear")
    assert log.axes[0].get_xscale() == "symlog" and linear.axes[0].get_xscale() == "linear"
    # on the linear axis the evenly spaced checkpoints (250 on) fill more than 70% of the width
    left, right = linear.axes[0].get_xlim()
    assert (250 * 2048 - left) / (right - left) < 0.3
    with pytest.raises(ValueError, match=r"tokens axis 'lin'; valid: \['log', 'linear'\]"):
        plots.make_figures(tmp_path, tmp_path, ["m"], tokens_axis="lin")


def test_checkpoints_kept_though_flagged_by_the_audit_are_ringed_in_the_behaviour_figure(tmp_path):
    """Under `integrity: keep` a flagged checkpoint is analysed: Figure 1 rings it (and only it) in red."""
    steps = [0, 100, 200, 300]
    behavior = pd.DataFrame({"model": "m", "task": "ioi", "split": "all", "metric_name": "logit_diff",
                             "step": steps, "tokens_seen": [s * 64 for s in steps], "metric": [0.0, 3.0, 1.0, 2.0]})
    fig = plots.behavior_figure(behavior, ["m"], tmp_path / "b.png",
                                flagged=pd.DataFrame({"model": ["m", "other"], "step": [100, 200]}))
    rings = [c for c in fig.axes[0].collections if c.get_label() == plots.FLAGGED_LABEL]
    assert len(rings) == 1 and rings[0].get_offsets().tolist() == [[100 * 64, 3.0]]
    fig = plots.behavior_figure(behavior, ["m"], tmp_path / "b.png")
    assert not [c for c in fig.axes[0].collections if c.get_label() == plots.FLAGGED_LABEL]
