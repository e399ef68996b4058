"""Circuit similarity over checkpoints, its bootstrap noise floor, and the comparison across seeds and sizes (the
similarity issue; design §5 "Similarity" and "Noise floor").

**Similarity** (Tigges et al. 2024 App. C/D; reference.md §6) of two circuits ``C``, ``C'`` (valid circuits only):

- edge Jaccard ``|C ∩ C'| / |C ∪ C'|`` over edges, node Jaccard the same over nodes (:func:`jaccard`);
- weighted Jaccard ``Σ_e min(w_e, w'_e) / Σ_e max(w_e, w'_e)`` (:func:`weighted_jaccard`) with ``w = |score|``
  normalised to sum 1 (:func:`edge_weights`), in two variants, labelled: ``all`` normalises and sums over every
  edge of the graph (design §5), ``circuit`` over each circuit's own edges, 0 elsewhere (the paper's code, which
  reads its in-circuit edge files). The paper's figure labelled "weighted" plots the unweighted edge Jaccard
  smoothed by an EWMA; ours are exactly what their names say.

An empty union gives NaN, never 0 or 1.

**Noise floor** (beyond the paper; Méloux et al. 2025 report bootstrap IOI circuits agreeing at Jaccard 0.67 on GPT-2
small and propose 0.8 as the bar for a stable circuit). ``B`` bootstrap resamples of the ``N`` examples
(multinomial counts, :func:`bootstrap_counts`) re-weight the stored per-example edge scores (no new backward pass:
a resample's score is ``counts @ per_example / N``); for each, the circuit of the main circuit's greedy size is
selected and pruned exactly as the main one (:func:`bootstrap_circuits`); its Jaccard with the main circuit and the
Jaccards between resamples give the within-checkpoint distribution. A change between two checkpoints counts as
**real** only when their edge Jaccard is below the 2.5th percentile of the within-checkpoint Jaccard (resample vs
main circuit) of both (:func:`real_change`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from circuit_stability.circuits import SELECTIONS, prune
from circuit_stability.graph import Graph
from circuit_stability.records import CircuitRecord, ExampleScoresRecord

PERCENTILES = (2.5, 50.0, 97.5)
"""The within-checkpoint distribution is summarised by these percentiles (a 95% interval and the median)."""


def jaccard(a: np.ndarray | set, b: np.ndarray | set) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two sets, or of two bool masks of one shape (e.g. ``[n_writers, n_readers]``).

    Returns:
        A value in [0, 1]; NaN when the union is empty.
    """
    if isinstance(a, (set, frozenset)) or isinstance(b, (set, frozenset)):
        union = len(set(a) | set(b))
        return float("nan") if union == 0 else len(set(a) & set(b)) / union
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return float("nan") if union == 0 else int((a & b).sum()) / union


def weighted_jaccard(w: np.ndarray, v: np.ndarray) -> float:
    """``Σ min(w, v) / Σ max(w, v)`` of two non-negative weight vectors over the same edges (missing = 0).

    Returns:
        A value in [0, 1]; NaN when both are all zero (empty union).

    Raises:
        ValueError: for different shapes or a negative or non-finite weight.
    """
    w, v = np.asarray(w, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if w.shape != v.shape:
        raise ValueError(f"weights of different shapes {w.shape} and {v.shape}")
    if not (np.isfinite(w).all() and np.isfinite(v).all()) or (w < 0).any() or (v < 0).any():
        raise ValueError("weights must be finite and non-negative")
    top = float(np.maximum(w, v).sum())
    return float("nan") if top == 0.0 else float(np.minimum(w, v).sum()) / top


def edge_weights(graph: Graph, scores: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """``w_e = |score_e| / Σ |score|`` over the graph's edges (``among`` None: design §5's "over all edges") or over
    the edges of ``among`` only, 0 elsewhere (the paper's code: in-circuit edges).

    Args:
        scores: ``[n_writers, n_readers]`` (NaN off the edge mask).
        among: ``[n_writers, n_readers]`` bool circuit mask, or None.

    Returns:
        ``[n_edges]`` float64 in edge order (:attr:`Graph.edge_index`), summing to 1 (all zeros when every
        |score| in the sum is 0).
    """
    src, dst = graph.edge_index
    w = np.abs(scores[src, dst].astype(np.float64))
    if among is not None:
        w = np.where(among[src, dst], w, 0.0)
    total = w.sum()
    return w / total if total > 0 else w


def circuit_mask(graph: Graph, circuit: CircuitRecord) -> np.ndarray:
    """The ``[n_writers, n_readers]`` bool mask of a circuit record's (pruned) edges."""
    mask = np.zeros((graph.n_writers, graph.n_readers), dtype=bool)
    if circuit.edges:
        src, dst = zip(*(e.split("->") for e in circuit.edges))
        s, d = graph.edge_ids(list(src), list(dst), f"circuit of {circuit.model} {circuit.task} step {circuit.step}")
        mask[s, d] = True
    return mask


def bootstrap_counts(n_examples: int, resamples: int, seed: int) -> np.ndarray:
    """Multinomial bootstrap counts: each row draws ``n_examples`` examples with replacement.

    Returns:
        ``[resamples, n_examples]`` int64, rows summing to ``n_examples``; the same for the same arguments.

    Raises:
        ValueError: for ``n_examples < 2`` (every resample would hold one distinct example, so there is no
            sampling variation to measure) or ``resamples < 2`` (no interval).
    """
    if n_examples < 2:
        raise ValueError(f"a bootstrap needs at least 2 examples; got {n_examples}: every resample would hold the "
                         "same single example")
    if resamples < 2:
        raise ValueError(f"a bootstrap needs at least 2 resamples for an interval; got {resamples} (50 for a 95% "
                         "interval)")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_examples, np.full(n_examples, 1.0 / n_examples), size=resamples).astype(np.int64)


def bootstrap_circuits(graph: Graph, examples: ExampleScoresRecord, circuit: CircuitRecord,
                       counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The circuit each bootstrap resample selects: scores re-weighted by the resample's counts
    (:meth:`ExampleScoresRecord.resampled`), then the main circuit's selection rule at its greedy size
    (``circuit.size``), pruned when the main one was.

    Edges without stored per-example scores enter with score 0. That is exact whenever the resampled circuit's
    smallest |score| (before pruning) exceeds the record's ``unstored_bound`` (no unstored edge could have been
    selected instead); each resample where it does not is flagged.

    Args:
        counts: ``[B, n_examples]`` bootstrap counts (:func:`bootstrap_counts`).

    Returns:
        ``(masks, beyond)``: ``[B, n_writers, n_readers]`` bool circuits and ``[B]`` bool, True where an unstored edge
        might have entered the circuit (then the stored fraction was too small).

    Raises:
        ValueError: if the circuit is not valid (nothing to resample), or the records disagree (graph, examples).
    """
    if not circuit.valid or circuit.size == 0:
        raise ValueError(f"circuit of {circuit.model} {circuit.task} step {circuit.step} is not valid: no bootstrap")
    if (examples.graph.n_layers, examples.graph.n_heads) != (graph.n_layers, graph.n_heads):
        raise ValueError(f"per-example scores of {examples.graph} do not belong to {graph}")
    if counts.ndim != 2 or counts.shape[1] != examples.examples.shape[0]:
        raise ValueError(f"counts must be [B, {examples.examples.shape[0]}]; got {counts.shape}")
    if circuit.selection not in SELECTIONS:
        raise ValueError(f"unknown selection {circuit.selection!r}; valid: {sorted(SELECTIONS)}")
    resampled = examples.resampled(counts)  # [B, n_stored]
    select = SELECTIONS[circuit.selection]
    bound = float(examples.meta.get("unstored_bound", 0.0))
    complete = int(examples.meta.get("n_stored", len(examples.src))) >= int(examples.meta.get("total_edges", 0))
    dense = np.where(graph.edge_mask, 0.0, np.nan).astype(np.float32)
    masks = np.zeros((len(counts), graph.n_writers, graph.n_readers), dtype=bool)
    beyond = np.zeros(len(counts), dtype=bool)
    for b, row in enumerate(resampled):
        dense[examples.src, examples.dst] = row
        chosen = select(graph, dense, circuit.size)
        if not complete:
            beyond[b] = bool(np.abs(dense[chosen]).min() <= bound) if chosen.any() else False
        masks[b] = prune(graph, chosen) if circuit.pruned else chosen
    return masks, beyond


def pairwise_jaccard(masks: np.ndarray) -> np.ndarray:
    """Edge Jaccard of every pair of ``masks`` (``[B, ...]`` bool), as the ``B(B−1)/2`` values of the upper triangle
    (NaN where a pair's union is empty)."""
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    inter = flat @ flat.T
    sizes = flat.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    iu = np.triu_indices(len(masks), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union[iu] > 0, inter[iu] / np.where(union[iu] > 0, union[iu], 1), np.nan)
    return out.astype(np.float64)


def summarise(values: np.ndarray) -> dict[str, float]:
    """``{"lo", "median", "hi"}``: the 2.5th, 50th and 97.5th percentiles (:data:`PERCENTILES`) of the finite
    values (NaN for none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"lo": float("nan"), "median": float("nan"), "hi": float("nan")}
    lo, med, hi = np.percentile(v, PERCENTILES)
    return {"lo": float(lo), "median": float(med), "hi": float(hi)}


def real_change(jaccard_between: float, floor_a: float, floor_b: float) -> bool | None:
    """Whether a change between two checkpoints exceeds the noise floor: their edge Jaccard is below the 2.5th
    percentile of the within-checkpoint Jaccard of both (None when any of the three is NaN)."""
    vals = (jaccard_between, floor_a, floor_b)
    if not all(np.isfinite(v) for v in vals):
        return None
    return bool(jaccard_between < min(floor_a, floor_b))


SIMILARITY_COLUMNS = [
    "model", "task", "step", "tokens_seen", "valid", "n_edges", "n_nodes",
    "prev_step", "jaccard_prev", "node_jaccard_prev", "weighted_jaccard_prev_all", "weighted_jaccard_prev_circuit",
    "final_step", "jaccard_final", "node_jaccard_final", "weighted_jaccard_final_all",
    "weighted_jaccard_final_circuit",
    "resamples", "boot_main_lo", "boot_main_median", "boot_main_hi", "boot_pair_lo", "boot_pair_median",
    "boot_pair_hi", "boot_size_median", "boot_beyond_stored", "boot_faithfulness_n", "boot_f_paper_min",
    "boot_f_paper_median", "reason",
]
"""Columns of the per-model similarity file and table (one row per (model, task, scored step)); see
:func:`model_similarity`."""


def model_similarity(graph: Graph, circuits: dict[str, list[CircuitRecord]], scores: dict[tuple[str, int], np.ndarray],
                     examples: Callable[[str, int], ExampleScoresRecord] | None, resamples: int, seed: int,
                     faithfulness: Callable[[str, int, np.ndarray], np.ndarray] | None = None,
                     faithfulness_resamples: int = 0):
    """Similarity and noise floor of one model's circuits, task by task, over its scored checkpoints.

    Args:
        graph: the model's graph.
        circuits: task -> circuit records in step order (every scored step).
        scores: ``(task, step)`` -> ``[n_writers, n_readers]`` edge scores (the scores parquet).
        examples: ``(task, step)`` -> per-example scores, read when needed (None with ``resamples = 0``).
        resamples: B (0: no bootstrap); seed: of :func:`bootstrap_counts`.
        faithfulness: ``(task, step, masks [K, W, R]) -> [K]`` f_paper of circuits, called for the first
            ``faithfulness_resamples`` resampled circuits at each task's last valid checkpoint (forward passes).

    Returns:
        A frame with :data:`SIMILARITY_COLUMNS`: sizes; ``*_prev`` against the previous scored step, ``*_final``
        against the last scored step (NaN unless both circuits are valid); ``boot_main_*`` the 2.5/50/97.5th
        percentiles of the resampled circuits' edge Jaccard with the main circuit, ``boot_pair_*`` of the Jaccard
        between resamples; ``boot_beyond_stored`` the resamples an unstored edge might have entered
        (:func:`bootstrap_circuits`); ``reason`` why values are NaN.
    """
    import pandas as pd

    rows = []
    for task, records in sorted(circuits.items()):
        masks = {c.step: circuit_mask(graph, c) for c in records}
        weights_all = {c.step: edge_weights(graph, scores[(task, c.step)]) for c in records if c.valid}
        weights_circ = {c.step: edge_weights(graph, scores[(task, c.step)], masks[c.step]) for c in records if c.valid}
        final = records[-1]
        last_valid = max((c.step for c in records if c.valid), default=None)
        for i, c in enumerate(records):
            prev = records[i - 1] if i else None
            row = {"model": c.model, "task": task, "step": c.step, "tokens_seen": c.tokens_seen, "valid": c.valid,
                   "n_edges": c.n_edges if c.valid else np.nan, "n_nodes": len(c.nodes) if c.valid else np.nan,
                   "prev_step": prev.step if prev else np.nan, "final_step": final.step, "resamples": 0,
                   "boot_beyond_stored": 0, "boot_faithfulness_n": 0, "reason": None}
            for key, other in (("prev", prev), ("final", final)):
                both = c.valid and other is not None and other.valid
                row[f"jaccard_{key}"] = jaccard(masks[c.step], masks[other.step]) if both else np.nan
                row[f"node_jaccard_{key}"] = jaccard(set(c.nodes), set(other.nodes)) if both else np.nan
                row[f"weighted_jaccard_{key}_all"] = (weighted_jaccard(weights_all[c.step], weights_all[other.step])
                                                      if both else np.nan)
                row[f"weighted_jaccard_{key}_circuit"] = (
                    weighted_jaccard(weights_circ[c.step], weights_circ[other.step]) if both else np.nan)
            for k in ("main", "pair"):
                row.update({f"boot_{k}_{q}": np.nan for q in ("lo", "median", "hi")})
            row.update(boot_size_median=np.nan, boot_f_paper_min=np.nan, boot_f_paper_median=np.nan)
            if not c.valid:
                row["reason"] = f"circuit not valid: {c.invalid_reason}"
            elif resamples:
                ex = examples(task, c.step)
                counts = bootstrap_counts(ex.examples.shape[0], resamples, seed)
                boot, beyond = bootstrap_circuits(graph, ex, c, counts)
                with_main = np.array([jaccard(m, masks[c.step]) for m in boot])
                row.update({f"boot_main_{q}": v for q, v in summarise(with_main).items()})
                row.update({f"boot_pair_{q}": v for q, v in summarise(pairwise_jaccard(boot)).items()})
                row.update(resamples=resamples, boot_beyond_stored=int(beyond.sum()),
                           boot_size_median=float(np.median(boot.reshape(len(boot), -1).sum(1))))
                if faithfulness is not None and faithfulness_resamples and c.step == last_valid:
                    f = np.asarray(faithfulness(task, c.step, boot[:faithfulness_resamples]), dtype=np.float64)
                    row.update(boot_faithfulness_n=len(f), boot_f_paper_min=float(np.nanmin(f)),
                               boot_f_paper_median=float(np.nanmedian(f)))
            else:
                row["reason"] = "no bootstrap (similarity.resamples: 0)"
            rows.append(row)
    return pd.DataFrame(rows, columns=SIMILARITY_COLUMNS)
