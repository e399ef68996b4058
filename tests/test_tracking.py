"""MLflow tracking (design §7): one run per (model, task, step), idempotent, safe under parallel writers, served
by `mlflow server`. Real MLflow on real SQLite databases; the slow tests use the quick study built with 4 jobs."""

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import readme_command, run_ok, study_env

from circuit_stability.checkpoints import checkpoint_schedule
from circuit_stability.graph import Graph
from circuit_stability.progress import Progress
from circuit_stability.records import BehaviorRecord, CircuitRecord, ScoresRecord
from circuit_stability.tracking import job_benchmark, read_benchmark, track_study

MODELS = ("quick-s", "quick-m")
TASKS = ("ioi", "greater_than")
STEPS = checkpoint_schedule(200, 100, log_until=4)
SCORED = (0, 200)
N_RUNS = len(MODELS) * len(TASKS) * len(STEPS)


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _runs(uri: str, kind: str = "checkpoint", deleted: bool = False) -> list:
    from mlflow.entities import ViewType

    client = _client(uri)
    exp = client.get_experiment_by_name("quick")
    view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
    return client.search_runs([exp.experiment_id], f"tags.`cs.kind` = '{kind}'", run_view_type=view,
                              max_results=1000)


def _key(run) -> tuple[str, str, int]:
    t = run.data.tags
    return t["cs.model"], t["cs.task"], int(t["cs.step"])


# ---------------------------------------------------------------- fast: synthetic artefacts
def _fake_checkpoint(folder: Path, step: int, metric: float, scored: bool) -> dict[str, Path]:
    b = folder / f"behavior/step{step}.json"
    BehaviorRecord(model="m", step=step, tokens_seen=step * 10, task="ioi", metric_name="logit_diff", metric=metric,
                   accuracy=0.5, metric_corrupted=0.0, n_examples=4,
                   splits={"seen": {"metric": metric, "accuracy": 0.5, "n": 4}}, version="0").write(b)
    out = {"behavior": b}
    if scored:
        graph = Graph(1, 1)
        scores = np.where(graph.edge_mask, 0.1, np.nan).astype(np.float32)
        out["scores"] = folder / f"scores/step{step}.parquet"
        ScoresRecord(graph, scores, {"model": "m", "task": "ioi", "step": step, "method": "EAP-IG", "seed": 1,
                                     "n_examples": 4, "metric": "logit_diff"}).write(out["scores"])
        out["circuit"] = folder / f"circuits/step{step}.json"
        CircuitRecord(model="m", task="ioi", step=step, method="EAP-IG", tokens_seen=step * 10, selection="greedy",
                      pruned=True, threshold=0.8, max_fraction=0.05, min_search_edges=1, max_edges=1, size=1,
                      n_edges=1, nodes=["input", "logits"], edges=["input->logits"], reached=True, valid=True,
                      invalid_reason=None, validity_margin=0.5, emergence_fraction=0.5, metric_final=metric,
                      total_edges=10, metric_model=metric,
                      metric_circuit=metric, metric_empty=0.0, mib={},
                      faithfulness={"1": {"paper": 1.0, "normalized": 1.0}},
                      version="0").write(out["circuit"])
        for rule, seconds in (("scores", 2.5), ("circuit", 1.5)):  # Snakemake's benchmark files of the jobs
            bench = folder / f"bench/{rule}/m/ioi/steps{step}-{step}.tsv"
            bench.parent.mkdir(parents=True, exist_ok=True)
            bench.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:0{int(seconds)}\t{100 * seconds}\n")
    return out


def test_track_is_idempotent_and_supersedes_changed_checkpoints(tmp_path):
    arts = [_fake_checkpoint(tmp_path, s, float(s), scored=s == 4) for s in (0, 4)]
    kwargs = dict(behavior=[a["behavior"] for a in arts], scores=[arts[1]["scores"]], circuits=[arts[1]["circuit"]],
                  config_hash="abc", seed=0, tracking_uri=f"sqlite:///{tmp_path}/t.db", project_dir=tmp_path,
                  benchmarks=tmp_path / "bench")
    first = track_study("quick", **kwargs)
    assert sorted(first["logged"]) == ["m/ioi/0", "m/ioi/4"]
    exp = _client(kwargs["tracking_uri"]).get_experiment_by_name("quick")  # opens as a run table, not GenAI
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "metrics.`f_paper`" in json.loads(exp.tags["mlflow.sharedViewState.circuit-stability"])["selectedColumns"]
    assert first["ui_route"] == (f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&"
                                 "viewStateShareKey=circuit-stability")
    runs = {_key(r): r for r in _runs(kwargs["tracking_uri"])}
    r4 = runs[("m", "ioi", 4)]
    assert r4.data.params["method"] == "EAP-IG" and r4.data.params["config_hash"] == "abc"
    assert r4.data.tags["mlflow.parentRunId"] == first["parent_run_id"]
    history = _client(kwargs["tracking_uri"]).get_metric_history(r4.info.run_id, "f_paper")
    assert [(m.step, m.value) for m in history] == [(4, 1.0)]
    assert r4.data.metrics["seconds"] == 4.0  # the scores job's 2.5 s + the circuit job's 1.5 s
    assert r4.data.metrics["peak_rss_mb"] == 250.0

    again = track_study("quick", **kwargs)  # nothing changed: no new run
    assert again["logged"] == [] and again["runs"] == first["runs"]

    _fake_checkpoint(tmp_path, 4, 7.0, scored=True)  # the step-4 jobs were re-run with a different result
    third = track_study("quick", **kwargs)
    assert third["logged"] == ["m/ioi/4"] and third["superseded"] == [first["runs"]["m/ioi/4"]]
    active = _runs(kwargs["tracking_uri"])
    assert sorted(_key(r) for r in active) == [("m", "ioi", 0), ("m", "ioi", 4)]
    (old,) = _runs(kwargs["tracking_uri"], deleted=True)
    assert old.data.tags["cs.superseded_by"] == third["runs"]["m/ioi/4"]


def test_benchmark_and_progress_lines(tmp_path, capsys):
    bench = tmp_path / "b.tsv"
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\n5.80\t0:00:05\t513.80\t2473.84\n")
    assert read_benchmark(bench) == {"seconds": 5.8, "max_rss_mb": 513.8}
    assert read_benchmark(tmp_path / "missing.tsv") is None
    (tmp_path / "steps0-4.tsv").write_text("x")
    (tmp_path / "steps100-200.tsv").write_text("x")
    assert job_benchmark(tmp_path, 2) == tmp_path / "steps0-4.tsv"  # the chunk of checkpoints holding step 2
    assert job_benchmark(tmp_path, 200).name == "steps100-200.tsv" and job_benchmark(tmp_path, 50) is None
    quick = Progress("scores m ioi step 4", 3, "batches", every=3600)  # work that ends within `every`: silent
    quick.update()
    quick.update(2)
    quick.close()
    assert capsys.readouterr().err == ""
    slow = Progress("scores m ioi step 4", 3, "batches", every=0)  # a line per update, the last at 100%
    slow.note = "loss 2.5"
    slow.update()
    slow.update(2)
    slow.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("[progress] scores m ioi step 4: ") for line in lines) and len(lines) == 2
    assert "1/3 batches (33%)" in lines[0] and "3/3 batches (100%)" in lines[1] and lines[1].endswith("; loss 2.5")


# ---------------------------------------------------------------- slow: the quick study, 4 parallel jobs
@pytest.mark.slow
def test_parallel_build_leaves_exactly_one_run_per_checkpoint(versioned_study):
    uri = f"sqlite:///{versioned_study / 'mlflow.db'}"
    runs = _runs(uri)
    keys = sorted(_key(r) for r in runs)
    assert keys == sorted((m, t, s) for m in MODELS for t in TASKS for s in STEPS), "lost or duplicated runs"
    parents = {r.info.run_id: r for r in _runs(uri, "pipeline")}
    parent = parents[runs[0].data.tags["mlflow.parentRunId"]]  # the build's own pipeline run
    for r in runs:
        m, task, step = _key(r)
        p = r.data.params
        assert {"model", "step", "task", "method", "seed", "config_hash", "git_commit", "git_dirty"} <= set(p)
        assert (p["model"], p["step"], p["task"]) == (m, str(step), task)
        assert len(p["git_commit"]) == 40 and p["git_dirty"] == "false"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"task_metric", "accuracy"} <= set(r.data.metrics)
        if step in SCORED:
            assert p["method"] == "EAP-IG" and len(r.data.tags["dvc.md5.scores"]) == 32
            assert {"f_paper", "f_norm", "circuit_size", "seconds", "peak_rss_mb"} <= set(r.data.metrics)
        for name in r.data.metrics:  # every metric sits at the training step, so MLflow plots it over training
            assert {h.step for h in _client(uri).get_metric_history(r.info.run_id, name)} == {step}
    figures = [a.path for a in _client(uri).list_artifacts(parent.info.run_id, "figures")]
    assert figures == ["figures/circuit_size.png", "figures/component_lag.html", "figures/emergence.png",
                       "figures/faithfulness_curves.png", "figures/figure1_behavior.png",
                       "figures/figure2_components.png", "figures/figure3_top_heads.png",
                       "figures/figure4_algorithm.png", "figures/findings.html", "figures/similarity.png"]
    curve = _client(uri).get_metric_history(parent.info.run_id, "quick-m/ioi/task_metric")
    assert sorted(m.step for m in curve) == sorted(STEPS)


@pytest.mark.slow
def test_concurrent_track_processes_neither_lose_nor_duplicate_runs(versioned_study, tmp_path):
    """4 `circuit-stability track` processes at once on one fresh SQLite database (as two studies or two
    invocations would): no "database is locked" failure, exactly one run per checkpoint, 4 parent runs."""
    uri = f"sqlite:///{tmp_path / 'parallel.db'}"
    rel = lambda pattern: sorted(str(p.relative_to(versioned_study)) for p in versioned_study.glob(pattern))  # noqa: E731
    cmd = ["circuit-stability", "track", "--study", "quick", "--tracking-uri", uri, "--config-hash", "x",
           "--behavior", *rel("results/behavior/*/ioi/*.json"), "--scores", *rel("results/scores/*/ioi/*.parquet"),
           "--circuits", *rel("results/circuits/*/ioi/*.json")]
    procs = [subprocess.Popen(cmd, cwd=versioned_study, env=study_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
    assert not any("database is locked" in o for o in outputs)
    assert sorted(_key(r) for r in _runs(uri)) == sorted((m, "ioi", s) for m in MODELS for s in STEPS)
    assert len(_runs(uri, "pipeline")) == 4
    assert _runs(uri, deleted=True) == []


@pytest.mark.slow
def test_rerunning_a_job_supersedes_its_run_instead_of_duplicating_it(versioned_study):
    """A re-run job with the same inputs writes the same bytes: nothing is logged again. A job whose result
    changed (here the circuit record, edited as a changed search would write it) supersedes its old run."""
    uri = f"sqlite:///{versioned_study / 'mlflow.db'}"
    before = {_key(r): r.info.run_id for r in _runs(uri)}
    target = versioned_study / "results/circuits/quick-s/ioi/step200.json"
    run_ok(["snakemake", "--cores", "2", "--forcerun", str(target.relative_to(versioned_study))], versioned_study)
    assert {_key(r): r.info.run_id for r in _runs(uri)} == before
    summary = json.loads((versioned_study / "results/tracking/quick.json").read_text())
    assert summary["logged"] == [] and len(summary["unchanged"]) == N_RUNS

    record = json.loads(target.read_text())
    record["metric_circuit"] += 1e-3
    target.write_text(json.dumps(record, indent=2, sort_keys=True))
    run_ok(["snakemake", "--cores", "2"], versioned_study)
    after = {_key(r): r.info.run_id for r in _runs(uri)}
    assert len(after) == N_RUNS and set(after) == set(before)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {("quick-s", "ioi", 200)}
    (old,) = [r for r in _runs(uri, deleted=True) if r.info.run_id == before[("quick-s", "ioi", 200)]]
    assert old.data.tags["cs.superseded_by"] == after[("quick-s", "ioi", 200)]
    summary = json.loads((versioned_study / "results/tracking/quick.json").read_text())
    assert summary["logged"] == ["quick-s/ioi/200"] and len(summary["unchanged"]) == N_RUNS - 1


def _http(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_readme_mlflow_ui_serves_the_experiment_and_its_runs(versioned_study, tmp_path):
    """The README's `mlflow ui` command, verbatim in the study's folder, serves the experiment, its runs (REST)
    and the UI on MLflow's default address http://127.0.0.1:5000."""
    base = "http://127.0.0.1:5000"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 5000)) != 0, "port 5000 is taken: the README's `mlflow ui` cannot start"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(["bash", "-c", "exec " + readme_command("mlflow ui ")], cwd=versioned_study,
                              env=study_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        exp = _http(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=quick")["experiment"]
        found = _http(f"{base}/api/2.0/mlflow/runs/search", {
            "experiment_ids": [exp["experiment_id"]], "filter": "tags.`cs.kind` = 'checkpoint'",
            "max_results": 1000})["runs"]
        assert len(found) == N_RUNS
        one = next(r for r in found if {"key": "step", "value": "200"} in r["data"]["params"]
                   and {"key": "model", "value": "quick-m"} in r["data"]["params"])
        assert {m["key"] for m in one["data"]["metrics"]} >= {"task_metric", "f_paper", "circuit_size"}
        assert all(m["step"] == 200 for m in one["data"]["metrics"])
        with urllib.request.urlopen(f"{base}/", timeout=30) as r:  # the UI itself is served
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_cli_log_keeps_the_console_for_the_jobs_own_lines(tmp_path):
    """`circuit-stability --log FILE <stage>` (what every rule runs): the console shows only the stage's own
    lines, the log gets them too and everything else written to stderr (a traceback here)."""
    log = tmp_path / "job.log"
    ok = subprocess.run(["circuit-stability", "--log", str(log), "corpus", "--out", str(tmp_path / "corpus"),
                         "--training", '{"batch_size": 2, "context": 8, "max_steps": 3}'],
                        capture_output=True, text=True, check=True)
    assert ok.stderr.startswith("[circuit-stability] corpus: 48 tokens") and len(ok.stderr.splitlines()) == 1
    assert ok.stderr in log.read_text()
    bad = subprocess.run(["circuit-stability", "--log", str(log), "tables", "--behavior", "missing.json",
                          "--circuits", "missing.json", "--out", str(tmp_path / "t")], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr == "" and "missing.json" in log.read_text()
