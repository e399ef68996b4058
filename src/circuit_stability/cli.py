"""``circuit-stability <stage> ...``: one subcommand per pipeline stage (what each Snakemake rule's shell calls).

Every stage takes explicit arguments (the library never reads the study config) and writes its outputs
atomically, so each is runnable and testable without Snakemake. Run ``circuit-stability <stage> --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from circuit_stability import __version__
from circuit_stability.artifacts import write_json, write_parquet


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _log(msg: str) -> None:
    print(f"[circuit-stability] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- suite
def cmd_corpus(a: argparse.Namespace) -> None:
    """Generate the corpus, build the tokenizer and cut the training token stream."""
    import numpy as np

    from circuit_stability.artifacts import atomic_dir, atomic_path
    from circuit_stability.suite import corpus
    from circuit_stability.suite.tokenizer import build_tokenizer
    from circuit_stability.suite.train import TrainConfig, build_token_stream

    train = TrainConfig(**json.loads(a.training))
    weights = {**corpus.CorpusConfig().weights, **json.loads(a.weights)}
    cfg = corpus.CorpusConfig(weights=weights)
    tok = build_tokenizer(corpus.lexicon_sample())
    need = train.max_steps * train.batch_size * train.context
    t0 = time.time()
    docs, encoded, have, chunk = 0, [], 0, max(1000, need // 40)
    while have < need:  # generate in chunks until the stream is long enough (documents average ~50 tokens)
        new = corpus.generate_documents(a.seed + docs, chunk, cfg)
        ids = tok(new, add_special_tokens=False)["input_ids"]
        encoded += ids
        have += sum(len(x) + 1 for x in ids)
        docs += chunk
    tokens = build_token_stream(encoded, tok.eos_token_id, train)
    unk = int((tokens == tok.unk_token_id).sum())
    if unk:
        raise RuntimeError(f"corpus contains {unk} unknown tokens: the tokenizer vocabulary misses grammar words")
    out = Path(a.out)
    with atomic_dir(out / "tokenizer") as tmp:
        tok.save_pretrained(tmp)
    with atomic_path(out / "tokens.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tokens.astype(np.uint16 if len(tok) < 65536 else np.int32))
    write_json({"seed": a.seed, "weights": weights, "n_documents": docs, "n_tokens": int(tokens.size),
                "vocab_size": len(tok), "shape": list(tokens.shape), "seconds": round(time.time() - t0, 2)},
               out / "corpus.json")
    _log(f"corpus: {tokens.size:,} tokens from {docs:,} documents, vocabulary {len(tok)}")


def cmd_train(a: argparse.Namespace) -> None:
    """Train one suite model on the shared token stream, saving every scheduled checkpoint."""
    import numpy as np
    from transformers import PreTrainedTokenizerFast

    from circuit_stability.checkpoints import checkpoint_schedule
    from circuit_stability.suite.train import ModelShape, TrainConfig, shape_summary, train_model

    _threads(a.threads)
    shape = ModelShape(**json.loads(a.shape))
    train_cfg = json.loads(a.training)
    every, log_until = train_cfg.pop("checkpoint_every"), train_cfg.pop("log_until", 512)
    cfg = TrainConfig(**train_cfg, seed=a.seed)
    steps = checkpoint_schedule(cfg.max_steps, every, log_until)
    tokens = np.load(Path(a.corpus) / "tokens.npy")
    tok = PreTrainedTokenizerFast.from_pretrained(Path(a.corpus) / "tokenizer")
    t0 = time.time()
    log = train_model(shape, cfg, tokens, tok, Path(a.out), steps, threads=a.threads)
    write_parquet(log, Path(a.out) / "train_log.parquet", {"model": Path(a.out).name, "seed": a.seed})
    write_json({"model": Path(a.out).name, **shape_summary(shape, len(tok), cfg.context),
                "training": {**train_cfg, "checkpoint_every": every, "log_until": log_until, "seed": a.seed},
                "checkpoints": steps, "seconds": round(time.time() - t0, 1),
                "final_loss": float(log["loss"].tail(50).mean())}, Path(a.out) / "suite.json")


# ---------------------------------------------------------------- tasks
def cmd_dataset(a: argparse.Namespace) -> None:
    """Generate a task's clean/corrupted dataset for a tokenizer (design §4 task parquet)."""
    from transformers import AutoTokenizer

    from circuit_stability.tasks import make_dataset

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    ds = make_dataset(a.task, tok, a.n_examples, a.seed)
    frame = ds.frame.copy()
    for col in ("clean", "corrupted", "answer_ids"):
        frame[col] = frame[col].map(lambda x: [int(i) for i in x])
    import pyarrow as pa

    schema = pa.schema([("clean", pa.list_(pa.int32())), ("corrupted", pa.list_(pa.int32())),
                        ("clean_text", pa.string()), ("corrupted_text", pa.string()), ("position", pa.int32()),
                        ("answer_ids", pa.list_(pa.int32())), ("flags", pa.list_(pa.int8())),
                        ("split", pa.string())])
    extra = [c for c in frame.columns if c not in schema.names]
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    for c in extra:
        table = table.append_column(c, pa.array(frame[c].tolist()))
    write_parquet(table, a.out, {"task": ds.task, "metric": ds.metric, "tokenizer": str(a.tokenizer),
                                 "seed": a.seed, "n_examples": len(ds)})


def _load_dataset(path: str):
    import pandas as pd

    from circuit_stability.artifacts import parquet_metadata
    from circuit_stability.tasks.base import TaskDataset

    meta = parquet_metadata(path)
    return TaskDataset(meta["task"], meta["metric"], pd.read_parquet(path), meta["tokenizer"], meta["seed"])


def _steps(a: argparse.Namespace) -> list[int]:
    """Parse ``--steps`` and check every (model, step) exists before any expensive work."""
    from circuit_stability.models import resolve_checkpoint

    steps = [int(x) for x in a.steps.split(",")]
    for step in steps:
        resolve_checkpoint(a.model_name or a.model, step, a.suite_dir)
    return steps


def _checkpoints(a: argparse.Namespace, steps: list[int]):
    """Yield ``(step, bridge, graph, prompts)`` for each step, loading one checkpoint at a time."""
    from circuit_stability.attribution import Prompts
    from circuit_stability.graph import Graph
    from circuit_stability.models import load_model

    _threads(a.threads)
    for step in steps:
        bridge = load_model(a.model_name or a.model, step, a.suite_dir, device=a.device, dtype=a.dtype)
        prompts = Prompts.from_dataset(a.ds, bridge.tokenizer.pad_token_id, next(bridge.parameters()).device)
        yield step, bridge, Graph.from_config(bridge.cfg), prompts


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model key (suite member, or short name of a hub model)")
    p.add_argument("--model-name", default=None, help="hub name, e.g. EleutherAI/pythia-160m (default: --model)")
    p.add_argument("--suite-dir", default="models", help="folder of the local suite")
    p.add_argument("--dataset", required=True, help="task dataset parquet")
    p.add_argument("--tokens-per-step", type=int, required=True, help="batch size x context of training")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=70)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", required=True, help="comma-separated checkpoint steps (one process, loaded in turn)")
    p.add_argument("--out-dir", required=True, help="writes <out-dir>/step<step>.<ext> for each step")


# ---------------------------------------------------------------- behaviour
def cmd_behavior(a: argparse.Namespace) -> None:
    """Task metric and accuracy (clean and corrupted, per split) at each checkpoint step."""
    import torch

    steps = _steps(a)
    a.ds = _load_dataset(a.dataset)
    split = a.ds.frame["split"].to_numpy()
    for step, bridge, _, prompts in _checkpoints(a, steps):
        clean, corrupted = [], []
        with torch.no_grad():
            for batch in prompts.chunks(a.batch_size):
                clean.append(batch.metric_values(bridge(batch.clean)))
                corrupted.append(batch.metric_values(bridge(batch.corrupted)))
        clean = torch.cat(clean).cpu().numpy()
        corrupted = torch.cat(corrupted).cpu().numpy()
        per_split = {name: {"metric": float(clean[split == name].mean()),
                            "accuracy": float((clean[split == name] > 0).mean()), "n": int((split == name).sum())}
                     for name in sorted(set(split))}
        write_json({"model": a.model, "step": step, "tokens_seen": step * a.tokens_per_step, "task": a.ds.task,
                    "metric_name": a.ds.metric, "metric": float(clean.mean()), "accuracy": float((clean > 0).mean()),
                    "metric_corrupted": float(corrupted.mean()), "n_examples": len(a.ds), "splits": per_split,
                    "version": __version__}, Path(a.out_dir) / f"step{step}.json")
        _log(f"behaviour {a.model} {a.ds.task} step {step}: {a.ds.metric} = {clean.mean():.3f}")


# ---------------------------------------------------------------- scores
def cmd_scores(a: argparse.Namespace) -> None:
    """Edge scores of every edge (design §4 scores parquet) with EAP, EAP-IG or exact patching."""
    import numpy as np
    import pandas as pd

    from circuit_stability.attribution import METHODS, edge_attribution, exact_scores, interpolation_points

    if a.method not in METHODS:
        raise SystemExit(f"unknown method {a.method!r}; valid: {list(METHODS)}")
    alphas = None if a.method == "exact" else interpolation_points(a.method, a.ig_steps, a.ig_convention)
    steps = _steps(a)
    a.ds = _load_dataset(a.dataset)
    for step, bridge, graph, prompts in _checkpoints(a, steps):
        t0 = time.time()
        if a.method == "exact":
            scores = exact_scores(bridge, graph, prompts, a.batch_size)
        else:
            scores = edge_attribution(bridge, graph, prompts, alphas, a.batch_size).scores
        src, dst = graph.edge_index
        values = scores[src, dst].astype(np.float32)
        w, r = np.array(graph.writer_names), np.array(graph.reader_names)
        frame = pd.DataFrame({"src": pd.Categorical(w[src], categories=graph.writer_names),
                              "dst": pd.Categorical(r[dst], categories=graph.reader_names), "score": values})
        write_parquet(frame, Path(a.out_dir) / f"step{step}.parquet", {
            "model": a.model, "step": step, "task": a.ds.task, "method": a.method,
            "ig_steps": a.ig_steps if a.method == "EAP-IG" else (1 if a.method == "EAP" else 0),
            "ig_convention": a.ig_convention, "n_examples": len(a.ds), "metric": a.ds.metric,
            "version": __version__, "seed": a.ds.seed, "n_layers": graph.n_layers, "n_heads": graph.n_heads,
            "parallel_attn_mlp": graph.parallel_attn_mlp, "tokens_seen": step * a.tokens_per_step,
            "seconds": round(time.time() - t0, 3)})
        _log(f"scores {a.model} {a.ds.task} step {step}: {len(values)} edges by {a.method} "
             f"in {time.time() - t0:.1f}s")


def read_scores(path: str | Path):
    """Read a scores parquet into ``(graph, dense scores [n_writers, n_readers], metadata)``.

    Raises:
        ValueError: if the file has no edges, only NaN scores, or edge names foreign to its graph.
    """
    import numpy as np
    import pandas as pd

    from circuit_stability.artifacts import parquet_metadata
    from circuit_stability.graph import Graph

    meta = parquet_metadata(path)
    frame = pd.read_parquet(path)
    if frame.empty or frame["score"].isna().all():
        raise ValueError(f"scores file {path} has no usable scores (empty or all NaN)")
    graph = Graph(int(meta["n_layers"]), int(meta["n_heads"]), bool(meta["parallel_attn_mlp"]))
    w_idx = {n: i for i, n in enumerate(graph.writer_names)}
    r_idx = {n: i for i, n in enumerate(graph.reader_names)}
    try:
        src = frame["src"].astype(str).map(w_idx.__getitem__).to_numpy()
        dst = frame["dst"].astype(str).map(r_idx.__getitem__).to_numpy()
    except KeyError as e:
        raise ValueError(f"scores file {path} names node {e} that is not in its {graph}") from None
    dense = np.full((graph.n_writers, graph.n_readers), np.nan, dtype=np.float32)
    dense[src, dst] = frame["score"].to_numpy(dtype=np.float32)
    return graph, dense, meta


# ---------------------------------------------------------------- circuits
def cmd_circuit(a: argparse.Namespace) -> None:
    """Minimal circuit by greedy selection + faithfulness search (design §5) -> circuit JSON."""
    from circuit_stability.circuits import (check_search, circuit_nodes, faithfulness_summaries, minimal_circuit,
                                            search_limit)

    steps = _steps(a)
    check_search(a.threshold, a.max_fraction, a.min_search_edges)  # before any model is loaded
    a.ds = _load_dataset(a.dataset)
    loaded = {step: read_scores(Path(a.scores_dir) / f"step{step}.parquet") for step in steps}  # fail fast
    for step, bridge, graph, prompts in _checkpoints(a, steps):
        t0 = time.time()
        sgraph, scores, meta = loaded[step]
        if graph != sgraph:
            raise ValueError(f"scores of step {step} were computed on {sgraph}, but the model has {graph}")
        res = minimal_circuit(bridge, graph, scores, prompts, a.threshold, a.max_fraction, a.grid_points,
                              a.batch_size, selection=a.selection, min_search_edges=a.min_search_edges)
        mib = faithfulness_summaries(bridge, graph, scores, prompts, batch_size=a.batch_size,
                                     selection=a.selection)
        in_circuit = res.edges[graph.edge_mask]
        edges = [name for name, keep in zip(graph.edge_names, in_circuit) if keep]
        write_json({
            "model": a.model, "step": step, "task": a.ds.task, "method": meta["method"],
            "tokens_seen": step * a.tokens_per_step, "selection": a.selection, "pruned": True,
            "threshold": a.threshold, "max_fraction": a.max_fraction,
            "min_search_edges": a.min_search_edges,
            "max_edges": search_limit(graph.n_edges, a.max_fraction, a.min_search_edges),
            "total_edges": graph.n_edges,
            "size": res.size, "edges": edges, "nodes": circuit_nodes(graph, res.edges), "n_edges": len(edges),
            "reached": res.reached, "metric_circuit": res.metric_circuit, "metric_model": res.metric_model,
            "metric_empty": res.metric_empty, "faithfulness": {str(k): v for k, v in sorted(res.curve.items())},
            "mib": mib,
            "seconds": round(time.time() - t0, 3), "version": __version__}, Path(a.out_dir) / f"step{step}.json")
        f = res.curve[res.size]["paper"]
        _log(f"circuit {a.model} {a.ds.task} step {step}: {len(edges)} edges, f_paper={f:.3f}, "
             f"reached={res.reached}")


# ---------------------------------------------------------------- tables and figures
def cmd_tables(a: argparse.Namespace) -> None:
    """Collect per-checkpoint JSONs into long-format parquet tables (design §4 tables)."""
    from circuit_stability.tables import behavior_table, circuit_table, emergence_table, faithfulness_table

    behavior = behavior_table(a.behavior)
    write_parquet(behavior, Path(a.out) / "behavior.parquet")
    write_parquet(circuit_table(a.circuits), Path(a.out) / "circuits.parquet")
    write_parquet(faithfulness_table(a.circuits), Path(a.out) / "faithfulness.parquet")
    write_parquet(emergence_table(behavior), Path(a.out) / "emergence.parquet")


def cmd_plot(a: argparse.Namespace) -> None:
    """Draw the figures from the tables (never recomputes anything)."""
    from circuit_stability import plots

    plots.make_figures(Path(a.tables), Path(a.out), model_order=a.models.split(","), dpi=a.dpi)


# ---------------------------------------------------------------- tracking and data versioning (design §7)
def cmd_track(a: argparse.Namespace) -> None:
    """Log every (model, task, step) of a study to MLflow, idempotently (one serial writer: the track rule)."""
    from circuit_stability.tracking import track_study

    s = track_study(a.study, a.behavior, a.scores or [], a.circuits or [], a.figures or [], a.configfile or [],
                    a.config_hash, a.seed, a.tracking_uri, a.project_dir, a.benchmarks, a.out)
    _log(f"track {a.study}: {len(s['logged'])} run(s) logged, {len(s['unchanged'])} unchanged, "
         f"{len(s['superseded'])} superseded; parent run {s['parent_run_id']} at {s['tracking_uri']}")


def cmd_sync(a: argparse.Namespace) -> None:
    """dvc pull, mark the pulled outputs up to date for Snakemake, then build only what is missing."""
    from circuit_stability.sync import sync

    extra = a.snakemake_args[1:] if a.snakemake_args[:1] == ["--"] else a.snakemake_args
    raise SystemExit(sync(a.configfile or [], extra, cores=a.cores, pull=not a.no_pull, remote=a.remote,
                          allow_missing=a.allow_missing, build=not a.no_build))


def _add_versioning_commands(sub) -> None:
    """The ``track`` and ``sync`` subcommands."""
    s = sub.add_parser("track", help="log a study's per-checkpoint results to MLflow (idempotent)")
    s.add_argument("--study", required=True, help="MLflow experiment name")
    s.add_argument("--behavior", nargs="+", required=True, help="behaviour JSONs")
    s.add_argument("--scores", nargs="*", help="scores parquet files")
    s.add_argument("--circuits", nargs="*", help="circuit JSONs")
    s.add_argument("--figures", nargs="*", help="figures, logged to the parent run")
    s.add_argument("--configfile", nargs="*", help="study config file(s), logged to the parent run")
    s.add_argument("--config-hash", default="", help="circuit_stability.config.config_hash of the study config")
    s.add_argument("--seed", type=int, default=None, help="the study seed")
    s.add_argument("--tracking-uri", default=None,
                   help="default: $MLFLOW_TRACKING_URI, else sqlite:///<absolute project dir>/mlflow.db")
    s.add_argument("--project-dir", default=".", help="project checkout (git commit, dirty flag)")
    s.add_argument("--benchmarks", default=None, help="folder of Snakemake benchmark TSVs (peak memory)")
    s.add_argument("--out", default=None, help="summary JSON (run id per model/task/step)")
    s.set_defaults(fn=cmd_track)

    s = sub.add_parser("sync", help="dvc pull, mark pulled outputs up to date (snakemake --touch), then build",
                       description="Pull-then-build: `dvc pull`; `snakemake --touch` on the outputs whose "
                       "content DVC verifies against dvc.lock; `snakemake --cores <cores>`. Arguments after `--` "
                       "go to every Snakemake call.")
    s.add_argument("--configfile", nargs="+", default=None, help="study config (passed to Snakemake)")
    s.add_argument("--cores", default="all", help="cores of the build (default: all)")
    s.add_argument("--remote", "-r", default=None, help="DVC remote (default: the configured default remote)")
    s.add_argument("--allow-missing", action="store_true", help="skip files the remote does not have")
    s.add_argument("--no-pull", action="store_true", help="skip dvc pull (mark what is present, then build)")
    s.add_argument("--no-build", action="store_true", help="stop after marking the pulled outputs up to date")
    s.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="-- then extra Snakemake arguments")
    s.set_defaults(fn=cmd_sync)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="circuit-stability", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("corpus", help="generate the embedded corpus, tokenizer and token stream")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--weights", default="{}", help="JSON: sentence-kind mixture weights")
    s.add_argument("--training", required=True, help="JSON: batch_size, context, max_steps (+ other TrainConfig)")
    s.set_defaults(fn=cmd_corpus)

    s = sub.add_parser("train", help="train one embedded suite model")
    s.add_argument("--corpus", required=True)
    s.add_argument("--out", required=True, help="models/<name>")
    s.add_argument("--shape", required=True, help="JSON: n_layers, d_model, n_heads[, d_mlp, rotary_pct]")
    s.add_argument("--training", required=True, help="JSON: TrainConfig fields + checkpoint_every, log_until")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("dataset", help="generate a task dataset")
    s.add_argument("--task", required=True)
    s.add_argument("--tokenizer", required=True, help="tokenizer folder or hub name")
    s.add_argument("--n-examples", type=int, default=None)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_dataset)

    s = sub.add_parser("behavior", help="task metric at checkpoints")
    _common(s)
    s.set_defaults(fn=cmd_behavior)

    s = sub.add_parser("scores", help="edge scores at checkpoints")
    _common(s)
    s.add_argument("--method", default="EAP-IG")
    s.add_argument("--ig-steps", type=int, default=5)
    s.add_argument("--ig-convention", default="paper")
    s.set_defaults(fn=cmd_scores)

    s = sub.add_parser("circuit", help="minimal circuits at checkpoints")
    _common(s)
    s.add_argument("--scores-dir", required=True, help="folder of step<step>.parquet score files")
    s.add_argument("--threshold", type=float, default=0.8)
    s.add_argument("--max-fraction", type=float, default=0.05)
    s.add_argument("--min-search-edges", type=int, default=1,
                   help="floor on the search's largest size, for tiny graphs (default 1: the 5%% bound alone)")
    s.add_argument("--grid-points", type=int, default=8)
    s.add_argument("--selection", default="greedy", choices=["greedy", "topn-abs", "topn-signed"])
    s.set_defaults(fn=cmd_circuit)

    s = sub.add_parser("tables", help="aggregate behaviour and circuit JSONs into parquet tables")
    s.add_argument("--behavior", nargs="+", required=True)
    s.add_argument("--circuits", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_tables)

    s = sub.add_parser("plot", help="figures from the tables")
    s.add_argument("--tables", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--models", required=True, help="comma-separated model order (smallest first)")
    s.add_argument("--dpi", type=int, default=120, help="figure resolution (dots per inch)")
    s.set_defaults(fn=cmd_plot)
    _add_versioning_commands(sub)

    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
