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
- **Validity** (:func:`circuit_validity`): a circuit is valid only where the model performs the task: m(M) > 0,
  the task has emerged (m(M) ≥ half the last checkpoint's metric, the emergence table's onset rule) and
  m(M) − m(∅) > ε·|m(M)|; before a task is learnt f_paper divides by noise. ``reached`` is never true for an
  invalid circuit, and every later stage reads valid circuits only.
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
from circuit_stability.records import CircuitRecord, ScoresRecord


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
        ValueError: if ``scores`` has the wrong shape or a NaN or infinite edge score, or ``n_edges < 0``.
    """
    graph.check_scores(scores)
    if n_edges < 0:
        raise ValueError(f"n_edges must be >= 0; got {n_edges}")
    key = -np.abs(scores) if absolute else scores  # heap pops the smallest key
    key = np.where(np.isnan(key), np.inf, key)
    n_up = graph.n_upstream
    chosen = np.zeros_like(graph.edge_mask)
    in_circuit = {None}  # logits' "writer"
    heap: list[tuple[float, int, int, int]] = []

    def push_incoming(readers) -> None:
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
            push_incoming(graph.writer_readers[u])
    return chosen


def top_n_circuit(graph: Graph, scores: np.ndarray, n_edges: int, absolute: bool = True) -> np.ndarray:
    """The ``n_edges`` edges with the largest |score| (``absolute``) or the most negative score (signed: in our
    sign convention a negative score means the edge supports the task), ties broken by edge index.

    Returns:
        ``[n_writers, n_readers]`` bool mask (before pruning). ``scores`` is not modified.

    Raises:
        ValueError: for scores of the wrong shape or with a NaN or infinite edge score, or ``n_edges < 0``.
    """
    graph.check_scores(scores)
    if n_edges < 0:
        raise ValueError(f"n_edges must be >= 0; got {n_edges}")
    src, dst = graph.edge_index
    vals = scores[src, dst].astype(np.float64)
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
    node_readers, owned = graph.writer_readers, graph.owner_mask
    has_owner = owned.any(axis=0)  # every reader but the logits
    while True:
        changed = False
        has_child = mask.any(axis=1)  # writer has an outgoing edge
        # a reader none of whose nodes has an outgoing edge (a shared key/value input: none of its group's heads)
        dead = has_owner & ~(owned & has_child[:, None]).any(axis=0) & mask.any(axis=0)
        if dead.any():
            mask[:, dead] = False
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
    has_child = mask.any(axis=1)
    nodes = set(np.array(graph.writer_names)[has_child])
    for r in np.nonzero(mask.any(axis=0))[0]:  # a shared key/value input counts for its group's live heads
        nodes.update(graph.reader_nodes(int(r), has_child))
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


def circuit_validity(metric_model: float, metric_empty: float, metric_final: float, margin: float,
                     emergence_fraction: float, not_learnt: str | None = None,
                     final_not_learnt: str | None = None) -> tuple[bool, str | None]:
    """Whether a circuit found at this checkpoint can mean anything: the model must perform the task.

    f_paper = m(C)/m(M) rewards a circuit for keeping m(M). When m(M) ≤ 0 a *worse* circuit scores higher;
    before a task is learnt m(M) is noise-sized (an untrained model's Gendered-Pronoun logit difference is
    0.005 with m(∅) = −0.006), and a single edge already gives f ≈ 1. So a circuit is valid only if

    1. the task is learnt at the study's last checkpoint and at this one (:class:`learnt.LearntCriterion`:
       accuracy above chance by a binomial test, metric above its floor; the callers pass its reasons, None when
       learnt), so that the reference of rule 3 is itself a learnt task;
    2. m(M) > 0;
    3. the task has emerged: m(M) ≥ ``emergence_fraction`` × m_final, the metric at the study's last
       checkpoint (the onset rule of the emergence table, Tigges et al. 2024 §3.1 compare such onsets);
    4. corrupting every edge removes more than ``margin`` of it: m(M) − m(∅) > ε·|m(M)| (design §4).

    Args:
        metric_model: m(M), the model's task metric at this checkpoint (logit or probability difference).
        metric_empty: m(∅), the metric with every edge corrupted (the corrupted run).
        metric_final: m(M) at the last checkpoint of the study (from its behaviour record).
        margin: ε ≥ 0.
        emergence_fraction: in (0, 1].
        not_learnt: :meth:`learnt.LearntCriterion.reason` at this checkpoint (None: learnt).
        final_not_learnt: the same at the study's last checkpoint.

    Returns:
        ``(valid, reason)``: ``reason`` is None when valid, else a sentence with the numbers.

    Raises:
        ValueError: if ``margin`` < 0 or ``emergence_fraction`` is not in (0, 1].
    """
    if margin < 0:
        raise ValueError(f"validity margin must be >= 0; got {margin}")
    if not 0 < emergence_fraction <= 1:
        raise ValueError(f"emergence fraction must be in (0, 1]; got {emergence_fraction}")
    if not all(math.isfinite(v) for v in (metric_model, metric_empty, metric_final)):
        return False, (f"m(M) = {metric_model}, m(empty) = {metric_empty} or the final metric {metric_final} "
                       "is not finite")
    if final_not_learnt is not None:
        return False, f"the task is never learnt: at the last checkpoint it is {final_not_learnt}"
    if metric_final <= 0:
        return False, f"the task is never learnt: the last checkpoint's metric is {metric_final:.4g} <= 0"
    if not_learnt is not None:
        return False, f"the task is {not_learnt}"
    if metric_model <= 0:
        return False, f"m(M) = {metric_model:.4g} <= 0: the model does not perform the task"
    if metric_model < emergence_fraction * metric_final:
        return False, (f"the task has not emerged: m(M) = {metric_model:.4g} < {emergence_fraction:g} x the last "
                       f"checkpoint's {metric_final:.4g}")
    gap = metric_model - metric_empty
    if gap <= margin * abs(metric_model):
        return False, (f"m(M) - m(empty) = {metric_model:.4g} - {metric_empty:.4g} = {gap:.4g} <= "
                       f"{margin:g} x |m(M)| = {margin * abs(metric_model):.4g}: the corrupted run keeps most of "
                       "the metric, so faithfulness cannot tell circuits apart")
    return True, None


@dataclass(frozen=True)
class SearchSettings:
    """Settings of the minimal-circuit search and the validity rule (config section ``circuits``; the schema
    holds their defaults).

    Attributes:
        threshold: f_paper a circuit must reach (in (0, 1]; the paper's 0.8).
        max_fraction: largest size searched, as a fraction of the edges (in (0, 1]; design §5: 0.05).
        min_search_edges: floor on the largest size searched (≥ 1), see :func:`search_limit`.
        grid_points: log-spaced sizes of the first pass (≥ 2).
        selection: one of :data:`SELECTIONS`.
        validity_margin: ε of :func:`circuit_validity` (≥ 0).
        emergence_fraction: the onset rule of :func:`circuit_validity` (in (0, 1]).

    Raises:
        ValueError: naming the bad value and what is valid, on construction (before any model is loaded).
    """

    threshold: float
    max_fraction: float
    min_search_edges: int
    grid_points: int
    selection: str
    validity_margin: float
    emergence_fraction: float

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1]; got {self.threshold}")
        search_limit(1, self.max_fraction, self.min_search_edges)
        if self.grid_points < 2:
            raise ValueError(f"grid_points must be >= 2; got {self.grid_points}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; valid: {sorted(SELECTIONS)}")
        circuit_validity(1.0, 0.0, 1.0, self.validity_margin, self.emergence_fraction)


@dataclass
class CircuitSearch:
    """Result of :func:`minimal_circuit`.

    Attributes:
        size: greedy size n of the chosen circuit (the minimal qualifying one, or the largest evaluated if none; 0 at
            an invalid checkpoint, which is not searched).
        edges: ``[n_writers, n_readers]`` bool mask of the chosen circuit after pruning.
        reached: whether f_paper ≥ threshold at ``size`` and the circuit is valid.
        valid, invalid_reason: :func:`circuit_validity` of m(M) and m(∅).
        metric_model, metric_empty, metric_circuit: m(M), m(∅), m(C).
        curve: ``{n: {"paper", "normalized", "n_edges", "metric"}}`` for every greedy size evaluated.
    """

    size: int
    edges: np.ndarray
    reached: bool
    valid: bool
    invalid_reason: str | None
    metric_model: float
    metric_empty: float
    metric_circuit: float
    curve: dict[int, dict[str, float]] = field(default_factory=dict)


def search_minimal_size(faithfulness_of, max_n: int, threshold: float,
                        grid_points: int) -> tuple[int, bool, dict[int, float]]:
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


def search_limit(n_edges: int, max_fraction: float, min_search_edges: int) -> int:
    """Largest circuit size the minimal-circuit search tries: min(E, max(⌊max_fraction · E⌋, min_search_edges, 1)).

    ``max_fraction`` = 0.05 is the 5% bound of the search (design §5). ``min_search_edges`` is a floor for tiny
    graphs: 5% of a 2-layer, 4-head model's 102 edges is 5 edges, fewer than a circuit that routes a feature
    through several heads of both layers needs; for pythia-70m (3,580 edges: a limit of 179) a floor of 20 has no
    effect.

    Raises:
        ValueError: if ``max_fraction`` is not in (0, 1] or ``min_search_edges`` < 1.
    """
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1]; got {max_fraction}")
    if min_search_edges < 1:
        raise ValueError(f"min_search_edges must be >= 1; got {min_search_edges}")
    return max(1, min(int(n_edges), max(int(max_fraction * n_edges), int(min_search_edges))))


def minimal_circuit(bridge, graph: Graph, scores: np.ndarray, prompts: Prompts, search: SearchSettings,
                    batch_size: int, metric_final: float | None = None, max_bytes: int = 2 << 30,
                    not_learnt: str | None = None, final_not_learnt: str | None = None) -> CircuitSearch:
    """Smallest greedy circuit with f_paper ≥ ``search.threshold`` among sizes 1 … :func:`search_limit`
    (design §5), and whether it is valid (:func:`circuit_validity`).

    m(M) and m(∅) come first (the clean and the corrupted run) and decide validity. At an invalid checkpoint (the
    model does not perform the task, so f_paper = m(C)/m(M) divides by noise) there is no search: the result is
    the empty circuit (size 0, ``curve`` holding only size 0, m(C) = m(∅)), never ``reached``. Otherwise the
    log-spaced grid of :func:`search_minimal_size` is evaluated in one batched forward (edge masks stacked along the
    batch; the corrupted activations computed once per batch) with m(M) and m(∅) again; every evaluated size is
    recorded in ``curve``.

    Args:
        scores: ``[n_writers, n_readers]`` edge scores (NaN off the edge mask).
        batch_size: examples per forward pass.
        metric_final: the task metric at the study's last checkpoint (None: this is the last checkpoint).
        not_learnt, final_not_learnt: why the task is not learnt here and at the last checkpoint
            (:meth:`learnt.LearntCriterion.reason`; None: learnt), for :func:`circuit_validity`.

    Raises:
        ValueError: for scores of the wrong shape, or with a NaN or infinite edge score.
    """
    max_n = search_limit(graph.n_edges, search.max_fraction, search.min_search_edges)
    graph.check_scores(scores)
    masks: dict[int, np.ndarray] = {}

    def circuit(n: int) -> np.ndarray:
        if n not in masks:
            masks[n] = select_circuit(graph, scores, n, search.selection)
        return masks[n]

    trivial = torch.from_numpy(np.stack([graph.edge_mask, np.zeros_like(graph.edge_mask)]))
    m_model, m_empty = patched_metric(bridge, graph, prompts, trivial, batch_size, max_bytes).tolist()
    valid, reason = circuit_validity(m_model, m_empty, m_model if metric_final is None else metric_final,
                                     search.validity_margin, search.emergence_fraction, not_learnt, final_not_learnt)
    if not valid:
        empty = {**faithfulness(m_empty, m_model, m_empty), "n_edges": 0, "metric": m_empty}
        return CircuitSearch(0, np.zeros_like(graph.edge_mask), False, False, reason, m_model, m_empty, m_empty,
                             {0: empty})
    progress = Progress(f"minimal-circuit search over 1..{max_n} edges", None, "circuit sizes evaluated")
    base: dict[str, float] = {}
    metric_of: dict[int, float] = {}

    def faithfulness_of(sizes: list[int]) -> list[float]:
        extra = [graph.edge_mask, np.zeros_like(graph.edge_mask)] if not base else []
        keep = torch.from_numpy(np.stack(extra + [circuit(n) for n in sizes]))
        values = patched_metric(bridge, graph, prompts, keep, batch_size, max_bytes).tolist()
        progress.update(len(keep))
        if not base:
            base["model"], base["empty"] = values[0], values[1]
            values = values[2:]
        metric_of.update(zip(sizes, values))
        return [faithfulness(m, base["model"], base["empty"])["paper"] for m in values]

    size, reached, evaluated = search_minimal_size(faithfulness_of, max_n, search.threshold, search.grid_points)
    progress.close()
    final = base["model"] if metric_final is None else metric_final
    valid, reason = circuit_validity(base["model"], base["empty"], final, search.validity_margin,
                                     search.emergence_fraction, not_learnt, final_not_learnt)
    curve = {n: {**faithfulness(metric_of[n], base["model"], base["empty"]), "n_edges": int(circuit(n).sum()),
                 "metric": metric_of[n]} for n in sorted(evaluated)}
    return CircuitSearch(size, circuit(size), reached and valid, valid, reason, base["model"], base["empty"],
                         metric_of[size], curve)


MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # Mueller et al. 2025 (MIB)


def area_under(fractions: list[float], values: list[float]) -> float:
    """Trapezoidal area under ``values`` against ``fractions`` (x in [0, 1], sorted ascending)."""
    x, y = np.asarray(fractions, dtype=float), np.asarray(values, dtype=float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def faithfulness_summaries(bridge, graph: Graph, scores: np.ndarray, prompts: Prompts, batch_size: int,
                           selection: str, fractions: tuple[float, ...] = MIB_FRACTIONS,
                           max_bytes: int = 2 << 30) -> dict:
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


def circuit_record(bridge, graph: Graph, scores: ScoresRecord, prompts: Prompts, search: SearchSettings,
                   batch_size: int, metric_final: float, tokens_seen: int, version: str, not_learnt: str | None,
                   final_not_learnt: str | None) -> CircuitRecord:
    """The circuit stage of one checkpoint: :func:`minimal_circuit` and :func:`faithfulness_summaries` on a
    scores file's scores, as a :class:`~circuit_stability.records.CircuitRecord`.

    Args:
        metric_final: the task metric at the study's last checkpoint (its behaviour record), for the validity.
        not_learnt, final_not_learnt: :meth:`learnt.LearntCriterion.reason` of this checkpoint's and the last
            checkpoint's behaviour records (None: learnt), for the validity.

    Raises:
        ValueError: if the scores were computed on a different graph than the model's.
    """
    if graph != scores.graph:
        raise ValueError(f"scores of {scores.meta.get('model')} {scores.meta.get('task')} step "
                         f"{scores.meta.get('step')} were computed on {scores.graph}, but the model has {graph}")
    res = minimal_circuit(bridge, graph, scores.scores, prompts, search, batch_size, metric_final,
                          not_learnt=not_learnt, final_not_learnt=final_not_learnt)
    mib = faithfulness_summaries(bridge, graph, scores.scores, prompts, batch_size, search.selection) if res.valid else {}
    edges = [name for name, keep in zip(graph.edge_names, res.edges[graph.edge_mask]) if keep]
    m = scores.meta
    return CircuitRecord(
        model=m["model"], step=int(m["step"]), task=m["task"], method=m["method"], tokens_seen=tokens_seen,
        selection=search.selection, pruned=True, threshold=search.threshold, max_fraction=search.max_fraction,
        min_search_edges=search.min_search_edges,
        max_edges=search_limit(graph.n_edges, search.max_fraction, search.min_search_edges),
        total_edges=graph.n_edges, size=res.size, edges=edges, nodes=circuit_nodes(graph, res.edges),
        n_edges=len(edges), reached=res.reached, valid=res.valid, invalid_reason=res.invalid_reason,
        validity_margin=search.validity_margin, emergence_fraction=search.emergence_fraction,
        metric_final=metric_final, metric_circuit=res.metric_circuit, metric_model=res.metric_model,
        metric_empty=res.metric_empty, faithfulness={str(k): v for k, v in sorted(res.curve.items())}, mib=mib,
        version=version)
