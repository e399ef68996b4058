"""Circuits from edge scores: greedy selection, pruning, faithfulness and the minimal-circuit search (design §5).

- **Greedy selection** (hannamw/EAP-IG ``Graph.apply_greedy``, reference.md §3.3): start from ``logits``; keep a
  max-heap by |score| of the edges whose reader's node is in the circuit; pop ``n`` times, adding the edge and,
  when its writer joins, that writer's incoming edges. Ties break by edge index (row-major order of
  :attr:`Graph.edge_mask`), so the result is deterministic.
- **Pruning** (``prune_dead_nodes``): repeatedly drop nodes without in-circuit outgoing edges (other than
  ``logits``) and non-input nodes without in-circuit incoming edges, with their edges. Pruning never changes the
  circuit's metric: a node whose every input is corrupted outputs exactly its corrupted activation.
- **Faithfulness** of circuit C (every edge outside C carries corrupted activations; design §5):
  f_paper = m(C)/m(M) (Tigges et al. 2024 §2.3) and f_norm = (m(C) − m(∅))/(m(M) − m(∅)) (MIB, Mueller et al. 2025).
- **Minimal circuit**: the smallest greedy size n in [1, N] with f_paper ≥ threshold, where
  N = min(E, max(⌊max_fraction·E⌋, min_search_edges)) (:func:`search_limit`), found by a log-spaced grid
  followed by binary search inside the first bracket that crosses (faithfulness is not monotone in n);
  ``reached = False`` when no evaluated size qualifies — never a silent fallback.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from circuit_stability.attribution import Prompts, patched_metric
from circuit_stability.graph import Graph
from circuit_stability.progress import Progress


def _reader_groups(graph: Graph) -> tuple[dict[int, list[int]], list[int | None]]:
    """Map each writer to the reader columns of the same node, and each reader to its node's writer."""
    node_readers: dict[int, list[int]] = {}
    reader_writer: list[int | None] = [None] * graph.n_readers
    for r, name in enumerate(graph.reader_names):
        node = name.split("<")[0]
        w = graph.writer_names.index(node) if node != "logits" else None
        reader_writer[r] = w
        if w is not None:
            node_readers.setdefault(w, []).append(r)
    return node_readers, reader_writer


def greedy_circuit(graph: Graph, scores: np.ndarray, n_edges: int, absolute: bool = True) -> np.ndarray:
    """The ``n_edges`` edges chosen greedily from the logits by |score| (or by −score when not ``absolute``).

    Args:
        graph: the model graph.
        scores: ``[n_writers, n_readers]`` edge scores (NaN off the edge mask). Not modified.
        n_edges: edges to add (clipped to the number of reachable edges).
        absolute: rank by |score| (the paper) or by −score (edges whose corruption lowers the metric most).

    Returns:
        ``[n_writers, n_readers]`` bool mask of the chosen edges (before pruning).

    Raises:
        ValueError: if ``scores`` has the wrong shape, is all NaN on the edges, or ``n_edges < 0``.
    """
    if scores.shape != (graph.n_writers, graph.n_readers):
        raise ValueError(f"scores must be [{graph.n_writers}, {graph.n_readers}]; got {scores.shape}")
    if n_edges < 0:
        raise ValueError(f"n_edges must be >= 0; got {n_edges}")
    edge_vals = scores[graph.edge_mask]
    if edge_vals.size == 0 or np.all(np.isnan(edge_vals)):
        raise ValueError("edge scores are empty or all NaN: no circuit can be chosen from them")
    key = -np.abs(scores) if absolute else scores  # heap pops the smallest key
    key = np.where(np.isnan(key), np.inf, key)
    n_up = graph.n_upstream
    node_readers, _ = _reader_groups(graph)
    chosen = np.zeros_like(graph.edge_mask)
    in_circuit = {None}  # logits' "writer"
    heap: list[tuple[float, int, int, int]] = []

    def push_incoming(readers: list[int]) -> None:
        for r in readers:
            for u in range(int(n_up[r])):
                heapq.heappush(heap, (float(key[u, r]), u * graph.n_readers + r, u, r))

    push_incoming([graph.logits_index])
    added = 0
    while heap and added < n_edges:
        _, _, u, r = heapq.heappop(heap)
        chosen[u, r] = True
        added += 1
        if u not in in_circuit:
            in_circuit.add(u)
            push_incoming(node_readers.get(u, []))
    return chosen


def top_n_circuit(graph: Graph, scores: np.ndarray, n_edges: int, absolute: bool = True) -> np.ndarray:
    """The ``n_edges`` edges with the largest |score| (``absolute``) or the most negative score (signed: in our
    sign convention a negative score means the edge supports the task), ties broken by edge index.

    Returns:
        ``[n_writers, n_readers]`` bool mask (before pruning). ``scores`` is not modified.

    Raises:
        ValueError: for scores of the wrong shape or all NaN, or ``n_edges < 0``.
    """
    if scores.shape != (graph.n_writers, graph.n_readers):
        raise ValueError(f"scores must be [{graph.n_writers}, {graph.n_readers}]; got {scores.shape}")
    if n_edges < 0:
        raise ValueError(f"n_edges must be >= 0; got {n_edges}")
    src, dst = graph.edge_index
    vals = scores[src, dst].astype(np.float64)
    if vals.size == 0 or np.all(np.isnan(vals)):
        raise ValueError("edge scores are empty or all NaN: no circuit can be chosen from them")
    key = -np.abs(vals) if absolute else vals
    order = np.lexsort((np.arange(len(vals)), np.where(np.isnan(key), np.inf, key)))[:n_edges]
    mask = np.zeros_like(graph.edge_mask)
    mask[src[order], dst[order]] = True
    return mask


SELECTIONS = {
    "greedy": lambda g, s, n: greedy_circuit(g, s, n, absolute=True),
    "topn-abs": lambda g, s, n: top_n_circuit(g, s, n, absolute=True),
    "topn-signed": lambda g, s, n: top_n_circuit(g, s, n, absolute=False),
}


def select_circuit(graph: Graph, scores: np.ndarray, n_edges: int, selection: str = "greedy") -> np.ndarray:
    """Choose ``n_edges`` edges by ``selection`` (one of :data:`SELECTIONS`) and prune dead nodes (a copy).

    Raises:
        ValueError: naming the valid selections, for an unknown one.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid: {sorted(SELECTIONS)}")
    return prune(graph, SELECTIONS[selection](graph, scores, n_edges))


def prune(graph: Graph, edges: np.ndarray) -> np.ndarray:
    """Drop dead nodes (reference.md §3.3 ``prune_dead_nodes``) from a copy of ``edges``.

    Args:
        edges: ``[n_writers, n_readers]`` bool circuit mask. Not modified.

    Returns:
        The pruned mask: every remaining edge lies on a path from ``input`` to ``logits``.
    """
    mask = edges.copy() & graph.edge_mask
    node_readers, _ = _reader_groups(graph)
    while True:
        changed = False
        has_child = mask.any(axis=1)  # writer has an outgoing edge
        for w in range(1, graph.n_writers):
            rs = node_readers[w]
            if not has_child[w] and mask[:, rs].any():
                mask[:, rs] = False
                changed = True
        incoming = mask.any(axis=0)  # per reader
        for w in range(1, graph.n_writers):
            if mask[w].any() and not incoming[node_readers[w]].any():
                mask[w] = False
                changed = True
        if not changed:
            break
    return mask


def circuit_nodes(graph: Graph, mask: np.ndarray) -> list[str]:
    """Names of the nodes touched by the edges of ``mask`` (writers and readers' nodes), in graph order."""
    nodes = set(np.array(graph.writer_names)[mask.any(axis=1)])
    nodes |= {graph.reader_node(r) for r in np.nonzero(mask.any(axis=0))[0]}
    order = graph.writer_names + ["logits"]
    return [n for n in order if n in nodes]


def faithfulness(metric_circuit: float, metric_model: float, metric_empty: float) -> dict[str, float]:
    """f_paper = m(C)/m(M) (Tigges et al. 2024) and f_norm = (m(C) − m(∅))/(m(M) − m(∅)) (MIB).

    Returns NaN for a ratio whose denominator is 0.
    """
    paper = metric_circuit / metric_model if metric_model != 0 else math.nan
    denom = metric_model - metric_empty
    norm = (metric_circuit - metric_empty) / denom if denom != 0 else math.nan
    return {"paper": float(paper), "normalized": float(norm)}


@dataclass
class CircuitSearch:
    """Result of :func:`minimal_circuit`.

    Attributes:
        size: greedy size n of the chosen circuit (the minimal qualifying one, or the largest evaluated if none).
        edges: ``[n_writers, n_readers]`` bool mask of the chosen circuit after pruning.
        reached: whether f_paper ≥ threshold at ``size``.
        metric_model, metric_empty, metric_circuit: m(M), m(∅), m(C).
        curve: ``{n: {"paper", "normalized", "n_edges"}}`` for every greedy size evaluated.
    """

    size: int
    edges: np.ndarray
    reached: bool
    metric_model: float
    metric_empty: float
    metric_circuit: float
    curve: dict[int, dict[str, float]] = field(default_factory=dict)


def search_minimal_size(faithfulness_of, max_n: int, threshold: float = 0.8,
                        grid_points: int = 8) -> tuple[int, bool, dict[int, float]]:
    """Smallest size n in [1, max_n] with f(n) ≥ threshold, robust to non-monotone f (design §5).

    Evaluates ``grid_points`` log-spaced sizes in one call, takes the first grid size that reaches the
    threshold, and binary-searches the bracket (previous grid size, that size]; f is assumed monotone only
    inside that bracket. At most ``grid_points + ⌈log2(bracket)⌉`` sizes are evaluated.

    Args:
        faithfulness_of: ``list[int] -> list[float]``: f_paper of each requested size (called with the whole
            grid once, then with one size per binary-search step).
        max_n: largest size allowed (≥ 1).

    Returns:
        ``(size, reached, evaluated)``: the minimal qualifying size (or ``max_n``'s grid end when none
        qualifies, with ``reached = False``) and every evaluated ``{size: f}``.
    """
    max_n = max(1, int(max_n))
    grid = sorted({int(round(x)) for x in np.geomspace(1, max_n, num=max(1, min(grid_points, max_n)))})
    evaluated = dict(zip(grid, faithfulness_of(grid)))
    first = next((n for n in grid if evaluated[n] >= threshold), None)
    if first is None:
        return grid[-1], False, evaluated
    k = grid.index(first)
    lo, hi = (grid[k - 1] + 1 if k > 0 else 1), first
    while lo < hi:
        mid = (lo + hi) // 2
        evaluated[mid] = faithfulness_of([mid])[0]
        if evaluated[mid] >= threshold:
            hi = mid
        else:
            lo = mid + 1
    return hi, True, evaluated


def search_limit(n_edges: int, max_fraction: float = 0.05, min_search_edges: int = 1) -> int:
    """Largest circuit size the minimal-circuit search tries: min(E, max(⌊max_fraction · E⌋, min_search_edges, 1)).

    ``max_fraction`` = 0.05 is the 5% bound of the search (design §5). ``min_search_edges`` is a floor for tiny
    graphs: 5% of a 2-layer, 4-head model's 102 edges is 5 edges, fewer than a circuit that routes a feature
    through several heads of both layers needs; for Pythia-70m (32,491 edges) the floor has no effect.

    Raises:
        ValueError: if ``max_fraction`` is not in (0, 1] or ``min_search_edges`` < 1.
    """
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1]; got {max_fraction}")
    if min_search_edges < 1:
        raise ValueError(f"min_search_edges must be >= 1; got {min_search_edges}")
    return max(1, min(int(n_edges), max(int(max_fraction * n_edges), int(min_search_edges))))


def check_search(threshold: float, max_fraction: float, min_search_edges: int = 1) -> None:
    """Validate the minimal-circuit search's arguments before any model is loaded.

    Raises:
        ValueError: if ``threshold`` is not > 0, ``max_fraction`` not in (0, 1] or ``min_search_edges`` < 1.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0; got {threshold}")
    search_limit(1, max_fraction, min_search_edges)


def minimal_circuit(bridge, graph: Graph, scores: np.ndarray, prompts: Prompts, threshold: float = 0.8,
                    max_fraction: float = 0.05, grid_points: int = 8, batch_size: int = 70,
                    max_bytes: int = 2 << 30, selection: str = "greedy",
                    min_search_edges: int = 1) -> CircuitSearch:
    """Smallest greedy circuit with f_paper ≥ ``threshold`` among sizes 1 … :func:`search_limit` (design §5).

    m(M), m(∅) and the log-spaced grid of :func:`search_minimal_size` are evaluated in one batched forward
    (edge masks stacked along the batch; the corrupted activations computed once per batch); every evaluated
    size is recorded in ``curve``.

    Raises:
        ValueError: for scores that are empty or all NaN, ``threshold`` not in (0, ∞), ``max_fraction`` not in
            (0, 1] or ``min_search_edges`` < 1.
    """
    check_search(threshold, max_fraction, min_search_edges)
    max_n = search_limit(graph.n_edges, max_fraction, min_search_edges)
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid: {sorted(SELECTIONS)}")
    edge_vals = scores[graph.edge_mask]
    if edge_vals.size == 0 or np.all(np.isnan(edge_vals)):
        raise ValueError("edge scores are empty or all NaN: no circuit can be chosen from them")
    masks: dict[int, np.ndarray] = {}

    def circuit(n: int) -> np.ndarray:
        if n not in masks:
            masks[n] = select_circuit(graph, scores, n, selection)
        return masks[n]

    progress = Progress(f"minimal-circuit search over 1..{max_n} edges", None, "circuit sizes evaluated")

    def evaluate(extra: list[np.ndarray]) -> list[float]:
        keep = torch.from_numpy(np.stack(extra))
        values = patched_metric(bridge, graph, prompts, keep, batch_size, max_bytes).tolist()
        progress.update(len(extra))
        return values

    base: dict[str, float] = {}
    metric_of: dict[int, float] = {}

    def faithfulness_of(sizes: list[int]) -> list[float]:
        extra = [graph.edge_mask, np.zeros_like(graph.edge_mask)] if not base else []
        values = evaluate(extra + [circuit(n) for n in sizes])
        if not base:
            base["model"], base["empty"] = values[0], values[1]
            values = values[2:]
        metric_of.update(zip(sizes, values))
        return [faithfulness(m, base["model"], base["empty"])["paper"] for m in values]

    size, reached, evaluated = search_minimal_size(faithfulness_of, max_n, threshold, grid_points)
    progress.close()
    curve = {n: {**faithfulness(metric_of[n], base["model"], base["empty"]), "n_edges": int(circuit(n).sum()),
                 "metric": metric_of[n]} for n in sorted(evaluated)}
    return CircuitSearch(size, circuit(size), reached, base["model"], base["empty"], metric_of[size], curve)


MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # Mueller et al. 2025 (MIB)


def area_under(fractions: list[float], values: list[float]) -> float:
    """Trapezoidal area under ``values`` against ``fractions`` (x in [0, 1], sorted ascending)."""
    x, y = np.asarray(fractions, dtype=float), np.asarray(values, dtype=float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def faithfulness_summaries(bridge, graph: Graph, scores: np.ndarray, prompts: Prompts,
                           fractions: tuple[float, ...] = MIB_FRACTIONS, batch_size: int = 70,
                           max_bytes: int = 2 << 30, selection: str = "greedy") -> dict:
    """MIB's summaries of the faithfulness curve of greedy circuits (Mueller et al. 2025, §3):
    CPR = ∫ f_norm d(fraction) and CMD = ∫ |1 − f_norm| d(fraction), trapezoids over ``fractions`` of the edges.

    All circuit sizes, m(M) and m(∅) are evaluated in one batched call of :func:`patched_metric`.

    Returns:
        ``{"fractions": {fraction: {"n": size, "paper": f, "normalized": f}}, "cpr": float, "cmd": float}``.
    """
    sizes = [max(1, int(round(f * graph.n_edges))) for f in fractions]
    masks = [graph.edge_mask, np.zeros_like(graph.edge_mask)]
    masks += [graph.edge_mask if n >= graph.n_edges else select_circuit(graph, scores, n, selection) for n in sizes]
    values = patched_metric(bridge, graph, prompts, torch.from_numpy(np.stack(masks)), batch_size, max_bytes).tolist()
    m_model, m_empty = values[0], values[1]
    table = {str(f): {"n": n, **faithfulness(m, m_model, m_empty)} for f, n, m in zip(fractions, sizes, values[2:])}
    norm = [table[str(f)]["normalized"] for f in fractions]
    return {"fractions": table, "cpr": area_under(list(fractions), norm),
            "cmd": area_under(list(fractions), [abs(1 - v) for v in norm])}
