"""The circuit over training, interactive: one self-contained HTML page per model, with a view per task of its
minimal circuit at every scored checkpoint and a step slider (Plotly; plotly.js embedded once, so the page opens
offline with no web loads).

Each view draws the model's graph with nodes placed by layer (rows, the input below, the logits above) and head
(columns, the MLP to the right), the circuit's edges sized by |EAP-IG score| (the score of the checkpoint's scores
file, Tigges et al. 2024 §3), and each head coloured by the role it holds at that checkpoint for that task (the
roles table: a hand-over shows as a colour moving from one head to another). A checkpoint whose circuit is not valid
(circuit_stability.circuits, ``invalid_reason``) is drawn grey with its reason; the title of each step gives the
task metric and the circuit's faithfulness (f_paper = m(C)/m(M), f_norm = (m(C) − m(∅))/(m(M) − m(∅))).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# roles in the order a head holding several is coloured by (the IOI algorithm's classes first)
ROLE_COLOURS = {"name_mover": "#d62728", "negative_name_mover": "#9467bd", "s_inhibition": "#ff7f0e",
                "induction": "#1f77b4", "duplicate_token": "#17becf", "previous_token": "#2ca02c",
                "successor": "#8c564b"}
NO_ROLE = "#7f7f7f"
INVALID = "#c7c7c7"
WIDTH_BINS = 5  # edge traces per frame: |score| in equal bins up to the frame's largest |score|
MAX_DRAWN = 400  # edges drawn per checkpoint (the largest |score|): a Pythia circuit may hold thousands


@dataclass
class StepView:
    """What one slider step shows: the circuit of (model, task) at checkpoint ``step``.

    Attributes:
        step, tokens_seen: the checkpoint.
        edges: ``[(src node, dst node, score)]``; dst is the reading node (``a1.h2``, not ``a1.h2<q>``); score in
            task-metric units (EAP-IG; negative supports the task).
        roles: ``{head: role}`` for heads holding a role (the first of :data:`ROLE_COLOURS` they hold).
        valid: whether the circuit is valid; ``reason`` why not.
        metric, metric_name: the task metric of the full model (behaviour, split all).
        f_paper, f_norm: the circuit's faithfulness (NaN when there is no circuit).
    """

    step: int
    tokens_seen: int
    edges: list[tuple[str, str, float]] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)
    valid: bool = False
    reason: str = ""
    metric: float = float("nan")
    metric_name: str = ""
    f_paper: float = float("nan")
    f_norm: float = float("nan")


def node_positions(n_layers: int, n_heads: int) -> dict[str, tuple[float, float]]:
    """``{node: (x, y)}``: head ``a{l}.h{h}`` at (h, l), MLP ``m{l}`` at (n_heads + 0.5, l), ``input`` below layer 0
    and ``logits`` above the last layer, both centred."""
    centre = (n_heads - 1) / 2
    pos = {"input": (centre, -1.0), "logits": (centre, float(n_layers))}
    for layer in range(n_layers):
        for head in range(n_heads):
            pos[f"a{layer}.h{head}"] = (float(head), float(layer))
        pos[f"m{layer}"] = (n_heads + 0.5, float(layer))
    return pos


def _title(model: str, task: str, v: StepView) -> str:
    head = f"{model} · {task} · step {v.step:,} ({v.tokens_seen / 1e6:.2f} M tokens) · {v.metric_name} {v.metric:.3g}"
    if not v.valid:
        return f"{head}<br>no valid circuit: {html.escape(v.reason)[:160]}"
    shown = f" (the {MAX_DRAWN} of largest |score| drawn)" if len(v.edges) > MAX_DRAWN else ""
    return f"{head}<br>circuit: {len(v.edges)} edges{shown}, f_paper {v.f_paper:.2f}, f_norm {v.f_norm:.2f}"


def _frame_traces(v: StepView, pos: dict[str, tuple[float, float]]) -> list[dict]:
    """The traces of one step: :data:`WIDTH_BINS` edge traces (line segments, width by |score|) then the node
    trace; the same number and kinds of traces at every step, so the slider animates between them."""
    drawn = sorted(v.edges, key=lambda e: -abs(e[2]))[:MAX_DRAWN]
    largest = max((abs(s) for _, _, s in drawn), default=0.0) or 1.0
    bins: list[tuple[list, list]] = [([], []) for _ in range(WIDTH_BINS)]
    for src, dst, score in drawn:
        b = min(WIDTH_BINS - 1, int(abs(score) / largest * WIDTH_BINS))
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        bins[b][0].extend([x0, x1, None])
        bins[b][1].extend([y0, y1, None])
    traces = [{"type": "scatter", "mode": "lines", "x": xs, "y": ys, "hoverinfo": "skip", "showlegend": False,
               "line": {"width": 0.8 + 1.6 * b, "color": "rgba(60,60,60,0.55)" if v.valid else INVALID},
               "name": f"|score| bin {b + 1}"} for b, (xs, ys) in enumerate(bins)]
    in_circuit = {n for e in v.edges for n in e[:2]}
    names = list(pos)
    colours = [INVALID if not v.valid else ROLE_COLOURS.get(v.roles.get(n, ""), NO_ROLE) for n in names]
    opacity = [1.0 if (n in in_circuit or not v.valid) else 0.35 for n in names]
    text = [f"{n}: {v.roles.get(n, 'no role').replace('_', ' ')}" + (" (in circuit)" if n in in_circuit else "")
            for n in names]
    traces.append({"type": "scatter", "mode": "markers", "x": [pos[n][0] for n in names],
                   "y": [pos[n][1] for n in names], "text": text, "hoverinfo": "text", "showlegend": False,
                   "marker": {"size": 16, "color": colours, "opacity": opacity, "line": {"width": 1, "color": "#333"}},
                   "name": "nodes"})
    return traces


def task_figure(model: str, task: str, views: list[StepView], n_layers: int, n_heads: int):
    """The Plotly figure of one (model, task): a frame per scored checkpoint and a slider over them.

    Raises:
        ValueError: no views, or an edge naming a node the graph of ``n_layers`` × ``n_heads`` lacks.
    """
    import plotly.graph_objects as go

    if not views:
        raise ValueError(f"{model} {task}: no checkpoints to show")
    pos = node_positions(n_layers, n_heads)
    for v in views:
        bad = [n for e in v.edges for n in e[:2] if n not in pos]
        if bad:
            raise ValueError(f"{model} {task} step {v.step}: edge node {bad[0]!r} is not a node of a {n_layers}-layer, "
                             f"{n_heads}-head graph")
    frames = [go.Frame(name=str(v.step), data=_frame_traces(v, pos), layout={"title": {"text": _title(model, task, v)}})
              for v in views]
    first = next((i for i, v in enumerate(views) if v.valid), 0)
    legend = [go.Scatter(x=[None], y=[None], mode="markers", marker={"size": 12, "color": c}, name=r.replace("_", " "),
                         showlegend=True, hoverinfo="skip") for r, c in ROLE_COLOURS.items()]
    legend.append(go.Scatter(x=[None], y=[None], mode="markers", marker={"size": 12, "color": NO_ROLE},
                             name="no role", showlegend=True, hoverinfo="skip"))
    fig = go.Figure(data=list(frames[first].data) + legend, frames=frames)
    steps = [{"method": "animate", "label": f"{v.step:,}",
              "args": [[str(v.step)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                       "transition": {"duration": 0}}]} for v in views]
    ticks = {"tickvals": list(range(n_heads)) + [n_heads + 0.5],
             "ticktext": [f"h{h}" for h in range(n_heads)] + ["MLP"]}
    fig.update_layout(
        title={"text": _title(model, task, views[first]), "font": {"size": 13}},
        sliders=[{"active": first, "currentvalue": {"prefix": "step "}, "pad": {"t": 40}, "steps": steps}],
        xaxis={**ticks, "range": [-0.8, n_heads + 1.3], "zeroline": False, "showgrid": False},
        yaxis={"tickvals": [-1, *range(n_layers), n_layers], "ticktext": ["input", *[f"layer {l}" for l in
               range(n_layers)], "logits"], "range": [-1.6, n_layers + 0.6], "zeroline": False, "showgrid": False},
        height=200 + 70 * (n_layers + 2), width=max(640, 90 * (n_heads + 3)), plot_bgcolor="white",
        margin={"l": 70, "r": 20, "t": 80, "b": 20}, legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


def circuit_view_page(model: str, figures: dict[str, object]) -> str:
    """One self-contained HTML page (plotly.js embedded once) with each task's figure under its heading.

    Args:
        model: the model's name (page title).
        figures: ``{task: plotly Figure}`` (:func:`task_figure`).
    """
    from plotly.offline import get_plotlyjs

    parts = []
    for task, fig in figures.items():
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"circuit-{task}",
                          auto_play=False, config={"displaylogo": False})
        parts.append(f"<section><h2>{html.escape(task)}</h2>{div}</section>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Circuits over training: "
            f"{html.escape(model)}</title><script type='text/javascript'>{get_plotlyjs()}</script>"
            "<style>body{font-family:sans-serif;margin:1em 2em}</style></head><body>"
            f"<h1>Circuits over training: {html.escape(model)}</h1><p>The minimal circuit of each task at every scored "
            "checkpoint (move the slider): nodes by layer and head, edges sized by |EAP-IG score|, heads coloured by "
            "the role they hold for the task at that checkpoint (a hand-over is a colour moving between heads); a "
            "checkpoint without a valid circuit is grey, with its reason.</p>"
            + "".join(parts) + "</body></html>")


def collect_views(model: str, tasks: list[str], steps: list[int], circuits_dir: Path, scores_dir: Path,
                  tables: Path) -> tuple[dict[str, list[StepView]], int, int]:
    """Read what the views of ``model`` show: the circuits (``circuits_dir/{task}/step{step}.json``), their edges'
    scores (``scores_dir/{task}/step{step}.parquet``) and the study tables (``roles``, ``circuits``, ``behavior``).

    Returns:
        ``({task: [StepView per step]}, n_layers, n_heads)``.

    Raises:
        RecordError: a circuit or scores file that does not match its contract (naming it).
    """
    from circuit_stability.records import CircuitRecord, ScoresRecord

    roles = pd.read_parquet(tables / "roles.parquet")
    roles = roles[roles["model"] == model]
    circuits = pd.read_parquet(tables / "circuits.parquet").set_index(["model", "task", "step"])
    behavior = pd.read_parquet(tables / "behavior.parquet")
    behavior = behavior[(behavior["model"] == model) & (behavior["split"] == "all")].set_index(["task", "step"])
    out: dict[str, list[StepView]] = {}
    shape = (0, 0)
    for task in tasks:
        views = []
        for step in steps:
            scores = ScoresRecord.read(scores_dir / task / f"step{step}.parquet")
            g = scores.graph
            shape = (g.n_layers, g.n_heads)
            record = CircuitRecord.read(circuits_dir / task / f"step{step}.json", g)
            edges = []
            if record.edges:
                src, dst = zip(*(e.split("->") for e in record.edges))
                w, r = g.edge_ids(list(src), list(dst), f"circuit of {model} {task} step {step}")
                live = np.zeros(g.n_writers, dtype=bool)  # a shared key/value input (grouped-query attention)
                live[w] = True                            # is drawn into its group's heads that are in the circuit
                edges = [(s, node, float(scores.scores[wi, ri])) for s, wi, ri in zip(src, w, r)
                         for node in g.reader_nodes(int(ri), live)]
            held = roles[(roles["task"] == task) & (roles["step"] == step)]
            role_of = {}
            for row in held.itertuples():
                role = next((k for k in ROLE_COLOURS if bool(getattr(row, k))), None)
                if role:
                    role_of[row.head] = role
            c = circuits.loc[(model, task, step)] if (model, task, step) in circuits.index else None
            b = behavior.loc[(task, step)] if (task, step) in behavior.index else None
            views.append(StepView(step=step, tokens_seen=int(record.tokens_seen), edges=edges, roles=role_of,
                                  valid=bool(record.valid), reason=record.invalid_reason or "",
                                  metric=float(b["metric"]) if b is not None else float("nan"),
                                  metric_name=str(b["metric_name"]) if b is not None else "",
                                  f_paper=float(c["f_paper"]) if c is not None else float("nan"),
                                  f_norm=float(c["f_norm"]) if c is not None else float("nan")))
        out[task] = views
    return out, shape[0], shape[1]


__all__ = ["ROLE_COLOURS", "StepView", "node_positions", "task_figure", "circuit_view_page", "collect_views"]
