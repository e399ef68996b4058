"""MLflow tracking (design §7): one experiment per study, one run per (model, task, step), one parent run per
pipeline invocation that logged something.

SQLite loses runs under parallel writers ("database is locked"), so the per-checkpoint jobs never talk to
MLflow. One serial Snakemake rule, ``track``, runs after them and calls :func:`track_study`, which reads the
artefacts they wrote (behaviour JSON, scores parquet metadata, circuit JSON, Snakemake benchmark files) and
logs them. It is idempotent: each checkpoint's run is found again by its tags (study, model, task, step);
when the artefacts' content is unchanged (same MD5, the hash DVC stores for the file) nothing is logged,
and when a job was re-run and its artefacts changed, a new run is logged and the old one is tagged
``cs.superseded_by`` and moved to MLflow's "deleted" lifecycle stage (hidden in the UI, kept in the database;
``mlflow gc`` purges it). The MLflow plumbing (database location, the writer lock, retries) is
:mod:`circuit_stability.mlflow_store`; this module decides what is logged.

Run contents. Params: study, model, task, step, method, seed, config hash, git commit and dirty flag (plus the
analysis settings found in the artefacts). Metrics, logged with ``step=`` the training step so MLflow plots
them over training: task metric, accuracy, faithfulness (f_paper, f_norm), circuit size, and the wall seconds and
peak RSS of the scores and circuit jobs (Snakemake's benchmark files; for a job that computed a chunk of
checkpoints, the whole job's figures).
Tags: the same identifiers, and the MD5 of each artefact. Artefacts: the behaviour and circuit JSON (small)
and a pointer to the scores parquet (large: path, MD5, size, how to ``dvc pull`` it). The parent run holds the
figures, the config file(s) and every model's curves over training as metric histories.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from circuit_stability.artifacts import write_json
from circuit_stability.mlflow_store import (CHECKPOINT, KIND, PARENT, PIPELINE, RetryingClient, active_checkpoint_runs,
                                            default_tracking_uri, ensure_experiment, log_batch, sqlite_path,
                                            tracking_lock)
from circuit_stability.records import BehaviorRecord, CircuitRecord, ScoresRecord

CONTENT = "cs.content"  # hash of the MD5s of a checkpoint's artefacts: unchanged content, nothing to log
SUPERSEDED_BY = "cs.superseded_by"
VIEW = "circuit-stability"  # the saved run-table view of every study's experiment
VIEW_COLUMNS = ("params.model", "params.task", "params.step", "metrics.task_metric", "metrics.f_paper",
                "metrics.circuit_size", "metrics.circuit_valid", "metrics.accuracy", "metrics.f_norm")


def save_view(client, experiment_id: str) -> str:
    """Store the study's run table as a saved view of its experiment and mark the experiment as model training,
    so MLflow 3's UI opens it as a table of the checkpoint runs with the useful columns (model, task, step, task
    metric, f_paper, circuit size, …) instead of its GenAI traces view.

    The view is the experiment tag ``mlflow.sharedViewState.<key>``, as the UI's "share view" stores it; the
    UI reads it for ``?viewStateShareKey=<key>``, and ``?workflowType=machine_learning`` selects the model-training
    side. Returns the UI route (``#/experiments/<id>/runs?…``) to append to the UI's address.
    """
    state = {"selectedColumns": [c.split(".", 1)[0] + ".`" + c.split(".", 1)[1] + "`" for c in VIEW_COLUMNS],
             "searchFilter": f"tags.`{KIND}` = '{CHECKPOINT}'", "orderByKey": "attributes.start_time",
             "orderByAsc": True,
             "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": "model"}]}}
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW}", json.dumps(state))
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW}"


def git_state(project_dir: str | Path = ".") -> dict[str, str]:
    """``{"commit": <HEAD sha or "unknown">, "dirty": "true"/"false"/"unknown"}`` of the project's git checkout.

    Dirty means tracked files differ from HEAD (untracked and ignored files, such as artefacts, do not count).
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(project_dir), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": "unknown" if status is None else str(bool(status.strip())).lower()}


def file_md5(path: str | Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records for it (so a run can name the exact cached object)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def job_benchmark(folder: Path, step: int) -> Path | None:
    """The benchmark TSV of the job that computed ``step``: ``steps<first>-<last>.tsv`` (a chunk of checkpoints,
    see ``analysis.steps_per_job``) whose range holds ``step``; its figures are the whole job's."""
    for path in sorted(folder.glob("steps*-*.tsv")):
        first, last = path.stem[len("steps"):].split("-")
        if int(first) <= step <= int(last):
            return path
    return None


def read_benchmark(path: str | Path | None) -> dict[str, float] | None:
    """Wall seconds and peak RSS (MB) from a Snakemake ``benchmark:`` TSV, or ``None`` if there is none."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        return None
    lines = path.read_text().strip().splitlines()
    if len(lines) < 2:
        return None
    row = dict(zip(lines[0].split("\t"), lines[-1].split("\t")))
    out = {}
    for key, name in (("s", "seconds"), ("max_rss", "max_rss_mb")):
        try:
            out[name] = float(row[key])
        except (KeyError, ValueError):
            pass
    return out or None


@dataclass
class Checkpoint:
    """The artefacts of one (model, task, step): behaviour record, and where scored, the scores file's
    metadata and the circuit record, each with its path."""

    model: str
    task: str
    step: int
    behavior: Path | None = None
    scores: Path | None = None
    circuit: Path | None = None
    behavior_record: BehaviorRecord | None = None
    scores_meta: dict | None = None
    circuit_record: CircuitRecord | None = None

    @property
    def key(self) -> str:
        """``model/task/step``: the run's identity within a study."""
        return f"{self.model}/{self.task}/{self.step}"

    def md5s(self) -> dict[str, str]:
        """MD5 of each artefact present, by kind."""
        return {kind: file_md5(p) for kind in ("behavior", "scores", "circuit") if (p := getattr(self, kind))}


def collect_checkpoints(behavior: list[str | Path], scores: list[str | Path],
                        circuits: list[str | Path]) -> dict[tuple[str, str, int], Checkpoint]:
    """Read every artefact once and group them by the (model, task, step) written inside them (not parsed from
    file names).

    Raises:
        RecordError: naming the file, for an artefact that does not match its contract.
    """
    found: dict[tuple[str, str, int], Checkpoint] = {}

    def slot(model, task, step) -> Checkpoint:
        key = (str(model), str(task), int(step))
        return found.setdefault(key, Checkpoint(*key))

    for p in behavior:
        b = BehaviorRecord.read(p)
        cp = slot(b.model, b.task, b.step)
        cp.behavior, cp.behavior_record = Path(p), b
    for p in scores:
        m = ScoresRecord.read_meta(p)
        cp = slot(m["model"], m["task"], m["step"])
        cp.scores, cp.scores_meta = Path(p), m
    for p in circuits:
        c = CircuitRecord.read(p)
        cp = slot(c.model, c.task, c.step)
        cp.circuit, cp.circuit_record = Path(p), c
    return dict(sorted(found.items()))


def checkpoint_payload(cp: Checkpoint, common: dict[str, str], benchmarks: Path | None = None
                       ) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """``(params, metrics, tags)`` of one checkpoint's run, read from its artefacts.

    ``common`` holds the study-wide params (study, seed, config hash, git commit and dirty flag). Metrics are
    the ones of design §7 (``task_metric``, ``accuracy``, ``f_paper``, ``f_norm``, ``circuit_size``,
    ``seconds`` and ``peak_rss_mb`` of the scores and circuit jobs, from ``benchmarks``) plus per-split and
    diagnostic values (``circuit_valid``); all belong at ``step=cp.step``.
    """
    params = {**common, "model": cp.model, "task": cp.task, "step": str(cp.step), "method": "none"}
    metrics: dict[str, float] = {}
    if (b := cp.behavior_record) is not None:
        params.update(metric_name=b.metric_name, n_examples=str(b.n_examples))
        metrics.update(task_metric=b.metric, accuracy=b.accuracy, task_metric_corrupted=b.metric_corrupted,
                       tokens_seen=b.tokens_seen)
        for split, v in b.splits.items():
            metrics[f"task_metric_{split}"] = v["metric"]
            metrics[f"accuracy_{split}"] = v["accuracy"]
    if (m := cp.scores_meta) is not None:
        params.update(method=str(m["method"]), ig_steps=str(m.get("ig_steps")),
                      ig_convention=str(m.get("ig_convention")), task_seed=str(m.get("seed")),
                      version=str(m.get("version")))
    if (c := cp.circuit_record) is not None:
        params.update(method=c.method, threshold=str(c.threshold), max_fraction=str(c.max_fraction),
                      max_edges=str(c.max_edges), selection=c.selection, validity_margin=str(c.validity_margin))
        metrics.update(circuit_size=c.n_edges, circuit_nodes=len(c.nodes), f_paper=c.f_paper, f_norm=c.f_norm,
                       circuit_reached=float(c.reached), circuit_valid=float(c.valid),
                       circuit_fraction=c.n_edges / c.total_edges, total_edges=c.total_edges,
                       metric_model=c.metric_model, metric_circuit=c.metric_circuit, metric_empty=c.metric_empty)
    if benchmarks is not None:  # wall time and peak memory of the jobs, measured by Snakemake
        rss, seconds = [], []
        for rule in ("scores", "circuit"):
            bench = read_benchmark(job_benchmark(benchmarks / rule / cp.model / cp.task, cp.step))
            if bench and "max_rss_mb" in bench:
                metrics[f"{rule}_peak_rss_mb"] = bench["max_rss_mb"]
                rss.append(bench["max_rss_mb"])
            if bench and "seconds" in bench:
                metrics[f"{rule}_job_seconds"] = bench["seconds"]
                seconds.append(bench["seconds"])
        if rss:
            metrics["peak_rss_mb"] = max(rss)
        if seconds:
            metrics["seconds"] = sum(seconds)
    md5s = cp.md5s()
    tags = {KIND: CHECKPOINT, "cs.study": common["study"], "cs.model": cp.model, "cs.task": cp.task,
            "cs.step": str(cp.step), "config_hash": common["config_hash"], "git_commit": common["git_commit"],
            "git_dirty": common["git_dirty"], "mlflow.source.git.commit": common["git_commit"],
            CONTENT: hashlib.sha256(json.dumps(md5s, sort_keys=True).encode()).hexdigest()[:16],
            **{f"dvc.md5.{kind}": h for kind, h in md5s.items()},
            **{f"cs.path.{kind}": str(p) for kind in ("behavior", "scores", "circuit") if (p := getattr(cp, kind))}}
    return params, {k: float(v) for k, v in metrics.items() if v is not None}, tags


def study_series(checkpoints: dict[tuple[str, str, int], Checkpoint]) -> list[tuple[str, float, int]]:
    """Every model's curves over training, as parent-run metric histories ``{model}/{task}/{metric}``."""
    series = []
    for (model, task, step), cp in checkpoints.items():
        if (b := cp.behavior_record) is not None:
            series += [(f"{model}/{task}/task_metric", float(b.metric), step),
                       (f"{model}/{task}/accuracy", float(b.accuracy), step)]
        if (c := cp.circuit_record) is not None:
            series += [(f"{model}/{task}/circuit_size", float(c.n_edges), step),
                       (f"{model}/{task}/f_paper", c.f_paper, step), (f"{model}/{task}/f_norm", c.f_norm, step)]
    return series


def _pointer(cp: Checkpoint, md5: str, folder: Path) -> Path:
    """A small JSON naming the scores parquet (too large to copy into every run) and how to fetch it."""
    path = folder / "scores.pointer.json"
    path.write_text(json.dumps({
        "path": str(cp.scores), "md5": md5, "bytes": cp.scores.stat().st_size,
        "dvc_cache_object": f".dvc/cache/files/md5/{md5[:2]}/{md5[2:]}",
        "fetch": "dvc pull scores  # the DVC stage whose output folder holds this file"},
        indent=1) + "\n")
    return path


def _log_checkpoint(client, exp_id: str, parent: str, cp: Checkpoint, params: dict, metrics: dict, tags: dict,
                    tmp: Path) -> str:
    """Create one checkpoint's run under ``parent``: params, metrics at ``step=cp.step``, the behaviour and
    circuit JSON, and a pointer to the scores parquet. Returns the run id."""
    run_id = client.create_run(exp_id, run_name=f"{cp.model} {cp.task} step {cp.step}",
                               tags={**tags, PARENT: parent}).info.run_id
    log_batch(client, run_id, params=params, metrics=metrics, step=cp.step)
    for kind in ("behavior", "circuit"):
        if (p := getattr(cp, kind)) is not None:
            client.log_artifact(run_id, str(p), kind)
    if cp.scores is not None:
        folder = tmp / cp.key.replace("/", "_")
        folder.mkdir()
        client.log_artifact(run_id, str(_pointer(cp, tags["dvc.md5.scores"], folder)), "scores")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def audit_listing(path: str | Path) -> str:
    """The flagged checkpoints of a checkpoint-audit table as ``model:step:flag:action`` joined by spaces (each
    checkpoint once per flag; ``none`` if none); MLflow parameters hold at most 6,000 characters, so a longer
    listing is cut with its count."""
    import pandas as pd

    table = pd.read_parquet(path)
    flagged = table[table["flag"] != ""].drop_duplicates(["model", "step", "flag"]).sort_values(["model", "step"])
    items = [f"{r.model}:{r.step}:{r.flag}:{r.action}" for r in flagged.itertuples()]
    text = " ".join(items) or "none"
    return text if len(text) <= 6000 else text[:5900].rsplit(" ", 1)[0] + f" ... ({len(items)} in all)"


def track_study(study: str, behavior: list[str | Path], scores: list[str | Path], circuits: list[str | Path],
                figures: list[str | Path] = (), configfiles: list[str | Path] = (), config_hash: str = "",
                seed: int | None = None, tracking_uri: str | None = None, project_dir: str | Path = ".",
                benchmarks: str | Path | None = None, out: str | Path | None = None,
                audit: str | Path | None = None) -> dict:
    """Log a study's per-checkpoint artefacts to MLflow, idempotently; write a summary JSON to ``out``.

    Args:
        study: experiment name (``config["study"]``).
        behavior, scores, circuits: the per-checkpoint artefacts (design §3).
        figures, configfiles: logged as artefacts of the parent run.
        config_hash: :func:`circuit_stability.config.config_hash` of the study config.
        seed: the study seed.
        tracking_uri: default :func:`~circuit_stability.mlflow_store.default_tracking_uri` of ``project_dir``.
        project_dir: the project checkout (git state; default database location).
        benchmarks: folder of Snakemake benchmark TSVs ``<rule>/<model>/<task>/steps<first>-<last>.tsv``.
        out: summary JSON (tracking URI, experiment, parent run, run id per ``model/task/step``).
        audit: the study's checkpoint-audit table (``checkpoint_audit.parquet``): logged to the parent run, whose
            ``checkpoints_flagged`` parameter lists each flagged checkpoint as ``model:step:flag:action``
            (``none`` if none).

    Returns:
        The summary: ``logged`` (new runs), ``unchanged``, ``superseded`` (old run ids), ``runs``, and
        ``ui_route``, the UI route of the study's run table (:func:`save_view`).

    Raises:
        RecordError: naming the file, for an artefact that does not match its contract (before MLflow is
            touched).
    """
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri(project_dir)
    db = sqlite_path(uri)
    artifact_location = (db.resolve().parent / "mlartifacts" / study).as_uri() if db else None
    git = git_state(project_dir)
    common = {"study": study, "seed": str(seed), "config_hash": config_hash, "git_commit": git["commit"],
              "git_dirty": git["dirty"]}
    checkpoints = collect_checkpoints(behavior, scores, circuits)
    bench = Path(benchmarks) if benchmarks else None
    with tracking_lock(uri):
        client = RetryingClient(MlflowClient(uri))
        exp_id = ensure_experiment(client, study, artifact_location)
        link = save_view(client, exp_id)
        existing = active_checkpoint_runs(client, exp_id, study)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        parent = client.create_run(exp_id, run_name=f"pipeline {started}",
                                   tags={KIND: PIPELINE, "cs.study": study, "config_hash": config_hash,
                                         "git_commit": git["commit"], "git_dirty": git["dirty"],
                                         "mlflow.source.git.commit": git["commit"]}).info.run_id
        summary = {"tracking_uri": uri, "experiment": study, "experiment_id": exp_id, "parent_run_id": parent,
                   "ui_route": link, "logged": [], "unchanged": [], "superseded": [], "runs": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for cp in checkpoints.values():
                params, metrics, tags = checkpoint_payload(cp, common, bench)
                old = existing.get(cp.key, [])
                if old and old[0].data.tags.get(CONTENT) == tags[CONTENT]:
                    summary["unchanged"].append(cp.key)
                    summary["runs"][cp.key] = old[0].info.run_id
                    stale = old[1:]
                else:
                    summary["runs"][cp.key] = _log_checkpoint(client, exp_id, parent, cp, params, metrics, tags,
                                                              Path(tmp))
                    summary["logged"].append(cp.key)
                    stale = old
                for r in stale:  # re-run jobs: the older run is superseded, not duplicated
                    client.set_tag(r.info.run_id, SUPERSEDED_BY, summary["runs"][cp.key])
                    client.delete_run(r.info.run_id)
                    summary["superseded"].append(r.info.run_id)
        models = sorted({k[0] for k in checkpoints})
        tasks = sorted({k[1] for k in checkpoints})
        flagged = audit_listing(audit) if audit is not None else None
        log_batch(client, parent, params={**common, "models": ",".join(models), "tasks": ",".join(tasks),
                                          "n_checkpoints": len(checkpoints),
                                          **({"checkpoints_flagged": flagged} if flagged is not None else {})},
                  tags={"cs.logged": len(summary["logged"]), "cs.unchanged": len(summary["unchanged"]),
                        "cs.superseded": len(summary["superseded"]),
                        "mlflow.note.content": f"Pipeline invocation of study `{study}` (config {config_hash}, git "
                                               f"{git['commit'][:12]}, dirty: {git['dirty']}): logged "
                                               f"{len(summary['logged'])} checkpoint run(s), "
                                               f"{len(summary['unchanged'])} unchanged. Metrics `model/task/name` "
                                               "are the study's curves over training (x axis: step)."},
                  series=study_series(checkpoints))
        for f in figures:
            client.log_artifact(parent, str(f), "figures")
        for f in configfiles:
            client.log_artifact(parent, str(f), "config")
        if audit is not None:
            client.log_artifact(parent, str(audit), "audit")
        client.set_terminated(parent, "FINISHED")
    if out is not None:
        write_json(summary, out)
    return summary
