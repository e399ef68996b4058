"""The file contracts of design §4, as frozen dataclasses with ``read(path)`` and ``write(path)`` (atomic).

Nothing else in the package parses or writes these formats: the CLI, the tables, MLflow tracking and the tests
go through this module.

- :class:`BehaviorRecord`: ``results/behavior/{model}/{task}/step{step}.json``: task metric and accuracy,
  overall and per split.
- :class:`ScoresRecord`: ``results/scores/{model}/{task}/step{step}.parquet``: every edge's score, columns
  ``src`` (dictionary string), ``dst`` (dictionary string with ``<q|k|v>``), ``score`` (float32), and the run's
  settings in the file metadata; in memory, the :class:`~circuit_stability.graph.Graph` and the dense
  ``[n_writers, n_readers]`` score table (NaN off the edge mask).
- :class:`ExampleScoresRecord`: ``results/scores/{model}/{task}/step{step}.examples.parquet``: each example's score
  of the edges a bootstrap resample can select (columns ``src``, ``dst``, ``scores``: a fixed-size list of float32,
  one per example), beside the scores parquet.
- :class:`CircuitRecord`: ``results/circuits/{model}/{task}/step{step}.json``: the minimal circuit, its
  faithfulness curve, m(M), m(C), m(∅), and whether the circuit is ``valid`` (design §4).
- :class:`ComponentsRecord`: ``results/components/{model}/step{step}.parquet``: head-function scores of every head,
  long format (head, score, value).
- :class:`StabilityRecord`: ``results/stability/{model}/ioi/step{step}.parquet``: every head's path-patching effect
  on each IOI receiver set in both forms, with its class and circuit membership (the IOI algorithm-stability issue).
- :func:`write_dataset` / :func:`read_dataset`: ``data/tasks/{family}/{task}.parquet``, the task dataset schema
  (:data:`DATASET_SCHEMA`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from circuit_stability.artifacts import parquet_metadata, write_json, write_parquet
from circuit_stability.graph import Graph, head_name


REBUILD = "delete it and run `snakemake --cores all` again to rebuild it"


class RecordError(ValueError):
    """An artefact that cannot be read as its contract says. The message names the file, says what is wrong
    and how to get a good one (delete it, and the workflow rebuilds it).

    Attributes:
        kind: the artefact's kind (``scores``, ``behaviour``, …); path: the file; problem: what is wrong.
    """

    def __init__(self, kind: str, path: str | Path, problem: str):
        super().__init__(f"{kind} file {path} {problem}; {REBUILD}")
        self.kind, self.path, self.problem = kind, str(path), problem


def _read_json(path: str | Path, kind: str) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RecordError(kind, path, f"cannot be read: {e}") from None
    if not isinstance(obj, dict):
        raise RecordError(kind, path, f"holds {type(obj).__name__}, not a JSON object")
    return obj


def _from_dict(cls, obj: dict, path: str | Path, kind: str):
    """Build dataclass ``cls`` from ``obj``: every field without a default must be present; unknown keys are
    an error (so a renamed key is found where it is read, not downstream)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in obj]
    unknown = sorted(set(obj) - set(fields))
    if missing or unknown:
        raise RecordError(kind, path, f"does not match its contract: missing keys {missing}, unknown keys {unknown}")
    try:
        return cls(**obj)
    except (TypeError, ValueError) as e:
        raise RecordError(kind, path, f"does not match its contract: {e}") from None


# ---------------------------------------------------------------- behaviour
@dataclass(frozen=True)
class BehaviorRecord:
    """Task behaviour of one (model, task, step) (design §3).

    Attributes:
        model, task, step: identity; ``tokens_seen`` = step × tokens per step.
        metric_name: ``logit_diff`` (logits) or ``prob_diff`` (probability).
        metric: mean task metric on the clean prompts, m(M); ``accuracy``: fraction of examples with metric > 0.
        metric_corrupted: mean task metric on the corrupted prompts.
        n_examples: examples in the dataset.
        splits: per split (``seen``, ``held_out``): ``{"metric", "accuracy", "n"}``.
        version: package version that wrote the record.
    """

    model: str
    step: int
    tokens_seen: int
    task: str
    metric_name: str
    metric: float
    accuracy: float
    metric_corrupted: float
    n_examples: int
    splits: dict[str, dict[str, float]]
    version: str

    def write(self, path: str | Path) -> None:
        """Write the record as JSON, atomically."""
        write_json(dataclasses.asdict(self), path)

    @classmethod
    def read(cls, path: str | Path) -> "BehaviorRecord":
        """Read a behaviour JSON.

        Raises:
            RecordError: naming the file, if it is not valid JSON or its keys differ from the contract.
        """
        return _from_dict(cls, _read_json(path, "behaviour"), path, "behaviour")


# ---------------------------------------------------------------- scores
def graph_meta(graph: Graph) -> dict[str, Any]:
    """The graph's shape as file metadata: n_layers, n_heads, parallel_attn_mlp, and n_kv_heads only under
    grouped-query attention (so a file of a model without it is byte for byte what it was before the key existed)."""
    meta = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": graph.parallel_attn_mlp}
    if graph.grouped:
        meta["n_kv_heads"] = graph.n_kv_heads
    return meta


def graph_of(meta: dict[str, Any]) -> Graph:
    """The :class:`Graph` a file's metadata (:func:`graph_meta`) describes."""
    return Graph(int(meta["n_layers"]), int(meta["n_heads"]), bool(meta["parallel_attn_mlp"]),
                 int(meta.get("n_kv_heads", meta["n_heads"])))


@dataclass(frozen=True)
class ScoresRecord:
    """Edge scores of one (model, task, step) (design §4 "Scores parquet").

    Attributes:
        graph: the model's edge graph.
        scores: ``[n_writers, n_readers]`` float32, NaN off ``graph.edge_mask``; units: task-metric units;
            sign: score ≈ m(edge corrupted) − m(model), so a negative score supports the task.
        meta: the file metadata: model, step, task, method, ig_steps, ig_convention, n_examples, metric,
            version, seed, tokens_seen (and the graph's :func:`graph_meta`); no wall time, so a
            rebuild from the same inputs gives the same bytes.
    """

    graph: Graph
    scores: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    REQUIRED_META = ("model", "step", "task", "method", "n_examples", "metric", "n_layers", "n_heads",
                     "parallel_attn_mlp")

    def __post_init__(self) -> None:
        self.graph.check_scores(self.scores, f"scores of {self.meta.get('model')} {self.meta.get('task')} "
                                              f"step {self.meta.get('step')}")

    def write(self, path: str | Path) -> None:
        """Write the edges in row-major order of ``graph.edge_mask`` as a parquet file, atomically."""
        import pandas as pd

        g = self.graph
        src, dst = g.edge_index
        w, r = np.array(g.writer_names), np.array(g.reader_names)
        frame = pd.DataFrame({"src": pd.Categorical(w[src], categories=g.writer_names),
                              "dst": pd.Categorical(r[dst], categories=g.reader_names),
                              "score": self.scores[src, dst].astype(np.float32)})
        write_parquet(frame, path, {**self.meta, **graph_meta(g)})

    @classmethod
    def read_meta(cls, path: str | Path) -> dict[str, Any]:
        """Only the file metadata of a scores parquet (cheap: the scores are not read).

        Raises:
            RecordError: naming the file, if it cannot be read or lacks a metadata key of the contract.
        """
        try:
            meta = parquet_metadata(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise RecordError("scores", path, f"cannot be read: {e}") from None
        missing = [k for k in cls.REQUIRED_META if k not in meta]
        if missing:
            raise RecordError("scores", path, f"does not match its contract: its metadata lacks {missing}")
        return meta

    @classmethod
    def read(cls, path: str | Path) -> "ScoresRecord":
        """Read a scores parquet into its graph, dense scores and metadata.

        Raises:
            RecordError: naming the file, if it cannot be read, lacks metadata keys, names nodes foreign to its
                graph, or has unusable scores (no edges, or any NaN or infinite score).
        """
        import pandas as pd

        meta = cls.read_meta(path)
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise RecordError("scores", path, f"cannot be read: {e}") from None
        if list(frame.columns) != ["src", "dst", "score"]:
            raise RecordError("scores", path, f"does not match its contract: columns {list(frame.columns)} "
                              "(expected ['src', 'dst', 'score'])")
        graph = graph_of(meta)
        try:
            src, dst = graph.edge_ids(frame["src"].astype(str).tolist(), frame["dst"].astype(str).tolist(), "it")
        except ValueError as e:
            raise RecordError("scores", path, f"does not match its graph: {e}") from None
        if len(frame) != graph.n_edges:
            raise RecordError("scores", path, f"has {len(frame)} rows for the {graph.n_edges} edges of its {graph}")
        dense = np.full((graph.n_writers, graph.n_readers), np.nan, dtype=np.float32)
        dense[src, dst] = frame["score"].to_numpy(dtype=np.float32)
        try:
            return cls(graph, dense, meta)
        except ValueError as e:
            raise RecordError("scores", path, f"has unusable scores: {e}") from None


# ---------------------------------------------------------------- per-example scores
def example_scores_path(scores_path: str | Path) -> Path:
    """The per-example scores file beside a scores parquet: ``step{step}.parquet`` -> ``step{step}.examples.parquet``."""
    p = Path(scores_path)
    return p.with_name(p.name.removesuffix(".parquet") + ".examples.parquet")


@dataclass(frozen=True)
class ExampleScoresRecord:
    """Each example's edge scores at one (model, task, step), for the bootstrap of the similarity stage (design §3:
    "per-example scores [n_examples, E] beside" the scores parquet).

    Only the edges a resampled circuit can select are kept: the top ``stored_fraction`` of edges by |mean score|
    (at least one; all with ``stored_fraction = 1``). For every other edge the file keeps nothing but one number
    over all of them, ``unstored_bound`` = max over those edges and examples of |per-example score| (0 when every
    edge is kept): a resample's score of an unstored edge, a weighted mean of its per-example scores, is at most
    that in magnitude, so a resampled circuit whose smallest |score| exceeds the bound could not have selected an
    unstored edge (:func:`circuit_stability.similarity.bootstrap_circuits` checks it).

    Attributes:
        graph: the model's edge graph.
        src, dst: ``[n_stored]`` int64 writer and reader indices of the kept edges, in edge order.
        examples: ``[n_examples, n_stored]`` float32 per-example scores (task-metric units, the sign of the scores
            parquet); their mean over examples is the scores parquet's score to float32 rounding.
        meta: model, step, task, method, ig_steps, n_examples, metric, version, tokens_seen (as the scores parquet),
            ``stored_fraction``, ``n_stored``, ``total_edges``, ``unstored_bound``.
    """

    graph: Graph
    src: np.ndarray
    dst: np.ndarray
    examples: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    REQUIRED_META = ("model", "step", "task", "n_examples", "stored_fraction", "unstored_bound", "n_layers",
                     "n_heads", "parallel_attn_mlp")

    @classmethod
    def from_examples(cls, graph: Graph, examples: np.ndarray, stored_fraction: float,
                      meta: dict[str, Any]) -> "ExampleScoresRecord":
        """Keep the top ``stored_fraction`` of edges by |mean score| from dense per-example scores.

        Args:
            examples: ``[n_examples, n_writers, n_readers]`` float32 (NaN off the edge mask), e.g.
                :attr:`circuit_stability.attribution.Attribution.per_example`.
            stored_fraction: in (0, 1].

        Raises:
            ValueError: for a fraction outside (0, 1], a wrong shape, or a NaN or infinite score on an edge.
        """
        if not 0.0 < stored_fraction <= 1.0:
            raise ValueError(f"stored_fraction must be in (0, 1]; got {stored_fraction}")
        if examples.ndim != 3 or examples.shape[1:] != (graph.n_writers, graph.n_readers):
            raise ValueError(f"per-example scores must be [n_examples, {graph.n_writers}, {graph.n_readers}]; got "
                             f"{examples.shape}")
        src, dst = graph.edge_index
        rows = examples[:, src, dst].astype(np.float32)  # [N, E]
        if not np.isfinite(rows).all():
            raise ValueError("per-example scores have NaN or infinite values on edges")
        n_keep = max(1, int(np.ceil(stored_fraction * len(src) - 1e-9)))
        order = np.lexsort((np.arange(len(src)), -np.abs(rows.mean(0, dtype=np.float64))))
        kept = np.sort(order[:n_keep])
        rest = np.sort(order[n_keep:])
        bound = float(np.abs(rows[:, rest]).max()) if len(rest) else 0.0
        meta = {**meta, "stored_fraction": stored_fraction, "n_stored": int(n_keep), "total_edges": int(len(src)),
                "unstored_bound": bound, "n_examples": int(rows.shape[0])}
        return cls(graph, src[kept].astype(np.int64), dst[kept].astype(np.int64), np.ascontiguousarray(rows[:, kept]),
                   meta)

    def write(self, path: str | Path) -> None:
        """Write the kept edges (rows) with one fixed-size list of per-example scores each, atomically."""
        g = self.graph
        n, k = self.examples.shape
        flat = pa.array(np.ascontiguousarray(self.examples.T).reshape(-1), type=pa.float32())
        table = pa.table({
            "src": pa.DictionaryArray.from_arrays(pa.array(self.src.astype(np.int32)), pa.array(g.writer_names)),
            "dst": pa.DictionaryArray.from_arrays(pa.array(self.dst.astype(np.int32)), pa.array(g.reader_names)),
            "scores": pa.FixedSizeListArray.from_arrays(flat, n)})
        write_parquet(table, path, {**self.meta, **graph_meta(g)})

    @classmethod
    def read(cls, path: str | Path) -> "ExampleScoresRecord":
        """Read a per-example scores parquet.

        Raises:
            RecordError: naming the file, if it cannot be read, lacks metadata keys, has other columns, names
                nodes foreign to its graph, or holds NaN or infinite scores.
        """
        import pyarrow.parquet as pq

        try:
            meta = parquet_metadata(path)
            table = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise RecordError("per-example scores", path, f"cannot be read: {e}; {REBUILD}") from None
        missing = [k for k in cls.REQUIRED_META if k not in meta]
        if missing or table.column_names != ["src", "dst", "scores"]:
            raise RecordError("per-example scores", path, f"does not match its contract (metadata lacks {missing}, "
                              f"columns {table.column_names}); {REBUILD}")
        graph = graph_of(meta)
        try:
            src, dst = graph.edge_ids([str(x) for x in table.column("src").to_pylist()],
                                      [str(x) for x in table.column("dst").to_pylist()], "it")
        except ValueError as e:
            raise RecordError("per-example scores", path, f"does not match its graph: {e}") from None
        n = int(meta["n_examples"])
        flat = table.column("scores").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        examples = np.ascontiguousarray(flat.astype(np.float32).reshape(len(src), n).T)
        if not np.isfinite(examples).all():
            raise RecordError("per-example scores", path, f"holds NaN or infinite scores; {REBUILD}")
        return cls(graph, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64), examples, meta)

    def resampled(self, weights: np.ndarray) -> np.ndarray:
        """Mean scores under example weights: ``weights @ examples / n_examples`` (bootstrap counts give a
        resample's mean; all ones the stored mean).

        Args:
            weights: ``[B, n_examples]`` (or ``[n_examples]``) non-negative weights, e.g. multinomial counts.

        Returns:
            ``[B, n_stored]`` float32 (``[n_stored]`` for one weight vector).
        """
        w = np.asarray(weights, dtype=np.float32)
        if w.shape[-1] != self.examples.shape[0]:
            raise ValueError(f"weights have {w.shape[-1]} examples; the record has {self.examples.shape[0]}")
        return (w @ self.examples) / np.float32(self.examples.shape[0])


# ---------------------------------------------------------------- components
COMPONENT_SCORES = {
    "induction": "attention to the token after the earlier copy (Olsson et al. 2022), in [0, 1]",
    "duplicate_token": "attention to the earlier copy of the current token, in [0, 1]",
    "previous_token": "attention to the previous token, in [0, 1]",
    "successor": "fraction of ordinal pairs whose successor the OV circuit ranks first (Gould et al. 2023)",
    "copy": "percent of IOI name positions whose name is in the OV circuit's top 5 (Wang et al. 2023)",
    "negative_copy": "the copy score with the OV logits negated (McDougall et al. 2023), percent",
    "direct_effect": "normalised IOI logit-difference change when the head's path to the logits carries its "
                     "ABB->ABA output (Wang et al. 2023); 0 none, -1 the whole clean-to-corrupted drop",
    "name_mover": "1 when copy > the copy threshold and direct_effect < 0 (the paper's name-mover rule), else 0",
    "query_effect": "normalised IOI logit-difference change through the name movers' queries (ABB->ABA); "
                    "absent when the checkpoint has no name mover",
    "s_inhibition": "1 when the head passes the S-inhibition test (Wang et al. 2023; reference §4.5), else 0; "
                    "absent when the checkpoint has no name mover",
    "attention_io": "mean attention from the IOI read position to the IO name, in [0, 1]",
    "attention_s1": "mean attention from the IOI read position to the first mention of S, in [0, 1]",
    "attention_s2": "mean attention from the IOI read position to the second mention of S, in [0, 1]",
}

# scores that measure an effect or an attention, not a head function: no emergence threshold applies to them
EFFECT_SCORES = ("direct_effect", "query_effect", "attention_io", "attention_s1", "attention_s2")


@dataclass(frozen=True)
class ComponentsRecord:
    """Head-function scores of every head of one (model, step) (design §3, ``results/components/{model}/
    step{step}.parquet``), long format: one row per (head, score) with columns ``head`` (``a{L}.h{H}``, the graph's
    node name), ``layer``, ``head_index``, ``score`` (a name of :data:`COMPONENT_SCORES`) and ``value`` (float32).

    Attributes:
        scores: score name -> ``[n_layers, n_heads]`` array (units in :data:`COMPONENT_SCORES`).
        meta: file metadata: model, step, tokens_seen, version, and the test's settings.
    """

    scores: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    REQUIRED_META = ("model", "step", "tokens_seen")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.scores) - set(COMPONENT_SCORES))
        shapes = {np.shape(v) for v in self.scores.values()}
        if unknown or len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"component scores must be [n_layers, n_heads] arrays named from "
                             f"{list(COMPONENT_SCORES)}; got unknown {unknown}, shapes {sorted(shapes)}")

    def frame(self):
        """The long-format table (columns above), scores in :data:`COMPONENT_SCORES` order, heads layer-major."""
        import pandas as pd

        rows = [(head_name(layer, head), layer, head, name, float(values[layer, head]))
                for name in COMPONENT_SCORES if name in self.scores
                for values in [np.asarray(self.scores[name])]
                for layer in range(values.shape[0]) for head in range(values.shape[1])]
        frame = pd.DataFrame(rows, columns=["head", "layer", "head_index", "score", "value"])
        return frame.astype({"layer": "int32", "head_index": "int32", "value": "float32"})

    def write(self, path: str | Path) -> None:
        """Write :meth:`frame` as parquet with :attr:`meta` in the file metadata, atomically."""
        write_parquet(self.frame(), path, self.meta)

    @classmethod
    def read(cls, path: str | Path) -> "ComponentsRecord":
        """Read a components parquet.

        Raises:
            RecordError: naming the file, if it cannot be read, lacks a column or metadata key of the contract,
                names an unknown score, or holds a NaN.
        """
        import pandas as pd

        try:
            meta, frame = parquet_metadata(path), pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise RecordError("components", path, f"cannot be read: {e}") from None
        missing = [k for k in cls.REQUIRED_META if k not in meta]
        if missing or list(frame.columns) != ["head", "layer", "head_index", "score", "value"]:
            raise RecordError("components", path, f"does not match its contract: metadata lacks {missing}, "
                              f"columns {list(frame.columns)}")
        if frame["value"].isna().any():
            raise RecordError("components", path, "has NaN scores")
        shape = (int(frame["layer"].max()) + 1, int(frame["head_index"].max()) + 1)
        scores = {}
        for name, part in frame.groupby("score", sort=False):
            values = np.full(shape, np.nan, dtype=np.float32)
            values[part["layer"].to_numpy(), part["head_index"].to_numpy()] = part["value"].to_numpy()
            scores[str(name)] = values
        try:
            return cls(scores, meta)
        except ValueError as e:
            raise RecordError("components", path, f"does not match its contract: {e}") from None


# ---------------------------------------------------------------- circuits
@dataclass(frozen=True)
class CircuitRecord:
    """The minimal circuit of one (model, task, step) (design §4 "Circuit JSON", §5).

    Attributes:
        model, task, step, tokens_seen, method: identity and the scoring method.
        selection, pruned, threshold, max_fraction, min_search_edges, max_edges, total_edges: the search
            (``max_edges`` = the largest greedy size tried; ``total_edges`` = E).
        size: greedy size n of the chosen circuit; ``edges``: its edges after pruning (``n_edges`` of them);
            ``nodes``: the nodes they touch. Where the circuit is not ``valid`` nothing is searched: size 0, no
            edges, a faithfulness curve of the empty circuit alone and no MIB summaries (``mib = {}``).
        reached: f_paper ≥ threshold at ``size`` *and* the circuit is valid.
        valid, invalid_reason: whether the model performs the task at this checkpoint (see
            :func:`circuit_stability.circuits.circuit_validity`); the reason is ``None`` when valid.
        validity_margin, emergence_fraction: ε and the onset fraction of the validity rule.
        metric_final: the task metric at the study's last checkpoint (the onset rule's reference).
        metric_model, metric_empty, metric_circuit: m(M), m(∅), m(C) (task-metric units).
        faithfulness: ``{str(n): {"paper", "normalized", "n_edges", "metric"}}`` for every greedy size evaluated.
        mib: MIB's summaries (``fractions``, ``cpr``, ``cmd``).
        version: the package version. (No wall times: a rebuild from the same inputs gives the same bytes; the
            jobs' times are in their logs, Snakemake's benchmark files and MLflow.)
    """

    model: str
    step: int
    task: str
    method: str
    tokens_seen: int
    selection: str
    pruned: bool
    threshold: float
    max_fraction: float
    min_search_edges: int
    max_edges: int
    total_edges: int
    size: int
    edges: list[str]
    nodes: list[str]
    n_edges: int
    reached: bool
    valid: bool
    invalid_reason: str | None
    validity_margin: float
    emergence_fraction: float
    metric_final: float
    metric_circuit: float
    metric_model: float
    metric_empty: float
    faithfulness: dict[str, dict[str, float]]
    mib: dict
    version: str

    def __post_init__(self) -> None:
        if str(self.size) not in self.faithfulness:
            raise ValueError(f"circuit of {self.model} {self.task} step {self.step}: its size {self.size} has no "
                             f"entry in the faithfulness curve (sizes {sorted(self.faithfulness, key=int)})")
        if self.reached and not self.valid:
            raise ValueError(f"circuit of {self.model} {self.task} step {self.step} is marked reached but invalid")

    @property
    def f_paper(self) -> float:
        """f_paper = m(C)/m(M) of the chosen circuit (Tigges et al. 2024 §2.3)."""
        return float(self.faithfulness[str(self.size)]["paper"])

    @property
    def f_norm(self) -> float:
        """f_norm = (m(C) − m(∅))/(m(M) − m(∅)) of the chosen circuit (MIB, Mueller et al. 2025)."""
        return float(self.faithfulness[str(self.size)]["normalized"])

    def write(self, path: str | Path) -> None:
        """Write the record as JSON, atomically."""
        write_json(dataclasses.asdict(self), path)

    @classmethod
    def read(cls, path: str | Path, graph: Graph | None = None) -> "CircuitRecord":
        """Read a circuit JSON; with ``graph`` (the model's computational graph), also check that every edge it
        names is an edge of that graph.

        Raises:
            RecordError: naming the file, if it is not valid JSON, its keys differ from the contract, or its
                size has no faithfulness entry; with ``graph``, naming the file and the first edge that is not
                ``writer->reader`` of the graph (a record from another model, or edited by hand).
        """
        record = _from_dict(cls, _read_json(path, "circuit"), path, "circuit")
        if graph is not None:
            malformed = [e for e in record.edges if e.count("->") != 1]
            if malformed:
                raise RecordError("circuit", path, f"has edge {malformed[0]!r}, which is not of the form 'writer->reader'")
            if record.edges:
                src, dst = zip(*(e.split("->") for e in record.edges))
                try:
                    graph.edge_ids(list(src), list(dst), "edges")
                except ValueError as e:
                    raise RecordError("circuit", path, f"names an edge its model's graph lacks ({e})") from None
        return record


STABILITY_COLUMNS = ["receivers", "form", "head", "layer", "head_index", "effect", "in_class", "in_circuit"]


@dataclass(frozen=True)
class StabilityRecord:
    """Path-patching effects of one (model, step) on the IOI receiver sets (design §3,
    ``results/stability/{model}/ioi/step{step}.parquet``; :mod:`circuit_stability.stability`), long format: one
    row per (receiver set, form, head) with ``receivers`` (a key of ``stability.RECEIVER_SETS``), ``form`` (a key of
    ``stability.FORMS``), ``head`` (``a{L}.h{H}``), ``layer``, ``head_index``, ``effect`` (float32, normalised:
    −1 = the whole clean-to-corrupted drop of the logit difference), ``in_class`` (the head belongs to the class
    the IOI algorithm assigns to that receiver set, in that form) and ``in_circuit`` (a node of the checkpoint's
    IOI circuit).

    A checkpoint whose IOI circuit is not valid has no rows (``meta["reason"]`` says why); a receiver set that
    does not exist there (no name mover, no S-inhibition head) has no rows either (``meta["undefined"]``: set ->
    reason).

    Attributes:
        frame: the rows above (a pandas DataFrame).
        meta: model, step, tokens_seen, version, ``valid``, ``reason``, ``undefined``, ``receivers`` (set -> head
            names), ``metric_clean``/``metric_corrupted`` (mean logit differences), and the class thresholds.
    """

    frame: Any
    meta: dict[str, Any] = field(default_factory=dict)

    REQUIRED_META = ("model", "step", "tokens_seen", "valid", "reason", "undefined", "receivers")

    def __post_init__(self) -> None:
        if list(self.frame.columns) != STABILITY_COLUMNS:
            raise ValueError(f"stability rows must have columns {STABILITY_COLUMNS}; got {list(self.frame.columns)}")
        missing = [k for k in self.REQUIRED_META if k not in self.meta]
        if missing:
            raise ValueError(f"stability metadata lacks {missing}")

    def write(self, path: str | Path) -> None:
        """Write :attr:`frame` as parquet with :attr:`meta` in the file metadata, atomically."""
        frame = self.frame.astype({"layer": "int32", "head_index": "int32", "effect": "float32",
                                   "in_class": "bool", "in_circuit": "bool"})
        write_parquet(frame, path, self.meta)

    @classmethod
    def read(cls, path: str | Path) -> "StabilityRecord":
        """Read a stability parquet.

        Raises:
            RecordError: naming the file, if it cannot be read or does not match its contract.
        """
        import pandas as pd

        try:
            meta, frame = parquet_metadata(path), pd.read_parquet(path)
            return cls(frame, meta)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise RecordError("stability", path, f"cannot be read or does not match its contract: {e}") from None


# ---------------------------------------------------------------- task datasets
DATASET_SCHEMA = pa.schema([("clean", pa.list_(pa.int32())), ("corrupted", pa.list_(pa.int32())),
                            ("clean_text", pa.string()), ("corrupted_text", pa.string()), ("position", pa.int32()),
                            ("answer_ids", pa.list_(pa.int32())), ("flags", pa.list_(pa.int8())),
                            ("split", pa.string())])
"""Columns every task dataset has (design §4 "Task dataset parquet"); a task may add its own after them (IOI's
``order``, Greater-Than's ``yy``, …). File metadata: task, metric, tokenizer, seed, n_examples."""


def write_dataset(ds, path: str | Path) -> None:
    """Write a :class:`~circuit_stability.tasks.base.TaskDataset` as parquet with :data:`DATASET_SCHEMA`,
    atomically."""
    frame = ds.frame.copy()
    for col in ("clean", "corrupted", "answer_ids"):
        frame[col] = frame[col].map(lambda x: [int(i) for i in x])
    table = pa.Table.from_pandas(frame[DATASET_SCHEMA.names], schema=DATASET_SCHEMA, preserve_index=False)
    for c in [c for c in frame.columns if c not in DATASET_SCHEMA.names]:
        table = table.append_column(c, pa.array(frame[c].tolist()))
    write_parquet(table, path, {"task": ds.task, "metric": ds.metric, "tokenizer": str(ds.tokenizer),
                                "seed": ds.seed, "n_examples": len(ds)})


def read_dataset(path: str | Path):
    """Read a task dataset parquet as a :class:`~circuit_stability.tasks.base.TaskDataset`.

    Raises:
        RecordError: naming the file, if it cannot be read or lacks a column or metadata key of the contract.
    """
    import pandas as pd

    from circuit_stability.tasks.base import TaskDataset

    try:
        meta = parquet_metadata(path)
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise RecordError("dataset", path, f"cannot be read: {e}") from None
    missing = [c for c in DATASET_SCHEMA.names if c not in frame.columns]
    missing_meta = [k for k in ("task", "metric", "tokenizer", "seed") if k not in meta]
    if missing or missing_meta:
        raise RecordError("dataset", path, f"does not match its contract: missing columns {missing}, missing metadata "
                   f"{missing_meta}")
    try:
        return TaskDataset(meta["task"], meta["metric"], frame, meta["tokenizer"], meta["seed"])
    except ValueError as e:
        raise RecordError("dataset", path, f"does not match its contract: {e}") from None


def check_artefact(path: str | Path, full: bool = True) -> None:
    """Check that an artefact of the study reads as its contract says (by its place in the study's layout,
    design §3): behaviour and circuit JSON, scores, dataset and components parquet (``full``: every score finite; else only
    the parquet footer and metadata, which catches a truncated file cheaply), tables (readable parquet), model
    checkpoints (a readable safetensors header), other JSON (parseable).

    Raises:
        RecordError: naming the file, what is wrong and how to rebuild it.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    parts = path.parts
    if "behavior" in parts and path.suffix == ".json":
        BehaviorRecord.read(path)
    elif "circuits" in parts and path.suffix == ".json":
        CircuitRecord.read(path)
    elif "scores" in parts and path.name.endswith(".examples.parquet"):
        if full:
            ExampleScoresRecord.read(path)
        else:
            meta = parquet_metadata(path)
            missing = [k for k in ExampleScoresRecord.REQUIRED_META if k not in meta]
            if missing:
                raise RecordError("per-example scores", path, f"does not match its contract: its metadata lacks "
                                  f"{missing}; {REBUILD}")
    elif "scores" in parts and path.suffix == ".parquet":
        ScoresRecord.read(path) if full else ScoresRecord.read_meta(path)
    elif "tasks" in parts and path.suffix == ".parquet":
        read_dataset(path)
    elif "components" in parts and path.suffix == ".parquet" and full:
        ComponentsRecord.read(path)
    elif "stability" in parts and path.suffix == ".parquet" and full:
        StabilityRecord.read(path)
    elif path.suffix == ".parquet":
        try:
            pq.read_table(path) if full else pq.read_metadata(path)
        except (OSError, pa.ArrowException) as e:
            raise RecordError("table", path, f"cannot be read: {e}") from None
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 (safetensors raises its own error types)
            raise RecordError("checkpoint", path, f"cannot be read: {e}") from None
    elif path.suffix == ".json":
        _read_json(path, "JSON")
