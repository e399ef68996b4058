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
  noise; :func:`circuits.circuit_validity`; no circuit is searched there) are drawn as grey crosses at 0, off
  the line.
- ``figure2_components.png``: per component type, each model's strongest in-circuit head's score against tokens
  seen (Figure 2; :func:`strongest_heads`).
- ``figure3_top_heads.png``: the largest model's top 5 heads of each component score over training (Figure 3).
- ``component_lag.html``: whether each task's components emerged before, with or after the task, with the lag and
  the hand-overs (tables for the report).
- ``figure4_algorithm.png``: A, the largest model's last valid IOI circuit, heads coloured by role; B–D, the IOI
  algorithm metrics against tokens seen, both path-patching forms (Figure 4; :func:`algorithm_figure`).
- ``similarity.png``: circuit similarity over training with its bootstrap noise floor (:func:`similarity_figure`).
- ``findings.html``: the findings table (:func:`findings_page`).
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


TOKENS_AXES = ("log", "linear")  # plots.tokens_axis


def _tokens_axis(ax, frame: pd.DataFrame, scale: str = "log") -> None:
    """Label a tokens-seen x axis. ``log``: logarithmic, linear below the first checkpoint after step 0 so the
    initialisation shows (the paper's axes, for log-spaced checkpoints); ``linear``: for evenly spaced checkpoints
    over most of training, where a log axis squeezes the span after the onsets into the right edge.

    Raises:
        ValueError: for another ``scale``, naming the valid ones.
    """
    if scale not in TOKENS_AXES:
        raise ValueError(f"tokens axis {scale!r}; valid: {list(TOKENS_AXES)}")
    if scale == "log":
        positive = frame.loc[frame["tokens_seen"] > 0, "tokens_seen"]
        ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("tokens seen")
    ax.grid(alpha=0.3)


def _save(fig, path: Path, dpi: int = 120):
    """Write ``fig`` as a PNG atomically, close it, and return it (its axes stay readable, for tests)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return fig


def no_data(ax, reason: str) -> None:
    """A panel with nothing to draw: no axes, no data range, one line saying why (issue 27: never an empty axis
    with a meaningless range). The panel's title, if any, stays."""
    for artist in list(ax.lines) + list(ax.collections) + list(ax.patches):
        artist.remove()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set_axis_off()
    ax.text(0.5, 0.5, reason, transform=ax.transAxes, ha="center", va="center", fontsize=8, wrap=True,
            color="0.3")


FLAGGED_LABEL = "flagged by the checkpoint audit, kept"


def behavior_figure(behavior: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120,
                    tokens_axis: str = "log", flagged: pd.DataFrame | None = None):
    """Figure 1: task metric (split 'all') against tokens seen, one panel per task, one line per model; the
    checkpoints of ``flagged`` (columns ``model``, ``step``: flagged by the checkpoint audit and kept under the
    ``keep`` integrity policy) ringed in red (:data:`FLAGGED_LABEL`)."""
    tasks = _tasks(behavior)
    ncols = min(2, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        frame = behavior[(behavior["task"] == task) & (behavior["split"] == "all")]
        for model in [m for m in model_order if m in set(frame["model"])]:
            f = frame[frame["model"] == model].sort_values("tokens_seen")
            ax.plot(f["tokens_seen"], f["metric"], marker="o", ms=3, label=model)
            if flagged is not None:
                marked = f[f["step"].isin(flagged[flagged["model"] == model]["step"])]
                if len(marked):
                    ax.scatter(marked["tokens_seen"], marked["metric"], s=70, facecolors="none", edgecolors="red",
                               linewidths=1.5, zorder=5, label=FLAGGED_LABEL if FLAGGED_LABEL not in
                               ax.get_legend_handles_labels()[1] else None)
        ax.axhline(0, color="grey", lw=0.8)
        _tokens_axis(ax, frame, tokens_axis)
        ax.set_ylabel(METRIC_LABELS.get(frame["metric_name"].iloc[0], "metric"))
        ax.set_title(TASK_TITLES.get(task, task))
        ax.legend(title="model", fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle("Task behaviour over training (Tigges et al. 2024, Figure 1)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def emergence_figure(emergence: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120):
    """Tokens seen at each task's onset (metric ≥ half its final value), grouped by task, one bar per model."""
    tasks = _tasks(emergence)
    models = [m for m in model_order if m in set(emergence["model"])]
    fig, ax = plt.subplots(figsize=(1.8 * len(tasks) + 3, 3.8))
    width = 0.8 / max(1, len(models))
    ax.set_title("Onset: first checkpoint where the task is learnt with metric ≥ half its final value")
    if not emergence["emergence_tokens"].notna().any():
        no_data(ax, "no model learnt any task by its last checkpoint, so no task has an onset")
        return _save(fig, path, dpi)
    low = float(emergence["emergence_tokens"].dropna().clip(lower=1).min())
    for k, model in enumerate(models):
        f = emergence[emergence["model"] == model].set_index("task").reindex(tasks)
        xs = [i + k * width for i in range(len(tasks))]
        bars = ax.bar(xs, f["emergence_tokens"], width, label=model)
        for x, v in zip(xs, f["emergence_tokens"]):
            if pd.isna(v):  # a task not learnt at the last checkpoint has no onset: say so where its bar would be
                ax.text(x, low, "not learnt", rotation=90, ha="center", va="bottom", fontsize=7,
                        color=bars.patches[0].get_facecolor())
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(tasks))],
                  [TASK_TITLES.get(t, t) for t in tasks])
    ax.set_yscale("log")
    ax.set_ylabel("tokens seen at onset")
    ax.legend(title="model", fontsize=8)
    return _save(fig, path, dpi)


def circuit_size_figure(circuits: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120,
                        tokens_axis: str = "log"):
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
        _tokens_axis(ax, frame, tokens_axis)
        ax.set_ylabel("circuit size (edges)")
        ax.set_title(f"{TASK_TITLES.get(task, task)}: minimal circuit\n(hollow: not reached; grey x: not valid)")
        ax.legend(title="model")
        if not frame["valid"].astype(bool).any():
            no_data(ax, "no model has a valid circuit for this task at any checkpoint\n(not learnt, or not emerged)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def faithfulness_figure(faith: pd.DataFrame, circuits: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120):
    """f_norm against the fraction of edges for the largest model at three checkpoints, one panel per task."""
    model = [m for m in model_order if m in set(circuits["model"])][-1]
    tasks = _tasks(circuits)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        c = circuits[(circuits["model"] == model) & (circuits["task"] == task)].sort_values("step")
        learnt = c[c["valid"].astype(bool)]
        ax.set_title(f"{model}: {TASK_TITLES.get(task, task)}")
        if learnt.empty:
            no_data(ax, f"{model} has no valid {TASK_TITLES.get(task, task)} circuit\n(the task is not learnt or "
                        "has not emerged), so no faithfulness curve")
            continue
        steps = sorted({int(learnt["step"].iloc[0]), int(learnt["step"].iloc[len(learnt) // 2]),
                        int(learnt["step"].iloc[-1])})
        for step in steps:
            f = faith[(faith["model"] == model) & (faith["task"] == task) & (faith["step"] == step)
                      & (faith["source"] == "mib")].sort_values("fraction")
            cpr = c.loc[c["step"] == step, "cpr"].iloc[0]
            ax.plot(f["fraction"], f["f_norm"], marker="o", ms=3, label=f"step {step} (CPR {cpr:.2f})")
        ax.set_xscale("log")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xlabel("fraction of edges kept")
        ax.set_ylabel("f_norm = (m(C) − m(∅)) / (m(M) − m(∅))")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi)


# Figure 2 / 3 panels: (score, the role it defines, the task whose circuit the role serves (tables.ROLE_TASKS; the
# paper's Figure 2 reads induction and successor heads in the Greater-Than circuit), axis label)
COMPONENT_PANELS = (
    ("copy", "name_mover", "ioi", "copy score (%)"),
    ("negative_copy", "negative_name_mover", "ioi", "negative copy score (%)"),
    ("induction", "induction", "greater_than", "induction score"),
    ("successor", "successor", "greater_than", "successor score"),
    ("duplicate_token", "duplicate_token", "ioi", "duplicate-token score"),
    ("previous_token", "previous_token", "ioi", "previous-token score"),
)


def strongest_heads(roles: pd.DataFrame, components: pd.DataFrame) -> pd.DataFrame:
    """Figure 2's head per (model, panel of :data:`COMPONENT_PANELS`): the head that holds the role while a node of
    its task's valid circuit at the most checkpoints ("strongest" = most persistent, as the paper's
    ``figure_2*.py``, not the earliest-emerging of its text; ties: the higher maximum score). Without such a head,
    the head holding the role at the most checkpoints, in or out of circuits (``kind`` = "not in circuit"); if no
    head ever holds it, the best head at the last checkpoint ("never holds the role").

    Returns:
        Rows ``model, score, role, task, head, kind, checkpoints`` (checkpoints counted for that kind).
    """
    rows = []
    for model in sorted(set(components["model"])):
        comp = components[components["model"] == model]
        for score, role, task, _ in COMPONENT_PANELS:
            values = comp[comp["score"] == score]
            if values.empty:
                continue
            peak = values.groupby("head")["value"].max()
            r = roles[(roles["model"] == model) & (roles["task"] == task)] if role in roles else roles.iloc[:0]
            held = r[r[role].astype(bool)] if len(r) else r
            choice = None
            for kind, part in (("in circuit", held[held["in_circuit"].fillna(False).astype(bool)]),
                               ("not in circuit", held)):
                if len(part):
                    count = part.groupby("head").size()
                    ranked = sorted(count.index, key=lambda h: (-count[h], -peak.get(h, 0.0), h))
                    choice = (ranked[0], kind, int(count[ranked[0]]))
                    break
            if choice is None:
                last = values[values["step"] == values["step"].max()].sort_values("value", ascending=False)
                choice = (last["head"].iloc[0], "never holds the role", 0)
            rows.append({"model": model, "score": score, "role": role, "task": task, "head": choice[0],
                         "kind": choice[1], "checkpoints": choice[2]})
    return pd.DataFrame(rows, columns=["model", "score", "role", "task", "head", "kind", "checkpoints"])


def _panel_grid(n: int, width: float = 4.6, height: float = 3.4):
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _component_panel(ax, frame: pd.DataFrame, component_emergence: pd.DataFrame, score: str, label: str,
                     title: str, tokens_axis: str = "log") -> None:
    """Finish a panel of Figure 2 or 3: the score's threshold as a grey dashed line, the tokens axis, labels."""
    t = component_emergence.loc[component_emergence["score"] == score, "threshold"]
    if len(t):
        ax.axhline(float(t.iloc[0]), color="grey", lw=0.8, ls="--")
    _tokens_axis(ax, frame, tokens_axis)
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.legend(fontsize=7)


def components_figure(components: pd.DataFrame, roles: pd.DataFrame, component_emergence: pd.DataFrame,
                      model_order: list[str], path: Path, dpi: int = 120, tokens_axis: str = "log"):
    """Figure 2: per component type, the strongest in-circuit head of each model (:func:`strongest_heads`)
    against tokens seen; dashed: the head never sits in the task's circuit with the role; dotted: no head ever
    holds the role. Grey line: the role's threshold."""
    chosen = strongest_heads(roles, components)
    panels = [p for p in COMPONENT_PANELS if p[0] in set(components["score"])]
    fig, axes = _panel_grid(len(panels))
    style = {"in circuit": "-", "not in circuit": "--", "never holds the role": ":"}
    for ax, (score, role, task, label) in zip(axes, panels):
        for model in [m for m in model_order if m in set(components["model"])]:
            c = chosen[(chosen["model"] == model) & (chosen["score"] == score)]
            if c.empty:
                continue
            head, kind = c["head"].iloc[0], c["kind"].iloc[0]
            f = components[(components["model"] == model) & (components["score"] == score)
                           & (components["head"] == head)].sort_values("tokens_seen")
            ax.plot(f["tokens_seen"], f["value"], style[kind], marker="o", ms=2.5,
                    label=f"{model} {head}" + ("" if kind == "in circuit" else f" ({kind})"))
        _component_panel(ax, components, component_emergence, score, label,
                         f"{role.replace('_', '-')} ({TASK_TITLES.get(task, task)} circuit)", tokens_axis)
    fig.suptitle("Strongest in-circuit head of each component type (Tigges et al. 2024, Figure 2)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def top_heads_figure(components: pd.DataFrame, component_emergence: pd.DataFrame, model_order: list[str],
                     path: Path, dpi: int = 120, k: int = 5, tokens_axis: str = "log"):
    """Figure 3: the largest model's top ``k`` heads of each component score (by maximum over training) against
    tokens seen, so hand-overs between heads show as crossing lines. Grey line: the score's threshold."""
    model = [m for m in model_order if m in set(components["model"])][-1]
    comp = components[components["model"] == model]
    panels = [p for p in COMPONENT_PANELS if p[0] in set(comp["score"])]
    fig, axes = _panel_grid(len(panels))
    for ax, (score, role, _, label) in zip(axes, panels):
        f = comp[comp["score"] == score]
        top = f.groupby("head")["value"].max().sort_values(ascending=False, kind="stable").index[:k]
        for head in top:
            g = f[f["head"] == head].sort_values("tokens_seen")
            ax.plot(g["tokens_seen"], g["value"], marker="o", ms=2.5, label=head)
        _component_panel(ax, f, component_emergence, score, label,
                         f"{model}: top {k} {role.replace('_', '-')} heads", tokens_axis)
    fig.suptitle(f"Component heads of {model} over training (Tigges et al. 2024, Figure 3)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def component_lag_page(lag: pd.DataFrame, hand: pd.DataFrame, component_emergence: pd.DataFrame,
                       path: Path) -> None:
    """``component_lag.html``: the component-lag table (per model, task and role: onset steps and tokens, lag,
    before / with / after, hand-over count), every hand-over, and the component emergence table (whose
    ``final_best`` shows how far a type that never appears stays from its threshold), as HTML tables for the
    report (pandas ``to_html``)."""
    lag = lag.copy()
    for c in ("task_step", "component_step", "lag_steps", "task_tokens", "component_tokens", "lag_tokens"):
        lag[c] = lag[c].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    text = ("<h3>Components against task onset</h3><p>Per model and task: the first checkpoint at which each "
            "component the task relies on appears (some head reaches the score's threshold), the task's onset "
            "(metric at half its final value), the lag (component step minus onset step; negative: the component "
            "came first), and the number of hand-overs of that role while the task is performed, raw and "
            "persistent.</p>"
            + lag.to_html(index=False, na_rep="", border=0)
            + "<h3>Hand-overs</h3><p>A head leaves the role between two consecutive checkpoints while another takes "
            "it, the task performed at both. Persistent: a head that left held the role at the two checkpoints up "
            "to the hand-over and at neither of the two from it on, a head that joined did the reverse, and the "
            "task is performed at all four (role tests at a threshold flicker; a raw hand-over may be noise).</p>"
            + (hand.to_html(index=False, border=0) if len(hand) else "<p>None.</p>")
            + "<h3>Component emergence</h3><p>Per model and score: the first checkpoint some head reaches the "
            "threshold, that head, and the best head and its score at the last checkpoint (for a type that never "
            "appears, the scores that show it).</p>" + component_emergence.to_html(index=False, na_rep="—", border=0))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(f"<!DOCTYPE html><html><body>{text}</body></html>\n", encoding="utf-8")


ROLE_COLOURS = {"name_mover": "tab:red", "negative_name_mover": "tab:pink", "s_inhibition": "tab:orange",
                "induction": "tab:green", "duplicate_token": "tab:olive", "previous_token": "tab:cyan",
                "successor": "tab:purple"}
"""Node colour of a head by its role in Figure 4 A, in this order of precedence (a head with several roles takes
the first)."""

ALGORITHM_PANELS = (("B: direct effects on the logits", "logits", "% of the effect on the logits\nfrom name movers"),
                    ("C: S-inhibition", "name_mover_queries",
                     "% of the effect on name-mover queries\nfrom S-inhibition heads"),
                    ("D: induction / duplicate-token", "s_inhibition_values",
                     "% of the effect on S-inhibition values\nfrom induction / duplicate-token heads"))


def _node_xy(node: str, n_heads: int) -> tuple[float, float]:
    """Drawing position of a graph node: x = layer (input at −1), y = head index (the MLP above the heads)."""
    if node == "input":
        return -1.0, (n_heads - 1) / 2
    if node.startswith("m"):
        return float(node[1:]) + 0.35, float(n_heads) + 0.5
    layer, head = node[1:].split(".h")
    return float(layer), float(head)


def circuit_graph_panel(ax, edges: pd.DataFrame, roles: pd.DataFrame, title: str) -> None:
    """Figure 4 A: one circuit's nodes (input, heads, MLPs, logits) and edges, heads coloured by their role at that
    checkpoint (:data:`ROLE_COLOURS`; grey: none), the q/k/v input of each edge into a head as its label's
    letter. Drawn with networkx on matplotlib.

    Args:
        edges: rows ``src``, ``dst`` of one circuit (:func:`~circuit_stability.tables.circuit_edges_table`).
        roles: the roles table's rows of that model, task and step (one per head).
    """
    import networkx as nx

    graph = nx.DiGraph()
    for src, dst in zip(edges["src"], edges["dst"]):
        node, _, qkv = dst.partition("<")
        before = graph.edges[src, node]["qkv"] if graph.has_edge(src, node) else ""
        graph.add_edge(src, node, qkv=before + qkv.rstrip(">"))  # "kv": the edge feeds the head's k and v inputs
    heads = [n for n in graph if n.startswith("a")]
    n_heads = int(roles["head_index"].max()) + 1 if len(roles) else 1
    n_layers = int(roles["layer"].max()) + 1 if len(roles) else 1
    pos = {n: _node_xy(n, n_heads) for n in graph if n != "logits"}
    pos["logits"] = (float(n_layers), (n_heads - 1) / 2)
    role_of = {}
    for _, r in roles.iterrows():
        role_of[r["head"]] = next((k for k in ROLE_COLOURS if k in r and bool(r[k])), None)
    colours = [ROLE_COLOURS.get(role_of.get(n)) or "lightgrey" if n in heads else "white" for n in graph]
    nx.draw_networkx_edges(graph, pos, ax=ax, edge_color="0.55", arrowsize=8, width=0.8,
                           connectionstyle="arc3,rad=0.08", node_size=420)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, edgecolors="0.3", node_size=420)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=6)
    labels = {(u, v): d["qkv"] for u, v, d in graph.edges(data=True) if d["qkv"]}
    nx.draw_networkx_edge_labels(graph, pos, edge_labels=labels, ax=ax, font_size=6, label_pos=0.25)
    used = sorted({role_of.get(n) for n in heads} - {None}, key=list(ROLE_COLOURS).index)
    for role in used:
        ax.scatter([], [], color=ROLE_COLOURS[role], label=role.replace("_", "-"), edgecolors="0.3")
    if used:
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title)
    ax.set_xlabel("layer")
    ax.set_axis_off()


def algorithm_figure(algorithm: pd.DataFrame, edges: pd.DataFrame, roles: pd.DataFrame, model_order: list[str],
                     path: Path, dpi: int = 120):
    """Figure 4 (Tigges et al. 2024 §4.2): A, the largest model's last valid IOI circuit as a graph of heads coloured
    by role (:func:`circuit_graph_panel`); B–D, each algorithm metric (denominator: every head) against tokens seen,
    one colour per model, solid for the paper's path patching (form (a)), dashed for direct edges only (form (b));
    filled markers where the circuit has formed (all three classes exist), hollow elsewhere, 0–100 %."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
    ax_a, panels = axes.flat[0], list(axes.flat)[1:]
    models = [m for m in model_order if m in set(algorithm["model"])]
    ioi_edges = edges[edges["task"] == "ioi"]
    drawn = [m for m in model_order if m in set(ioi_edges["model"])]
    if drawn:
        model = drawn[-1]
        e = ioi_edges[ioi_edges["model"] == model]
        step = int(e["step"].max())
        r = roles[(roles["model"] == model) & (roles["task"] == "ioi") & (roles["step"] == step)]
        circuit_graph_panel(ax_a, e[e["step"] == step], r, f"A: {model} IOI circuit, step {step:,}")
    else:
        ax_a.set_title("A: IOI circuit")
        no_data(ax_a, "no model has a valid IOI circuit at any checkpoint\n(IOI not learnt, or not emerged)")
    colours = {m: f"C{i}" for i, m in enumerate(model_order)}
    data = algorithm[algorithm["denominator"] == "all"]
    shown = data[data["value"].notna()]
    for ax, (panel, receivers, label) in zip(panels, ALGORITHM_PANELS):
        for model in models:
            for form, ls in (("paper", "-"), ("direct", "--")):
                f = data[(data["model"] == model) & (data["receivers"] == receivers) & (data["form"] == form)
                         ].sort_values("tokens_seen")
                if f.empty:
                    continue
                ax.plot(f["tokens_seen"], f["value"], ls, color=colours[model], lw=1.2,
                        label=f"{model} ({'paper' if form == 'paper' else 'direct'})")
                formed = f[f["formed"]]
                ax.plot(f["tokens_seen"], f["value"], "o", color=colours[model], mfc="none", ms=4)
                ax.plot(formed["tokens_seen"], formed["value"], "o", color=colours[model], ms=4)
        if len(shown):  # linear: the metrics exist only after the task emerged, late in training
            span = float(shown["tokens_seen"].max() - shown["tokens_seen"].min()) or float(shown["tokens_seen"].max())
            ax.set_xlim(float(shown["tokens_seen"].min()) - 0.05 * span, float(shown["tokens_seen"].max()) + 0.05 * span)
        ax.set_xlabel("tokens seen")
        ax.grid(alpha=0.3)
        ax.set_ylim(-3, 103)
        ax.set_ylabel(label)
        ax.set_title(panel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        rows = data[data["receivers"] == receivers]
        if not rows["value"].notna().any():
            reasons = rows["reason"].dropna().value_counts()
            if rows.empty:
                why = ("no path-patching result: path patching runs at the valid IOI checkpoints of models with\n"
                       "at least 3 layers, and no model has one")
            else:  # the reason recorded with most of the undefined values
                why = "undefined at every checkpoint" + (f": {reasons.index[0]}" if len(reasons) else "")
            no_data(ax, why)
    fig.suptitle("IOI algorithm over training (Tigges et al. 2024, Figure 4): the share of each stage's effect "
                 "carried by its class of heads", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


def similarity_figure(similarity: pd.DataFrame, model_order: list[str], path: Path, dpi: int = 120):
    """``similarity.png``: per task (columns), against tokens seen (linear: valid circuits come late, where the
    checkpoints are evenly spaced), one line per model: top, the edge Jaccard of
    each valid circuit with the previous checkpoint's, over the band of its within-checkpoint noise floor (2.5–97.5th
    percentile of the bootstrap Jaccard with the main circuit), a filled marker where the change is beyond the floor
    (``real_change``); bottom, the weighted Jaccard with the final checkpoint's circuit, solid over all edges
    (design §5), dashed over the circuits' edges (the paper's code)."""
    tasks = _tasks(similarity) if len(similarity) else []
    fig, axes = plt.subplots(2, max(1, len(tasks)), figsize=(4.6 * max(1, len(tasks)), 7), squeeze=False)
    for col, task in enumerate(tasks):
        frame = similarity[similarity["task"] == task]
        top, bottom = axes[0, col], axes[1, col]
        for model in [m for m in model_order if m in set(frame["model"])]:
            f = frame[(frame["model"] == model) & frame["valid"].astype(bool)].sort_values("tokens_seen")
            line, = top.plot(f["tokens_seen"], f["jaccard_prev"], marker="o", ms=3, mfc="none", label=model)
            colour = line.get_color()
            top.fill_between(f["tokens_seen"], f["boot_main_lo"], f["boot_main_hi"], color=colour, alpha=0.15, lw=0)
            real = f["real_change"].fillna(False).astype(bool)
            top.scatter(f.loc[real, "tokens_seen"], f.loc[real, "jaccard_prev"], color=colour, s=18, zorder=3)
            bottom.plot(f["tokens_seen"], f["weighted_jaccard_final_all"], color=colour, label=f"{model}, all edges")
            bottom.plot(f["tokens_seen"], f["weighted_jaccard_final_circuit"], color=colour, ls="--",
                        label=f"{model}, circuit edges")
        for ax in (top, bottom):  # linear: valid circuits exist only late in training, where checkpoints are even
            ax.set_xlabel("tokens seen")
            ax.grid(alpha=0.3)
            ax.set_ylim(-0.02, 1.02)
        top.set_title(f"{TASK_TITLES.get(task, task)}: edge Jaccard with the previous checkpoint\n(band: bootstrap "
                      "noise floor; filled: beyond it)", fontsize=9)
        top.set_ylabel("edge Jaccard")
        bottom.set_title("weighted Jaccard with the final checkpoint\n(solid: all edges; dashed: circuit edges)",
                         fontsize=9)
        bottom.set_ylabel("weighted Jaccard")
        top.legend(title="model", fontsize=7)
        if not frame["valid"].astype(bool).any():
            for ax in (top, bottom):
                no_data(ax, "no model has a valid circuit for this task,\nso there is nothing to compare")
    if not tasks:
        axes[0, 0].set_title("circuit similarity")
        no_data(axes[0, 0], "no similarity rows: the study has no similarity stage results")
        axes[1, 0].set_axis_off()
    fig.tight_layout()
    return _save(fig, path, dpi)


def findings_page(findings: pd.DataFrame, path: Path) -> None:
    """``findings.html``: the findings table (:func:`circuit_stability.tables.findings_table`) for the report."""
    f = findings.copy()
    for c in ("value", "low", "high"):
        f[c] = f[c].map(lambda v: "—" if pd.isna(v) else f"{v:,.3g}")
    f["n"] = f["n"].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    text = ("<h3>Findings</h3><p>The paper's four findings and the noise-floor one, as measured on this study "
            "(tables/findings.parquet; the columns are explained in the caption).</p>"
            + f.to_html(index=False, na_rep="", border=0))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(f"<!DOCTYPE html><html><body>{text}</body></html>\n", encoding="utf-8")


FIGURES = ("figure1_behavior.png", "circuit_size.png", "emergence.png", "faithfulness_curves.png",
           "figure2_components.png", "figure3_top_heads.png", "component_lag.html", "figure4_algorithm.png",
           "similarity.png", "findings.html")


def make_figures(tables: Path, out: Path, model_order: list[str], dpi: int = 120,
                 tokens_axis: str = "log") -> list[Path]:
    """Draw :data:`FIGURES` from ``tables/{behavior,circuits,emergence,faithfulness,components,roles,
    component_emergence,handovers,component_lag,algorithm,circuit_edges}.parquet`` into ``out`` (PNG at ``dpi``
    dots per inch), the tokens-seen axes of Figures 1–3 and the circuit sizes ``log`` or ``linear``
    (:func:`_tokens_axis`; Figure 4 and the similarity figure are linear).

    Raises:
        ValueError: for a ``tokens_axis`` other than ``log`` or ``linear``, before drawing anything.
    """
    if tokens_axis not in TOKENS_AXES:
        raise ValueError(f"tokens axis {tokens_axis!r}; valid: {list(TOKENS_AXES)}")
    circuits = pd.read_parquet(tables / "circuits.parquet")
    audit = tables / "checkpoint_audit.parquet"  # (a study built before the audit has none)
    audit = pd.read_parquet(audit) if audit.is_file() else None
    behavior_figure(pd.read_parquet(tables / "behavior.parquet"), model_order, out / FIGURES[0], dpi, tokens_axis,
                    flagged=audit[audit["action"] == "kept"] if audit is not None else None)
    circuit_size_figure(circuits, model_order, out / FIGURES[1], dpi, tokens_axis)
    emergence_figure(pd.read_parquet(tables / "emergence.parquet"), model_order, out / FIGURES[2], dpi)
    faithfulness_figure(pd.read_parquet(tables / "faithfulness.parquet"), circuits, model_order, out / FIGURES[3],
                        dpi)
    components = pd.read_parquet(tables / "components.parquet")
    component_emergence = pd.read_parquet(tables / "component_emergence.parquet")
    components_figure(components, pd.read_parquet(tables / "roles.parquet"), component_emergence, model_order,
                      out / FIGURES[4], dpi, tokens_axis)
    top_heads_figure(components, component_emergence, model_order, out / FIGURES[5], dpi, tokens_axis=tokens_axis)
    component_lag_page(pd.read_parquet(tables / "component_lag.parquet"),
                       pd.read_parquet(tables / "handovers.parquet"), component_emergence, out / FIGURES[6])
    algorithm_figure(pd.read_parquet(tables / "algorithm.parquet"), pd.read_parquet(tables / "circuit_edges.parquet"),
                     pd.read_parquet(tables / "roles.parquet"), model_order, out / FIGURES[7], dpi)
    similarity_figure(pd.read_parquet(tables / "similarity.parquet"), model_order, out / FIGURES[8], dpi)
    findings_page(pd.read_parquet(tables / "findings.parquet"), out / FIGURES[9])
    return [out / f for f in FIGURES]
