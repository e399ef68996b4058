"""``circuit-stability <stage> ...``: one subcommand per pipeline stage (what each Snakemake rule's shell calls).

Every stage takes explicit arguments (the library never reads the study config); an option's default is the
study-config schema's (``circuit_stability/schema.yaml``), so a stage run by hand does what the workflow does.
Outputs are written atomically through :mod:`circuit_stability.records`, so each stage is runnable and testable
without Snakemake. Run ``circuit-stability <stage> --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from circuit_stability import __version__
from circuit_stability.config import schema_default
from circuit_stability.progress import say, set_console


def _log(msg: str) -> None:
    say(f"[circuit-stability] {msg}")


def _log_to(path: str) -> None:
    """Send stderr (library warnings, loading bars, tracebacks) to the log file ``path`` and keep the console
    for the job's own lines (:func:`circuit_stability.progress.say`): one per checkpoint, progress every 30 s."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    console = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    log = open(path, "w", buffering=1)
    sys.stderr.flush()
    os.dup2(log.fileno(), sys.stderr.fileno())
    set_console(console)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    # = torch.use_deterministic_algorithms(True, warn_only=True), without its import of the torch.compile stack
    # (~3 s per job, to set an inductor flag nothing here uses)
    torch.set_deterministic_debug_mode("warn")


# ---------------------------------------------------------------- suite
def cmd_corpus(a: argparse.Namespace) -> None:
    """Generate the corpus, build the tokenizer and cut the training token stream."""
    from circuit_stability.suite.build import build_corpus

    t = json.loads(a.training)
    t0 = time.time()
    m = build_corpus(a.out, a.seed, json.loads(a.weights), t["batch_size"], t["context"], t["max_steps"])
    _log(f"corpus: {m['n_tokens']:,} tokens from {m['n_documents']:,} documents, vocabulary {m['vocab_size']}, "
         f"in {time.time() - t0:.1f}s")


def cmd_train(a: argparse.Namespace) -> None:
    """Train one suite model on the shared token stream, saving every scheduled checkpoint."""
    from circuit_stability.suite.build import build_model

    _threads(a.threads)
    t0 = time.time()
    m = build_model(a.corpus, a.out, json.loads(a.shape), json.loads(a.training), a.seed, a.threads)
    _log(f"trained {m['model']} in {time.time() - t0:.0f}s: final loss {m['final_loss']:.3f}")


def cmd_derive(a: argparse.Namespace) -> None:
    """Derive a suite member from a trained one: its checkpoints with one layer's heads permuted from a step on
    (a function-preserving, planted hand-over: src/circuit_stability/suite/derive.py)."""
    from circuit_stability.suite.build import derive_member

    p = json.loads(a.permutation)
    m = derive_member(a.source, a.out, p["layer"], p["order"], p["from_step"])
    _log(f"derived {m['model']} from {a.source}: layer {p['layer']} heads in order {p['order']} from step "
         f"{p['from_step']}")


# ---------------------------------------------------------------- tasks
def cmd_dataset(a: argparse.Namespace) -> None:
    """Generate a task's clean/corrupted dataset for a tokenizer (design §4 task parquet)."""
    from transformers import AutoTokenizer

    from circuit_stability.records import write_dataset
    from circuit_stability.tasks import make_dataset

    n = a.n_examples if a.n_examples is not None else schema_default(f"tasks.{a.task}.n_examples")
    seed = a.seed if a.seed is not None else schema_default(f"tasks.{a.task}.seed")
    tokenizer = AutoTokenizer.from_pretrained(a.tokenizer, revision=a.revision)
    write_dataset(make_dataset(a.task, tokenizer, n, seed), a.out)


def cmd_download(a: argparse.Namespace) -> None:
    """Download one hub checkpoint (model, step) into the Hugging Face cache (HF_HOME) and write its marker."""
    from circuit_stability.hub import DownloadError, download_checkpoint

    try:
        marker = download_checkpoint(a.model_name, a.step, a.out)
    except (DownloadError, ValueError, NotImplementedError) as e:
        raise SystemExit(f"circuit-stability download: {e}") from None
    _log(f"downloaded {a.model_name} step {a.step} ({marker['revision']}, commit {marker['commit'][:10]}): "
         f"{len(marker['files'])} files, {marker['bytes'] / 1e9:.2f} GB")


def cmd_evict(a: argparse.Namespace) -> None:
    """Delete a downloaded checkpoint from the Hugging Face cache (every job reading it has finished)."""
    from circuit_stability.hub import evict_checkpoint

    freed = evict_checkpoint(a.marker)
    info = json.loads(Path(a.marker).read_text())
    Path(a.out).write_text(json.dumps({**info, "freed_bytes": freed}, indent=1))
    _log(f"evicted {info['model']} step {info['step']} from the cache: {freed / 1e9:.2f} GB freed")


# ---------------------------------------------------------------- per-checkpoint stages
def _checkpoints(a: argparse.Namespace):
    """Check every (model, step) exists (before any expensive work), then yield ``(step, bridge, graph,
    dataset, prompts)`` for each step of ``--steps``, loading one checkpoint at a time."""
    from circuit_stability.attribution import Prompts
    from circuit_stability.graph import Graph
    from circuit_stability.models import load_model, resolve_checkpoint
    from circuit_stability.records import read_dataset

    steps = [int(x) for x in a.steps.split(",")]
    for step in steps:
        resolve_checkpoint(a.model_name or a.model, step, a.suite_dir)
    ds = read_dataset(a.dataset)
    _threads(a.threads)
    for step in steps:
        bridge = load_model(a.model_name or a.model, step, a.suite_dir, device=a.device, dtype=a.dtype)
        prompts = Prompts.from_dataset(ds, bridge.tokenizer.pad_token_id, next(bridge.parameters()).device)
        yield step, bridge, Graph.from_config(bridge.cfg), ds, prompts


def cmd_behavior(a: argparse.Namespace) -> None:
    """Task metric and accuracy (clean and corrupted, per split) at each checkpoint step, for one or more tasks
    (each checkpoint loaded once for all of them; --out-dir's {task} names each task's folder)."""
    from circuit_stability.attribution import Prompts
    from circuit_stability.behavior import example_metrics, summarize_behavior
    from circuit_stability.models import load_model, resolve_checkpoint
    from circuit_stability.records import BehaviorRecord, read_dataset

    if len(a.dataset) > 1 and "{task}" not in a.out_dir:
        raise SystemExit(f"--out-dir {a.out_dir!r} must contain {{task}} with {len(a.dataset)} datasets")
    steps = [int(x) for x in a.steps.split(",")]
    for step in steps:  # every input is checked before any model is loaded
        resolve_checkpoint(a.model_name or a.model, step, a.suite_dir)
    datasets = [read_dataset(d) for d in a.dataset]
    _threads(a.threads)
    for step in steps:
        bridge = load_model(a.model_name or a.model, step, a.suite_dir, device=a.device, dtype=a.dtype)
        for ds in datasets:
            prompts = Prompts.from_dataset(ds, bridge.tokenizer.pad_token_id, next(bridge.parameters()).device)
            clean, corrupted = example_metrics(bridge, prompts, a.batch_size)
            summary = summarize_behavior(clean, corrupted, ds.frame["split"].to_numpy())
            record = BehaviorRecord(model=a.model, step=step, tokens_seen=step * a.tokens_per_step, task=ds.task,
                                    metric_name=ds.metric, **summary, version=__version__)
            record.write(Path(a.out_dir.replace("{task}", ds.task)) / f"step{step}.json")
            _log(f"behaviour {a.model} {ds.task} step {step}: {ds.metric} = {summary['metric']:.3f}")


def cmd_scores(a: argparse.Namespace) -> None:
    """Edge scores of every edge (design §4 scores parquet) with EAP, EAP-IG or exact patching."""
    from circuit_stability.attribution import edge_attribution, interpolation_points, score_edges
    from circuit_stability.records import ExampleScoresRecord, ScoresRecord, example_scores_path

    if a.example_scores is not None:
        if a.method == "exact":
            raise SystemExit("--example-scores needs a gradient method (EAP or EAP-IG); exact patching gives no "
                             "per-example scores")
        if not 0.0 < a.example_scores <= 1.0:
            raise SystemExit(f"--example-scores {a.example_scores}: the stored fraction of edges must be in (0, 1]")
    for step, bridge, graph, ds, prompts in _checkpoints(a):
        t0 = time.time()
        meta = {"model": a.model, "step": step, "task": ds.task, "method": a.method,
                "ig_steps": a.ig_steps if a.method == "EAP-IG" else (1 if a.method == "EAP" else 0),
                "ig_convention": a.ig_convention, "n_examples": len(ds), "metric": ds.metric, "version": __version__,
                "seed": ds.seed, "tokens_seen": step * a.tokens_per_step}
        path = Path(a.out_dir) / f"step{step}.parquet"
        if a.example_scores is None:
            scores = score_edges(bridge, graph, prompts, a.method, a.ig_steps, a.ig_convention, a.batch_size)
        else:
            att = edge_attribution(bridge, graph, prompts, interpolation_points(a.method, a.ig_steps, a.ig_convention),
                                   a.batch_size, per_example=True)
            scores = att.scores
            ExampleScoresRecord.from_examples(graph, att.per_example, a.example_scores, meta).write(
                example_scores_path(path))
        ScoresRecord(graph, scores, meta).write(path)
        _log(f"scores {a.model} {ds.task} step {step}: {graph.n_edges} edges by {a.method} in {time.time() - t0:.1f}s")


def cmd_circuit(a: argparse.Namespace) -> None:
    """Minimal circuit by greedy selection + faithfulness search (design §5) -> circuit JSON."""
    from circuit_stability.circuits import SearchSettings, circuit_record
    from circuit_stability.records import BehaviorRecord, ScoresRecord

    search = SearchSettings(a.threshold, a.max_fraction, a.min_search_edges, a.grid_points, a.selection,
                            a.validity_margin, a.emergence_fraction)  # checks the values before any model is loaded
    criterion = _learnt_criterion(a.learnt)
    steps = [int(x) for x in a.steps.split(",")]
    loaded = {s: ScoresRecord.read(Path(a.scores_dir) / f"step{s}.parquet") for s in steps}  # fail fast

    def not_learnt(b: BehaviorRecord) -> str | None:
        return criterion.reason(b.metric, b.accuracy, b.n_examples, b.metric_name)

    here = {s: not_learnt(BehaviorRecord.read(Path(a.behavior_dir) / f"step{s}.json")) for s in steps}
    final_record = BehaviorRecord.read(a.final_behavior)
    final, final_reason = final_record.metric, not_learnt(final_record)
    for step, bridge, graph, ds, prompts in _checkpoints(a):
        t0 = time.time()
        rec = circuit_record(bridge, graph, loaded[step], prompts, search, a.batch_size, final,
                             tokens_seen=step * a.tokens_per_step, version=__version__, not_learnt=here[step],
                             final_not_learnt=final_reason)
        rec.write(Path(a.out_dir) / f"step{step}.json")
        _log(f"circuit {a.model} {ds.task} step {step}: {rec.n_edges} edges, f_paper={rec.f_paper:.3f}, "
             f"reached={rec.reached}, valid={rec.valid} in {time.time() - t0:.1f}s"
             + ("" if rec.valid else f" ({rec.invalid_reason})"))


def cmd_similarity(a: argparse.Namespace) -> None:
    """Circuit similarity of one model over its scored checkpoints, task by task (size; edge, node and weighted
    Jaccard against the previous and the final checkpoint), and the bootstrap noise floor of every valid circuit
    from its per-example scores (circuit_stability.similarity); writes one parquet (similarity.SIMILARITY_COLUMNS).
    Faithfulness of a few resampled circuits at each task's last valid checkpoint loads that checkpoint."""
    import numpy as np

    from circuit_stability.records import CircuitRecord, ExampleScoresRecord, ScoresRecord, example_scores_path, read_dataset
    from circuit_stability.similarity import bootstrap_counts, model_similarity

    steps = [int(x) for x in a.steps.split(",")]
    if a.resamples == 1 or a.resamples < 0:
        raise SystemExit(f"--resamples {a.resamples}: use 0 (no noise floor) or at least 2 (50 for a 95% interval)")
    datasets = {}
    for path in a.dataset:  # every input is read before any model is loaded
        ds = read_dataset(path)
        datasets[ds.task] = (path, ds)
    circuits, scores, graph = {}, {}, None
    for task in sorted(datasets):
        for s in steps:
            rec = ScoresRecord.read(Path(a.results) / "scores" / a.model / task / f"step{s}.parquet")
            scores[(task, s)] = rec.scores
            graph = graph or rec.graph
        # each circuit's edges checked against the model's graph here, naming the file
        circuits[task] = [CircuitRecord.read(Path(a.results) / "circuits" / a.model / task / f"step{s}.json", graph)
                          for s in steps]
        if a.resamples:
            bootstrap_counts(len(datasets[task][1].frame), a.resamples, a.seed)  # refuses too few examples here
            for c in circuits[task]:
                path = example_scores_path(Path(a.results) / "scores" / a.model / task / f"step{c.step}.parquet")
                if c.valid and not path.exists():
                    raise SystemExit(f"{path} is missing: the bootstrap needs per-example scores (the scores stage "
                                     "writes them with --example-scores)")

    def examples(task, step):
        return ExampleScoresRecord.read(example_scores_path(Path(a.results) / "scores" / a.model / task /
                                                            f"step{step}.parquet"))

    def faithfulness(task, step, masks):
        import torch

        from circuit_stability.attribution import Prompts, patched_metric
        from circuit_stability.graph import Graph
        from circuit_stability.models import load_model

        _threads(a.threads)
        bridge = load_model(a.model_name or a.model, step, a.suite_dir, device=a.device, dtype=a.dtype)
        prompts = Prompts.from_dataset(datasets[task][1], bridge.tokenizer.pad_token_id, next(bridge.parameters()).device)
        g = Graph.from_config(bridge.cfg)
        m = patched_metric(bridge, g, prompts, torch.as_tensor(masks), a.batch_size).cpu().numpy()
        model = next(c for c in circuits[task] if c.step == step).metric_model
        return m / model if model != 0 else np.full(len(m), np.nan)

    t0 = time.time()
    frame = model_similarity(graph, circuits, scores, examples if a.resamples else None, a.resamples, a.seed,
                             faithfulness, a.faithfulness_resamples)
    from circuit_stability.artifacts import write_parquet

    write_parquet(frame, a.out, {"model": a.model, "resamples": a.resamples, "seed": a.seed,
                                 "faithfulness_resamples": a.faithfulness_resamples, "version": __version__})
    beyond = int(frame["boot_beyond_stored"].sum())
    _log(f"similarity {a.model}: {len(frame)} (task, step) rows, {int(frame['valid'].sum())} valid circuits, "
         f"{a.resamples} resamples each in {time.time() - t0:.1f}s"
         + (f"; {beyond} resampled circuit(s) might reach past the stored edges: raise "
            "similarity.stored_fraction" if beyond else ""))


# ---------------------------------------------------------------- tables and figures
def cmd_tables(a: argparse.Namespace) -> None:
    """Collect per-checkpoint records into long-format parquet tables (design §4 tables)."""
    from circuit_stability.tables import write_tables

    write_tables(a.behavior, a.circuits, Path(a.out), a.emergence_fraction, a.components,
                 json.loads(a.component_thresholds) if isinstance(a.component_thresholds, str) else a.component_thresholds,
                 a.stability or [], a.similarity or [], learnt=_learnt_criterion(a.learnt),
                 derived=json.loads(a.derived) if a.derived else {})


def cmd_plot(a: argparse.Namespace) -> None:
    """Draw the figures from the tables (never recomputes anything)."""
    from circuit_stability import plots

    plots.make_figures(Path(a.tables), Path(a.out), model_order=a.models.split(","), dpi=a.dpi,
                       tokens_axis=a.tokens_axis)


# ---------------------------------------------------------------- tracking and data versioning (design §7)
def cmd_track(a: argparse.Namespace) -> None:
    """Log every (model, task, step) of a study to MLflow, idempotently (one serial writer: the track rule)."""
    from circuit_stability.tracking import track_study

    s = track_study(a.study, a.behavior, a.scores or [], a.circuits or [], a.figures or [], a.configfile or [],
                    a.config_hash, a.seed, a.tracking_uri, a.project_dir, a.benchmarks, a.out, a.audit)
    _log(f"track {a.study}: {len(s['logged'])} run(s) logged, {len(s['unchanged'])} unchanged, "
         f"{len(s['superseded'])} superseded; parent run {s['parent_run_id']} at {s['tracking_uri']}")
    _log(f"MLflow: `mlflow ui --backend-store-uri {s['tracking_uri']}`, then open "
         f"http://127.0.0.1:5000/{s['ui_route']} (the study's runs table)")


def cmd_heads(a: argparse.Namespace) -> None:
    """Head-function scores of every head at each checkpoint: induction, duplicate-token and previous-token scores on
    the standard test (a random sequence of content tokens from the whole vocabulary, repeated once), the successor
    score of the OV circuits, and with --ioi-dataset the name-mover copy and negative copy scores
    (circuit_stability.components). Prints the best head of each score per checkpoint, or every head's scores as
    JSON with --json; with --out-dir writes <out-dir>/step<step>.parquet (records.ComponentsRecord)."""
    import torch

    from circuit_stability.attribution import Prompts
    from circuit_stability.components import (content_token_ids, head_scores, ioi_head_effects, ioi_name_positions,
                                              name_attention, ov_head_scores, record_ioi, repeated_random_tokens)
    from circuit_stability.graph import head_name
    from circuit_stability.models import load_model
    from circuit_stability.records import EFFECT_SCORES, ComponentsRecord, read_dataset

    _threads(1)
    ioi = read_dataset(a.ioi_dataset) if a.ioi_dataset else None  # fail fast, before any model is loaded
    if a.out_dir and a.tokens_per_step is None:
        raise SystemExit("--out-dir needs --tokens-per-step (batch size x context of training) for tokens_seen")
    if ioi is not None and ioi.task != "ioi":
        raise SystemExit(f"--ioi-dataset {a.ioi_dataset} holds the {ioi.task!r} task; the copy scores need 'ioi'")
    rows = []
    for step in (int(x) for x in a.steps.split(",")):
        bridge = load_model(a.model_name or a.model, step, a.suite_dir, device=a.device, dtype=a.dtype)
        tokens = repeated_random_tokens(content_token_ids(bridge.tokenizer), a.length, a.batch, a.seed)
        scores = head_scores(bridge, tokens)
        movers, record = [], None
        if ioi is not None:  # one clean forward serves the copy scores, the patches and the name attention
            prompts = Prompts.from_dataset(ioi, bridge.tokenizer.pad_token_id, device=next(bridge.parameters()).device)
            positions = ioi_name_positions(ioi.frame)[0]
            record = record_ioi(bridge, prompts, positions=positions, patterns=True)
        scores.update(ov_head_scores(bridge, None if ioi is None else ioi.frame, a.top_k,
                                     None if record is None else record.resid0))
        if ioi is not None:
            effects = ioi_head_effects(bridge, prompts, positions, scores["copy"],
                                       a.name_mover_copy, a.candidate_effect, clean_record=record)
            undefined = [k for k, v in effects.items() if bool(torch.isnan(v).any())]
            if undefined:  # no name mover (query effect, test) or clean = corrupted logit difference (step 0)
                _log(f"components {a.model} step {step}: {', '.join(undefined)} undefined at this checkpoint "
                     "(no name-mover head, or equal clean and corrupted logit differences): not written")
            scores.update({k: v for k, v in effects.items() if k not in undefined})
            scores.update(name_attention(bridge, prompts, positions, record))
            movers = [head_name(l, h) for l, h in torch.nonzero(effects["name_mover"] > 0).tolist()]
        if a.out_dir:
            meta = {"model": a.model, "step": step, "tokens_seen": step * a.tokens_per_step, "version": __version__,
                    "length": a.length, "batch": a.batch, "seed": a.seed, "top_k": a.top_k,
                    "ioi_dataset": Path(a.ioi_dataset).name if a.ioi_dataset else None,
                    "name_mover_copy": a.name_mover_copy, "candidate_effect": a.candidate_effect,
                    "name_movers": ",".join(movers)}
            ComponentsRecord({k: v.numpy() for k, v in scores.items()}, meta).write(
                Path(a.out_dir) / f"step{step}.parquet")
        row = {"model": a.model, "step": step}
        for name, t in scores.items():
            best = torch.argmin(t) if name in ("direct_effect", "query_effect") else torch.argmax(t)  # most negative
            layer, head = divmod(int(best), t.shape[1])
            row[name] = {"best": head_name(layer, head), "score": round(float(t.flatten()[best]), 4),
                         "per_head": [[round(float(x), 4) for x in r] for r in t]}
        rows.append(row)
        if not a.json:  # a workflow job (--out-dir) says it on the job's console line, a person at the terminal
            line = f"{a.model} step {step}: " + ", ".join(f"{n} {row[n]['score']:.3f} ({row[n]['best']})"
                                                          for n in scores)
            _log(f"components {line}") if a.out_dir else print(line)
    if a.json:
        print(json.dumps(rows, indent=1))


def cmd_stability(a: argparse.Namespace) -> None:
    """Path patching of every head into the IOI receiver sets (logits; name-mover queries; S-inhibition values) in
    both forms, at each checkpoint whose IOI circuit is valid (circuit_stability.stability); writes
    <out-dir>/step<step>.parquet (records.StabilityRecord). Checkpoints without a valid circuit, and every checkpoint
    of a model with fewer than three layers (no model is loaded then), get a file with no rows and the reason."""
    import pandas as pd

    from circuit_stability.attribution import Prompts
    from circuit_stability.models import load_model
    from circuit_stability.records import STABILITY_COLUMNS, CircuitRecord, ComponentsRecord, StabilityRecord, read_dataset
    from circuit_stability.models import resolve_checkpoint
    from circuit_stability.stability import FORMS, MIN_LAYERS, checkpoint_effects

    _threads(1)
    forms = tuple(a.forms)
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise SystemExit(f"unknown path-patching form(s) {bad}; valid: {list(FORMS)}")
    ioi = read_dataset(a.ioi_dataset)  # every input is read before any model is loaded
    if ioi.task != "ioi":
        raise SystemExit(f"--ioi-dataset {a.ioi_dataset} holds the {ioi.task!r} task; path patching needs 'ioi'")
    steps = [int(x) for x in a.steps.split(",")]
    first = resolve_checkpoint(a.model_name or a.model, steps[0], a.suite_dir)
    if first.is_local:  # (Hugging Face's config classes map each family's own key, e.g. GPT-2's n_layer)
        from transformers import AutoConfig

        n_layers = AutoConfig.from_pretrained(first.path).num_hidden_layers
    else:
        n_layers = None
    circuits = {s: CircuitRecord.read(Path(a.circuits_dir) / f"step{s}.json") for s in steps}
    components = {s: ComponentsRecord.read(Path(a.components_dir) / f"step{s}.parquet") for s in steps}
    settings = {"copy_threshold": a.copy_threshold, "negative_copy_threshold": a.negative_copy_threshold,
                "candidate_effect": a.candidate_effect}
    for step in steps:
        c = circuits[step]
        meta = {"model": a.model, "step": step, "tokens_seen": step * a.tokens_per_step, "version": __version__,
                "valid": c.valid, "reason": None, "undefined": {}, "receivers": {}, "n_examples": len(ioi.frame),
                "ioi_dataset": Path(a.ioi_dataset).name, **settings}
        if n_layers is not None and n_layers < MIN_LAYERS:
            meta["reason"] = (f"{a.model} has {n_layers} layer(s): the IOI algorithm's three stages (induction or "
                              f"duplicate-token -> S-inhibition -> name-mover heads) need at least {MIN_LAYERS}")
        elif not c.valid:
            meta["reason"] = f"IOI circuit not valid: {c.invalid_reason}"
        if meta["reason"]:
            StabilityRecord(pd.DataFrame(columns=STABILITY_COLUMNS), meta).write(Path(a.out_dir) / f"step{step}.parquet")
            _log(f"stability {a.model} step {step}: {meta['reason']}; no path patching")
            continue
        bridge = load_model(a.model_name or a.model, step, a.suite_dir, device=a.device, dtype=a.dtype)
        prompts = Prompts.from_dataset(ioi, bridge.tokenizer.pad_token_id, device=next(bridge.parameters()).device)
        heads = {n for n in c.nodes if n.startswith("a")}
        frame, found = checkpoint_effects(bridge, prompts, components[step].scores, heads, forms=forms,
                                          max_rows=a.max_rows, **settings)
        meta.update(found)
        StabilityRecord(frame, meta).write(Path(a.out_dir) / f"step{step}.parquet")
        sets = ", ".join(sorted(set(frame["receivers"]))) or "none"
        missing = "; ".join(f"{k}: {v}" for k, v in found["undefined"].items())
        _log(f"stability {a.model} step {step}: receiver sets {sets}" + (f" (undefined: {missing})" if missing else ""))


def cmd_check(a: argparse.Namespace) -> None:
    """List every missing, corrupt or stale artefact of the study (exit 1 if any); changes nothing."""
    from circuit_stability.check import check_study, report
    from circuit_stability.config import ConfigError, load_config, validate_config

    try:  # a config error names the file, line and key (Snakemake's own YAML error names none of them)
        for cf in a.configfile or ["config/config.yaml"]:
            validate_config(load_config(cf))
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    problems = check_study(["--configfile", *a.configfile] if a.configfile else [])
    print(report(problems))
    raise SystemExit(1 if problems else 0)


def cmd_sync(a: argparse.Namespace) -> None:
    """dvc pull, mark the pulled outputs up to date for Snakemake, then build only what is missing."""
    from circuit_stability.sync import sync

    extra = a.snakemake_args[1:] if a.snakemake_args[:1] == ["--"] else a.snakemake_args
    raise SystemExit(sync(a.configfile or [], extra, cores=a.cores, pull=not a.no_pull, remote=a.remote,
                          allow_missing=a.allow_missing, build=not a.no_build))


def cmd_audit(a: argparse.Namespace) -> None:
    """Audit one model's checkpoints before analysing them (circuit_stability.audit): the file level compares the
    weight files' SHA-256 of every checkpoint (two steps serving the same weights; early steps serving the final
    step's), from the hub's metadata without downloading any weights, or from the files of a local suite model;
    with --tensors (a local model) also the tensor level (a digest per checkpoint, relative L2 distances to the
    first, the final and the neighbouring checkpoints, trajectory breaks); with --lineage-with (a local model) the
    lineage of its early checkpoints against other seeds' step 0. Prints the flagged checkpoints (all with
    --all) and a summary; exit 1 if any checkpoint is flagged, 2 if the hub cannot be reached. With --out (the
    workflow's audit job) the table is written there and the exit status is 0 once it is: the study's integrity
    policy is applied to it by the workflow (hub.integrity, suite.integrity)."""
    import pandas as pd

    from circuit_stability.audit import (file_level_audit, hub_weight_hashes, lineage_audit, local_weight_hashes,
                                         tensor_level_audit)
    from circuit_stability.checkpoints import pythia_schedule
    from circuit_stability.models import HUB_PREFIX, checkpoint_revisions, hub_family, hub_steps, local_steps

    if "/" in a.model:  # a hub repository
        if a.tensors or a.lineage_with:
            raise SystemExit("--tensors and --lineage-with read the weights: they audit a local model (a hub model's "
                             "checkpoints are audited at the file level, from the hub's metadata)")
        try:
            family = hub_family(a.model)
        except (ValueError, NotImplementedError) as e:
            raise SystemExit(str(e)) from None
        if family != "pythia" and not a.steps:
            raise SystemExit(f"{a.model}: give --steps (only Pythia's checkpoints are known offline; "
                             f"`circuit-stability checkpoints {a.model} --steps` lists this repository's)")
        steps = hub_steps(a.model, a.steps or pythia_schedule(), warn=lambda m: print(m))
        revisions: dict[int, str] = {}
        try:
            revisions = checkpoint_revisions(a.model, steps)  # (OLMo's, whose names carry tokens, from the hub)
            hashes = hub_weight_hashes(a.model, revisions)
        except LookupError as e:
            raise SystemExit(str(e)) from None
        except ConnectionError as e:
            which = (f"{len(revisions)} revisions of {a.model} ({revisions[steps[0]]} … {revisions[steps[-1]]})"
                     if revisions else f"the revisions of {len(steps)} checkpoints of {a.model} (steps {steps[0]} … "
                     f"{steps[-1]})")
            print(f"{e}\nnot audited: the file-level audit would have compared the weight files' SHA-256 (git LFS "
                  f"metadata, no weights downloaded) of {which}: steps serving the same weights, and steps serving "
                  "the final step's")
            raise SystemExit(2) from None
        table = file_level_audit(a.model, hashes, final_step=max(steps))
    else:
        found = local_steps(a.suite_dir, a.model)
        steps = a.steps or found
        if a.steps and set(a.steps) - set(found):
            raise SystemExit(f"{a.model}: no checkpoint of step(s) {sorted(set(a.steps) - set(found))} in "
                             f"{Path(a.suite_dir) / a.model} (steps there: {found})")
        if not steps:
            have = sorted(p.name for p in Path(a.suite_dir).iterdir() if p.is_dir()) if Path(a.suite_dir).is_dir() else []
            raise SystemExit(f"no checkpoints of {a.model!r} in {a.suite_dir!r} (models there: {have}); a hub model "
                             f"is named {HUB_PREFIX}<size>")
        folders = {s: Path(a.suite_dir) / a.model / f"step{s}" for s in steps}
        table = file_level_audit(a.model, local_weight_hashes(folders))
        if a.tensors:
            table = pd.concat([table, tensor_level_audit(a.model, folders)], ignore_index=True)
        if a.lineage_with:
            others = {m: {0: Path(a.suite_dir) / m / "step0"} for m in a.lineage_with}
            table = pd.concat([table, lineage_audit({a.model: folders, **others})], ignore_index=True)
    if a.out:
        from circuit_stability.artifacts import write_parquet

        write_parquet(table, a.out)
    flagged = table[table["flag"] != ""]
    shown = table if a.all else flagged
    with pd.option_context("display.max_colwidth", 160, "display.width", 200):
        if len(shown):
            print(shown[["step", "level", "flag", "reason"]].to_string(index=False))
    counts = ", ".join(f"{k} {v}" for k, v in flagged.groupby("flag")["step"].nunique().items()) or "none"
    levels = " and ".join(sorted(set(table["level"])))
    print(f"{a.model}: {len(steps)} checkpoints audited ({levels} level); checkpoints flagged: {counts}")
    raise SystemExit(1 if len(flagged) and not a.out else 0)


def cmd_checkpoints(a: argparse.Namespace) -> None:
    """List a hub repository's checkpoints (circuit_stability.revisions): its branches and tags from one
    list_repo_refs request, each revision name turned into a training step and the tokens seen by its family's
    scheme (Pythia, CRFM GPT-2, OLMo, OLMo 2, SmolLM2, Amber); --every k keeps every k-th, --log n about n
    log-spaced ones (the first and last always). Prints one line per checkpoint (revision, step, tokens seen,
    commit), or with --steps only the comma-separated steps, for a config's analysis.steps. Exits 2 if the hub
    cannot be reached."""
    from circuit_stability.revisions import every_kth, list_checkpoints, log_spaced

    try:
        found = list_checkpoints(a.repo, a.tokens_per_step)
    except ValueError as e:  # no scheme for this repository: say which families have one
        raise SystemExit(str(e)) from None
    except ConnectionError as e:
        _log(str(e))
        raise SystemExit(2) from None
    if a.every:
        found = every_kth(found, a.every)
    if a.log:
        found = log_spaced(found, a.log)
    if a.steps:
        print(",".join(str(c.step) for c in found))
        return
    for c in found:
        tokens = "unknown" if c.tokens_seen is None else f"{c.tokens_seen:,}"
        print(f"{c.revision}\tstep {c.step:,}\ttokens {tokens}\t{c.commit[:12]}")
    _log(f"{a.repo}: {len(found)} checkpoint(s)")


def cmd_view(a: argparse.Namespace) -> None:
    """The circuit over training, interactive (circuit_stability.views): one self-contained HTML page for a model,
    with each task's minimal circuit at every scored checkpoint behind a step slider, nodes by layer and head,
    edges sized by |EAP-IG score|, heads coloured by role, invalid checkpoints grey with their reason."""
    from circuit_stability.artifacts import atomic_path
    from circuit_stability.views import circuit_view_page, collect_views, task_figure

    views, n_layers, n_heads = collect_views(a.model, a.tasks, a.steps, Path(a.circuits_dir), Path(a.scores_dir),
                                             Path(a.tables))
    page = circuit_view_page(a.model, {t: task_figure(a.model, t, v, n_layers, n_heads) for t, v in views.items()})
    with atomic_path(a.out) as tmp:
        tmp.write_text(page)
    _log(f"view {a.model}: {len(views)} task(s) x {len(a.steps)} checkpoint(s) -> {a.out}")


# ---------------------------------------------------------------- argument parsing
def _steps_list(value: str) -> list[int]:
    """``--steps 0,512,1000`` as a sorted list of distinct checkpoint steps (argparse reports the bad value)."""
    try:
        steps = sorted({int(x) for x in value.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected comma-separated checkpoint steps, e.g. 0,512,1000") from None
    if not steps or steps[0] < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: checkpoint steps are integers >= 0")
    return steps


def _option(p: argparse.ArgumentParser, flag: str, key: str, help: str, **kw) -> None:
    """An option whose default is the schema's default of config key ``key``, shown in ``--help``."""
    p.add_argument(flag, default=schema_default(key), help=f"{help} (default: %(default)s; config key {key})", **kw)


def _model_options(p: argparse.ArgumentParser) -> None:
    """--model, --model-name, --suite-dir: which model's checkpoints a stage loads."""
    p.add_argument("--model", required=True, help="model key (suite member, or short name of a hub model)")
    p.add_argument("--model-name", default=None, help="hub name, e.g. EleutherAI/pythia-160m (default: --model)")
    p.add_argument("--suite-dir", default="models", help="folder of the local suite (default: %(default)s)")


def _learnt_criterion(value):
    """The ``--learnt`` option (a JSON string, or the schema's default mapping) as a
    :class:`~circuit_stability.learnt.LearntCriterion`; exits naming the bad value."""
    from circuit_stability.learnt import LearntCriterion

    try:
        return LearntCriterion.from_config(json.loads(value) if isinstance(value, str) else value)
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--learnt {value}: {e} (expected JSON like "
                         '\'{"p_value": 0.01, "floors": {"logit_diff": 1.0, "prob_diff": 0.2}}\')')


def _learnt_option(p: argparse.ArgumentParser) -> None:
    _option(p, "--learnt", "analysis.learnt", "JSON: when a task counts as learnt at a checkpoint (binomial test "
            "of the accuracy against chance at p < p_value, and the metric >= its floor)")


def _dtype_option(p: argparse.ArgumentParser) -> None:
    from circuit_stability.models import DTYPES

    _option(p, "--dtype", "analysis.dtype", "model dtype; scores, effects and metrics are computed in float32",
            choices=list(DTYPES))


def _checkpoint_options(p: argparse.ArgumentParser, many_datasets: bool = False) -> None:
    _model_options(p)
    if many_datasets:
        p.add_argument("--dataset", nargs="+", required=True, help="task dataset parquet(s), each checkpoint loaded "
                       "once for all of them; with several, --out-dir must contain {task}")
    else:
        p.add_argument("--dataset", required=True, help="task dataset parquet")
    p.add_argument("--tokens-per-step", type=int, required=True, help="batch size x context of training")
    p.add_argument("--steps", required=True, help="comma-separated checkpoint steps (one process, loaded in turn)")
    p.add_argument("--out-dir", required=True, help="writes <out-dir>/step<step>.<ext> for each step")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    _dtype_option(p)
    _option(p, "--batch-size", "analysis.batch_size", "examples per forward pass", type=int)
    _option(p, "--threads", "threads", "torch threads", type=int)


def _versioning_commands(sub) -> None:
    s = sub.add_parser("track", help="log a study's per-checkpoint results to MLflow (idempotent)",
                       description=cmd_track.__doc__)
    s.add_argument("--study", required=True, help="MLflow experiment name")
    s.add_argument("--behavior", nargs="+", required=True, help="behaviour JSONs")
    s.add_argument("--scores", nargs="*", help="scores parquet files")
    s.add_argument("--circuits", nargs="*", help="circuit JSONs")
    s.add_argument("--figures", nargs="*", help="figures, logged to the parent run")
    s.add_argument("--configfile", nargs="*", help="study config file(s), logged to the parent run")
    s.add_argument("--config-hash", default="",
                   help="circuit_stability.config.config_hash of the study config (default: none)")
    s.add_argument("--seed", type=int, default=None, help="the study seed")
    s.add_argument("--tracking-uri", default=None,
                   help="default: $MLFLOW_TRACKING_URI, else sqlite:///<absolute project dir>/mlflow.db")
    s.add_argument("--project-dir", default=".", help="project checkout (git commit, dirty flag; default: %(default)s)")
    s.add_argument("--benchmarks", default=None, help="folder of Snakemake benchmark TSVs (peak memory)")
    s.add_argument("--out", default=None, help="summary JSON (run id per model/task/step)")
    s.add_argument("--audit", default=None, help="the study's checkpoint-audit table, logged to the parent run")
    s.set_defaults(fn=cmd_track)

    s = sub.add_parser("heads", help="head-function scores of every head (induction, duplicate-token, previous-token, "
                       "successor, copy, negative copy)",
                       description=cmd_heads.__doc__)
    s.add_argument("--model", required=True, help="model key (suite member, or short name of a hub model)")
    s.add_argument("--model-name", default=None, help="hub name, e.g. EleutherAI/pythia-160m (default: --model)")
    s.add_argument("--suite-dir", default="models", help="folder of the local suite (default: %(default)s)")
    s.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    _option(s, "--length", "components.length", "distinct content tokens in the repeated block (the paper: 100, "
            "with Pythia's vocabulary)", type=int)
    _option(s, "--batch", "components.batch", "random sequences, averaged", type=int)
    _option(s, "--seed", "components.seed", "seed of the random sequences", type=int)
    _option(s, "--top-k", "components.top_k", "a name counts as copied when it is among this many top OV logits "
            "(Wang et al.: 5)", type=int)
    s.add_argument("--ioi-dataset", default=None, help="IOI task parquet: adds the copy and negative copy scores, "
                   "direct effects, name movers and the S-inhibition test")
    _option(s, "--name-mover-copy", "components.thresholds.copy", "copy score (percent) above which a head with a "
            "negative direct effect is a name mover (the paper: 10)", type=float)
    _option(s, "--candidate-effect", "components.candidate_effect", "S-inhibition candidates: normalised effect "
            "through the name movers' queries below minus this (the paper: 0.001)", type=float)
    s.add_argument("--tokens-per-step", type=int, default=None, help="batch size x context of training, for the "
                   "tokens_seen of --out-dir's files (required with --out-dir)")
    s.add_argument("--out-dir", default=None, help="write <out-dir>/step<step>.parquet (every head, every score)")
    s.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    s.add_argument("--json", action="store_true", help="print every head's scores as JSON")
    _dtype_option(s)
    s.set_defaults(fn=cmd_heads)

    s = sub.add_parser("similarity", help="circuit similarity over checkpoints and its bootstrap noise floor, one "
                       "model", description=cmd_similarity.__doc__)
    _model_options(s)
    s.add_argument("--steps", required=True, help="comma-separated scored checkpoint steps")
    s.add_argument("--dataset", nargs="+", required=True, help="task dataset parquet(s): the tasks compared")
    s.add_argument("--results", required=True, help="folder holding scores/ and circuits/, e.g. results")
    s.add_argument("--out", required=True, help="output parquet")
    s.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    _option(s, "--resamples", "similarity.resamples", "bootstrap resamples per checkpoint (0: none)", type=int)
    _option(s, "--seed", "similarity.seed", "resampling seed", type=int)
    _option(s, "--faithfulness-resamples", "similarity.faithfulness_resamples",
            "resampled circuits evaluated for faithfulness at each task's last valid checkpoint", type=int)
    _option(s, "--batch-size", "analysis.batch_size", "examples per forward pass", type=int)
    _option(s, "--threads", "threads", "torch threads", type=int)
    _dtype_option(s)
    s.set_defaults(fn=cmd_similarity)

    s = sub.add_parser("stability", help="path patching of every head into the IOI receiver sets, both forms "
                       "(the algorithm-stability metrics' effects)", description=cmd_stability.__doc__)
    _model_options(s)
    s.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    s.add_argument("--ioi-dataset", required=True, help="IOI task parquet")
    s.add_argument("--components-dir", required=True, help="folder of the model's components step<step>.parquet")
    s.add_argument("--circuits-dir", required=True, help="folder of the model's IOI circuit step<step>.json")
    _option(s, "--copy-threshold", "components.thresholds.copy", "copy score (percent) of a name mover", type=float)
    _option(s, "--negative-copy-threshold", "components.thresholds.negative_copy",
            "negative copy score (percent) of a negative name mover", type=float)
    _option(s, "--candidate-effect", "components.candidate_effect", "D class: effect below minus this", type=float)
    _option(s, "--forms", "stability.forms", "comma-separated path-patching forms", type=lambda v: v.split(","))
    _option(s, "--max-rows", "stability.max_rows", "batch rows (senders x prompts) per forward", type=int)
    s.add_argument("--tokens-per-step", type=int, required=True, help="batch size x context of training")
    s.add_argument("--out-dir", required=True, help="write <out-dir>/step<step>.parquet")
    s.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    _dtype_option(s)
    s.set_defaults(fn=cmd_stability)

    s = sub.add_parser("audit", help="audit a model's checkpoints: duplicates, final weights under early labels, "
                       "trajectory breaks", description=cmd_audit.__doc__)
    s.add_argument("model", help="a suite member (under --suite-dir) or a hub name, e.g. EleutherAI/pythia-2.8b "
                                 "(another family's repository needs --steps)")
    s.add_argument("--suite-dir", default="models", help="folder of the local suite (default: %(default)s)")
    s.add_argument("--tensors", action="store_true", help="a local model: also the tensor-level audit")
    s.add_argument("--all", action="store_true", help="print every checkpoint's row, not only the flagged ones")
    s.add_argument("--steps", type=_steps_list, default=None,
                   help="comma-separated checkpoint steps to audit (default: every checkpoint of the model)")
    s.add_argument("--lineage-with", type=lambda v: [m for m in v.split(",") if m], default=None,
                   help="comma-separated members of the same shape trained from other weight seeds (under "
                        "--suite-dir): the lineage audit checks that each early checkpoint (steps 1-512) is closer to "
                        "the model's own step 0 than to theirs")
    s.add_argument("--out", default=None, help="write the table to this parquet file (then exit 0 once written)")
    s.set_defaults(fn=cmd_audit)

    s = sub.add_parser("checkpoints", help="list a hub repository's checkpoints: revision, step, tokens seen",
                       description=cmd_checkpoints.__doc__)
    s.add_argument("repo", help="a hub repository, e.g. allenai/OLMo-1B-0724-hf or stanford-crfm/alias-gpt2-small-x21")
    s.add_argument("--every", type=int, default=None, help="keep every k-th checkpoint (the first and last always)")
    s.add_argument("--log", type=int, default=None, help="keep about n checkpoints log-spaced in step")
    s.add_argument("--tokens-per-step", type=int, default=None,
                   help="tokens per optimiser step, for a family whose scheme does not publish it (SmolLM2, Amber)")
    s.add_argument("--steps", action="store_true", help="print only the comma-separated steps")
    s.set_defaults(fn=cmd_checkpoints)

    s = sub.add_parser("view", help="the circuit over training, interactive: one HTML page per model",
                       description=cmd_view.__doc__)
    s.add_argument("--model", required=True, help="the model's name (its folder under results/)")
    s.add_argument("--tasks", required=True, type=lambda v: v.split(","), help="comma-separated tasks")
    s.add_argument("--steps", required=True, type=_steps_list, help="comma-separated scored checkpoint steps")
    s.add_argument("--circuits-dir", required=True, help="the model's circuits: <dir>/<task>/step<step>.json")
    s.add_argument("--scores-dir", required=True, help="the model's EAP-IG scores: <dir>/<task>/step<step>.parquet")
    s.add_argument("--tables", required=True, help="the study's tables folder (roles, circuits, behavior)")
    s.add_argument("--out", required=True, help="the HTML page to write")
    s.set_defaults(fn=cmd_view)

    s = sub.add_parser("check", help="list every missing, corrupt or stale artefact of a study (changes nothing)",
                       description=cmd_check.__doc__)
    s.add_argument("--configfile", nargs="+", default=None,
                   help="study config (default: the Snakefile's, config/config.yaml)")
    s.set_defaults(fn=cmd_check)

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


def build_parser() -> argparse.ArgumentParser:
    """The ``circuit-stability`` argument parser (every stage a subcommand)."""
    from circuit_stability.attribution import IG_CONVENTIONS, METHODS
    from circuit_stability.circuits import SELECTIONS
    from circuit_stability.tasks import TASKS

    p = argparse.ArgumentParser(prog="circuit-stability", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--log", default=None, metavar="FILE",
                   help="write stderr to FILE and show only the job's own lines on the console (what the workflow "
                        "does; default: everything on stderr)")
    sub = p.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("corpus", help="generate the embedded corpus, tokenizer and token stream",
                       description=cmd_corpus.__doc__)
    s.add_argument("--out", required=True, help="corpus folder")
    _option(s, "--seed", "suite.corpus.seed", "grammar seed", type=int)
    s.add_argument("--weights", default=json.dumps(schema_default("suite.corpus.weights")),
                   help="JSON: sentence-kind mixture weights (default: %(default)s; config key suite.corpus.weights)")
    s.add_argument("--training", required=True, help="JSON with batch_size, context, max_steps")
    s.set_defaults(fn=cmd_corpus)

    s = sub.add_parser("train", help="train one embedded suite model", description=cmd_train.__doc__)
    s.add_argument("--corpus", required=True, help="corpus folder")
    s.add_argument("--out", required=True, help="models/<name>")
    s.add_argument("--shape", required=True, help="JSON: n_layers, d_model, n_heads, d_mlp, rotary_pct (and "
                                                  "architecture, n_kv_heads when not GPT-NeoX)")
    s.add_argument("--training", required=True,
                   help="JSON: batch_size, context, max_steps, lr, warmup_steps, min_lr_ratio, decay_steps, "
                        "weight_decay, checkpoint_every, log_until")
    s.add_argument("--seed", type=int, required=True, help="initialisation seed (config key seed)")
    _option(s, "--threads", "threads", "torch threads", type=int)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("derive", help="derive a suite member by a head permutation", description=cmd_derive.__doc__)
    s.add_argument("--source", required=True, help="models/<trained member>")
    s.add_argument("--out", required=True, help="models/<derived member>")
    s.add_argument("--permutation", required=True,
                   help='JSON: {"layer": L, "order": [new head i = source head order[i], ...], "from_step": S}')
    s.set_defaults(fn=cmd_derive)

    s = sub.add_parser("dataset", help="generate a task dataset", description=cmd_dataset.__doc__)
    s.add_argument("--task", required=True, choices=sorted(TASKS), help="registered task")
    s.add_argument("--tokenizer", required=True, help="tokenizer folder or hub name")
    s.add_argument("--revision", default=None, help="hub revision of --tokenizer (e.g. step143000)")
    s.add_argument("--n-examples", type=int, default=None, help="default: the task's tasks.<task>.n_examples")
    s.add_argument("--seed", type=int, default=None, help="default: the task's tasks.<task>.seed")
    s.add_argument("--out", required=True, help="dataset parquet")
    s.set_defaults(fn=cmd_dataset)

    s = sub.add_parser("download", help="download one hub checkpoint into HF_HOME", description=cmd_download.__doc__)
    s.add_argument("--model-name", required=True, help="hub name, e.g. EleutherAI/pythia-160m or "
                                                      "stanford-crfm/alias-gpt2-small-x21")
    s.add_argument("--step", required=True, type=int, help="checkpoint step (its family's revision: Pythia "
                                                           "step<STEP>, CRFM checkpoint-<STEP>, ...)")
    s.add_argument("--out", required=True, help="marker JSON, written once every file is in the cache")
    s.set_defaults(fn=cmd_download)

    s = sub.add_parser("evict", help="delete a downloaded checkpoint from HF_HOME", description=cmd_evict.__doc__)
    s.add_argument("--marker", required=True, help="the download's marker JSON")
    s.add_argument("--out", required=True, help="eviction record (JSON)")
    s.set_defaults(fn=cmd_evict)

    s = sub.add_parser("behavior", help="task metric at checkpoints", description=cmd_behavior.__doc__)
    _checkpoint_options(s, many_datasets=True)
    s.set_defaults(fn=cmd_behavior)

    s = sub.add_parser("scores", help="edge scores at checkpoints", description=cmd_scores.__doc__)
    _checkpoint_options(s)
    _option(s, "--method", "analysis.method", "edge-scoring method", choices=list(METHODS))
    _option(s, "--ig-steps", "analysis.ig_steps", "m, the EAP-IG interpolation points", type=int)
    _option(s, "--ig-convention", "analysis.ig_convention", "EAP-IG points: paper k/m, k=1..m; code k=0..m-1",
            choices=list(IG_CONVENTIONS))
    s.add_argument("--example-scores", type=float, default=None, metavar="FRACTION",
                   help="also write step<step>.examples.parquet: each example's scores of this top fraction of edges "
                        "by |mean score| (config key similarity.stored_fraction; default: not written)")
    s.set_defaults(fn=cmd_scores)

    s = sub.add_parser("circuit", help="minimal circuits at checkpoints", description=cmd_circuit.__doc__)
    _checkpoint_options(s)
    s.add_argument("--scores-dir", required=True, help="folder of step<step>.parquet score files")
    _option(s, "--threshold", "circuits.threshold", "f_paper a circuit must reach", type=float)
    _option(s, "--max-fraction", "circuits.max_fraction", "largest size searched, as a fraction of edges",
            type=float)
    _option(s, "--min-search-edges", "circuits.min_search_edges", "floor on the largest size searched", type=int)
    _option(s, "--grid-points", "circuits.grid_points", "log-spaced sizes of the first pass", type=int)
    _option(s, "--selection", "circuits.selection", "how edges are chosen", choices=sorted(SELECTIONS))
    s.add_argument("--final-behavior", required=True,
                   help="behaviour JSON of the study's last checkpoint (the validity rule's reference metric)")
    s.add_argument("--behavior-dir", required=True,
                   help="folder of the model's step<step>.json behaviour records of this task (is it learnt there)")
    _learnt_option(s)
    _option(s, "--validity-margin", "circuits.validity_margin",
            "valid only if m(M) - m(empty) > margin x |m(M)| (and m(M) > 0, the task emerged)", type=float)
    _option(s, "--emergence-fraction", "analysis.emergence_fraction",
            "valid only from the first checkpoint with m(M) >= this x the last checkpoint's", type=float)
    s.set_defaults(fn=cmd_circuit)

    s = sub.add_parser("tables", help="aggregate behaviour, circuit and components records into parquet tables",
                       description=cmd_tables.__doc__)
    s.add_argument("--behavior", nargs="+", required=True, help="behaviour JSONs")
    s.add_argument("--circuits", nargs="+", required=True, help="circuit JSONs")
    s.add_argument("--components", nargs="*", default=[], help="components parquets (results/components/; default: "
                   "none, for a study without them)")
    s.add_argument("--stability", nargs="*", default=[], help="stability parquets (results/stability/; default: "
                   "none, for a study without them)")
    s.add_argument("--similarity", nargs="*", default=[], help="per-model similarity parquets (results/similarity/; "
                   "default: none)")
    s.add_argument("--out", required=True, help="tables folder")
    _option(s, "--emergence-fraction", "analysis.emergence_fraction",
            "onset: first checkpoint with metric >= this x the last checkpoint's", type=float)
    _option(s, "--component-thresholds", "components.thresholds",
            "JSON: each head-function score's threshold for the component emergence table")
    _learnt_option(s)
    s.add_argument("--derived", default=None, help='JSON: the derived members (planted controls), e.g. {"m-permuted": '
                   '{"source": "m", "layer": 1, "order": [1, 0], "from_step": 100}} (default: none)')
    s.set_defaults(fn=cmd_tables)

    s = sub.add_parser("plot", help="figures from the tables", description=cmd_plot.__doc__)
    s.add_argument("--tables", required=True, help="tables folder")
    s.add_argument("--out", required=True, help="figures folder")
    s.add_argument("--models", required=True, help="comma-separated model order (smallest first)")
    _option(s, "--dpi", "plots.dpi", "figure resolution (dots per inch)", type=int)
    _option(s, "--tokens-axis", "plots.tokens_axis", "tokens-seen axis of Figures 1-3 and the circuit sizes: log "
            "(log-spaced checkpoints) or linear (evenly spaced ones)", choices=["log", "linear"])
    s.set_defaults(fn=cmd_plot)
    _versioning_commands(sub)
    return p


# The commands that load a model: each claims a GPU slot first (circuit_stability.devices) and exits with
# EX_TEMPFAIL when the device runs out of memory, for Snakemake to retry with half the batch (analysis.retries).
MODEL_COMMANDS = {"behavior", "scores", "circuit", "heads", "stability", "similarity"}
EXIT_OUT_OF_MEMORY = 75


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory: CUDA's ``torch.OutOfMemoryError`` or the CPU
    allocator's ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory")."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.log:
        _log_to(args.log)
    if args.stage not in MODEL_COMMANDS:
        args.fn(args)
        return
    from circuit_stability.devices import claim_gpu

    slot = claim_gpu(say=_log)
    if slot is not None:
        _log(f"GPU slot: device {slot.device} (CUDA_VISIBLE_DEVICES={slot.device}; waited {slot.waited:.1f}s)")
    try:
        args.fn(args)
    except Exception as e:
        if not out_of_memory(e):
            raise
        batch = getattr(args, "batch_size", None)
        _log(f"out of memory at batch size {batch} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); a retry "
             f"(analysis.retries) runs with half the batch size, twice the memory and time")
        raise SystemExit(EXIT_OUT_OF_MEMORY) from None


if __name__ == "__main__":
    main()
