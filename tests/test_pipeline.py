"""End to end: `snakemake` on the quick study in a temporary directory (real Snakemake, real models). The study's
repositories have the quick study as their default config (conftest.quick_checkout), so every command here is
the plain `snakemake --cores 2`."""

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import quick_checkout

from circuit_stability.checkpoints import checkpoint_schedule
from circuit_stability.records import CircuitRecord, ExampleScoresRecord, RecordError, ScoresRecord
MODELS = ("quick-s", "quick-m")
TASKS = ("ioi", "greater_than")
STEPS = checkpoint_schedule(200, 100, log_until=4)
SCORED = (0, 200)

pytestmark = pytest.mark.slow


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(["snakemake", "--cores", "2", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _planned_jobs(cwd: Path) -> dict[str, int]:
    """Rule -> job count that a dry run would execute."""
    out = _snakemake(cwd, "-n")
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def _artefacts() -> list[str]:
    paths = ["data/corpus/quick/tokens.npy", "data/corpus/quick/tokenizer/tokenizer.json", "data/corpus/quick/corpus.json",
             *[f"data/tasks/quick/{t}.parquet" for t in TASKS], "results/tables/behavior.parquet",
             "results/tables/circuits.parquet",
             "results/tables/emergence.parquet", "results/tables/faithfulness.parquet",
             "results/tables/components.parquet", "results/tables/component_emergence.parquet",
             "results/tables/roles.parquet", "results/tables/handovers.parquet",
             "results/tables/component_lag.parquet", "results/tables/algorithm.parquet",
             "results/tables/circuit_edges.parquet", "results/tables/similarity.parquet",
             "results/tables/composition.parquet", "results/tables/cross_model.parquet",
             "results/tables/findings.parquet", "results/tables/checkpoint_audit.parquet",
             "reports/figures/similarity.png", "reports/figures/findings.html",
             "reports/figures/figure1_behavior.png", "reports/figures/circuit_size.png",
             "reports/figures/emergence.png", "reports/figures/faithfulness_curves.png",
             "reports/figures/figure2_components.png", "reports/figures/figure3_top_heads.png",
             "reports/figures/component_lag.html", "reports/figures/figure4_algorithm.png", "reports/report.html",
             "reports/figures/checkpoint_audit.html", *[f"reports/figures/circuits_{m}.html" for m in MODELS]]
    for m in MODELS:
        paths += [f"models/{m}/train_log.parquet", f"models/{m}/suite.json", f"results/audit/{m}.parquet",
                  f"results/audit/{m}.passed"]
        paths += [f"models/{m}/step{s}/model.safetensors" for s in STEPS]
        paths += [f"results/components/{m}/step{s}.parquet" for s in STEPS]
        paths += [f"results/stability/{m}/ioi/step{s}.parquet" for s in SCORED]
        paths += [f"results/similarity/{m}.parquet"]
        for t in TASKS:
            paths += [f"results/behavior/{m}/{t}/step{s}.json" for s in STEPS]
            paths += [f"results/scores/{m}/{t}/step{s}.parquet" for s in SCORED]
            paths += [f"results/scores/{m}/{t}/step{s}.examples.parquet" for s in SCORED]
            paths += [f"results/circuits/{m}/{t}/step{s}.json" for s in SCORED]
    return paths


@pytest.fixture(scope="module")
def study(versioned_study) -> Path:
    """The quick study, built once per session (tests/conftest.py) and shared with the DVC and MLflow tests;
    tests here only read it (the one that deletes a file works on a copy)."""
    return versioned_study


def test_every_artefact_is_produced(study):
    missing = [p for p in _artefacts() if not (study / p).exists()]
    assert not missing


def test_every_artefact_honours_the_umask(study):
    """Every file the build writes (checkpoints included: safetensors itself writes 0600) has the permissions of the
    umask it ran under, so the other users of a shared cluster folder can read the study."""
    mask = os.umask(0)
    os.umask(mask)
    wrong = {}
    for folder in ("data", "models", "results", "reports"):
        for p in (study / folder).rglob("*"):
            if p.is_file() and not p.is_symlink():
                mode = stat.S_IMODE(p.stat().st_mode)
                if mode not in (0o666 & ~mask, 0o777 & ~mask):
                    wrong[str(p.relative_to(study))] = oct(mode)
    assert not wrong, f"{len(wrong)} files, e.g. {sorted(wrong.items())[:3]}"


def test_a_circuit_naming_an_edge_its_graph_lacks_is_refused_where_it_is_read(study, tmp_path):
    """A circuit record naming an edge the model's graph lacks (a head of a layer the model does not have, or a
    reader upstream of its writer) is refused when the similarity stage reads it, naming the file and the edge."""
    graph = ScoresRecord.read(study / "results/scores/quick-m/ioi/step200.parquet").graph
    record = json.loads((study / "results/circuits/quick-m/ioi/step200.json").read_text())
    CircuitRecord.read(study / "results/circuits/quick-m/ioi/step200.json", graph)  # the study's own: fine
    for bad, named in (("a7.h0->logits", "names 'a7.h0', which is not a writer"),
                       ("a1.h0->a0.h1<q>", "is not an edge"), ("a1.h0 logits", "is not of the form")):
        path = tmp_path / "step200.json"
        path.write_text(json.dumps({**record, "edges": [*record["edges"], bad], "n_edges": record["n_edges"] + 1}))
        with pytest.raises(RecordError) as err:
            CircuitRecord.read(path, graph)
        assert str(path) in str(err.value) and bad in str(err.value) and named in str(err.value), err.value


def test_second_run_does_nothing(study):
    assert _planned_jobs(study) == {}


def test_scores_and_circuit_contracts(study):
    scores = pd.read_parquet(study / "results/scores/quick-m/ioi/step200.parquet")
    meta = ScoresRecord.read(study / "results/scores/quick-m/ioi/step200.parquet").meta
    assert list(scores.columns) == ["src", "dst", "score"] and scores["score"].dtype == np.float32
    assert len(scores) == 102 and "input->a0.h0<q>" in set(scores["src"].astype(str) + "->" + scores["dst"].astype(str))
    for key in ("model", "step", "task", "method", "ig_steps", "n_examples", "metric", "version", "seed"):
        assert key in meta
    assert (meta["method"], meta["ig_steps"], meta["step"]) == ("EAP-IG", 5, 200)
    circuit = json.loads((study / "results/circuits/quick-m/ioi/step200.json").read_text())
    for key in ("model", "step", "task", "method", "threshold", "edges", "nodes", "n_edges", "reached", "valid",
                "invalid_reason", "metric_circuit", "metric_model", "metric_empty", "faithfulness"):
        assert key in circuit
    assert circuit["n_edges"] == len(circuit["edges"])
    CircuitRecord.read(study / "results/circuits/quick-m/ioi/step200.json")  # the whole contract
    behavior = pd.read_parquet(study / "results/tables/behavior.parquet")
    assert {"model", "step", "tokens_seen", "task", "metric", "accuracy", "split"} <= set(behavior.columns)
    assert (behavior["tokens_seen"] == behavior["step"] * 8 * 64).all()
    components = pd.read_parquet(study / "results/tables/components.parquet")
    always = {"induction", "duplicate_token", "previous_token", "successor", "copy", "negative_copy",
              "direct_effect", "name_mover", "attention_io", "attention_s1", "attention_s2"}  # the study has IOI
    assert always <= set(components["score"]) <= always | {"query_effect", "s_inhibition"}  # these with a name mover
    counts = components.groupby(["model", "step"]).size() / components.groupby(["model", "step"])["head"].nunique()
    assert set(counts) <= {11, 13} and len(counts) == len(STEPS) * len(MODELS)
    assert (components["tokens_seen"] == components["step"] * 8 * 64).all()
    roles = pd.read_parquet(study / "results/tables/roles.parquet")
    assert len(roles) == len(STEPS) * len(TASKS) * (1 * 4 + 2 * 4)  # every (step, task, head) of both models
    assert roles.loc[~roles["circuit_valid"].astype(bool), "in_circuit"].isna().all()
    lag = pd.read_parquet(study / "results/tables/component_lag.parquet")
    assert set(lag["relation"]) <= {"before", "with", "after", "never", "task never"} and len(lag) > 0
    algorithm = pd.read_parquet(study / "results/tables/algorithm.parquet")  # both models have < 3 layers: NaN, why
    assert len(algorithm) == len(MODELS) * len(SCORED) * 3 * 2 * 2 and algorithm["value"].isna().all()
    assert algorithm["reason"].str.contains("need at least 3").all() and not algorithm["formed"].any()
    sim = pd.read_parquet(study / "results/tables/similarity.parquet")  # one row per (model, task, scored step)
    assert sorted(zip(sim["model"], sim["task"], sim["step"])) == sorted(
        (m, t, s) for m in MODELS for t in TASKS for s in SCORED)
    invalid = ~sim["valid"].astype(bool)
    assert sim.loc[invalid, ["n_edges", "boot_main_median"]].isna().all().all()
    assert sim.loc[~invalid, "resamples"].eq(50).all() and sim["boot_beyond_stored"].eq(0).all()
    ex = ExampleScoresRecord.read(study / "results/scores/quick-m/ioi/step200.examples.parquet")
    rec = ScoresRecord.read(study / "results/scores/quick-m/ioi/step200.parquet")
    assert ex.examples.shape == (20, 102)  # every edge, every example (similarity.stored_fraction: 1)
    np.testing.assert_allclose(ex.resampled(np.ones(20)), rec.scores[ex.src, ex.dst], rtol=2e-6,
                               atol=2e-7 * float(np.abs(rec.scores[ex.src, ex.dst]).max()))
    findings = pd.read_parquet(study / "results/tables/findings.parquet")
    assert {"i acquisition", "iii hand-overs", "v beyond noise"} <= set(findings["finding"])


def test_the_llama_member_is_trained_and_analysed_with_grouped_query_attention(study):
    """quick-s is a Llama-style member with 2 key/value heads for 4 query heads: its checkpoints are Llama models
    with that grouping, its scores are on the sequential, grouped graph (shared key/value inputs per key/value head),
    and every stage wrote its artefacts (test_every_artefact_is_produced) from that graph."""
    from circuit_stability.graph import Graph

    config = json.loads((study / "models/quick-s/step200/config.json").read_text())
    assert (config["model_type"], config["num_attention_heads"], config["num_key_value_heads"]) == ("llama", 4, 2)
    manifest = json.loads((study / "models/quick-s/suite.json").read_text())
    assert (manifest["architecture"], manifest["n_kv_heads"]) == ("llama", 2)
    assert "architecture" not in json.loads((study / "models/quick-m/suite.json").read_text())  # GPT-NeoX: as before
    for model, graph in (("quick-s", Graph(1, 4, False, 2)), ("quick-m", Graph(2, 4, True))):
        rec = ScoresRecord.read(study / f"results/scores/{model}/ioi/step200.parquet")
        assert rec.graph == graph and int(np.isfinite(rec.scores).sum()) == graph.n_edges, model
    names = set(pd.read_parquet(study / "results/scores/quick-s/ioi/step200.parquet")["dst"].astype(str))
    assert {"a0.kv0<k>", "a0.kv1<v>", "a0.h3<q>", "m0"} <= names and "a0.h0<k>" not in names


def test_a_member_of_another_architecture_joins_a_built_study_without_rerunning_it(study, tmp_path):
    """A GPT-2-style member (sequential blocks, learned positions) added to the built quick study: every stage runs
    on it (its checkpoints, audit, behaviour, scores on the sequential graph, circuits, components, path patching,
    similarity, the circuit view, the tables), and no job of the members already built runs again."""
    from circuit_stability.graph import Graph

    cwd = Path(shutil.copytree(study, tmp_path / "gpt2", symlinks=True))
    config = yaml.safe_load((cwd / "config/config.yaml").read_text())
    models = {**config["suite"]["models"], "quick-g": {"architecture": "gpt2", "n_layers": 1, "d_model": 32,
                                                       "n_heads": 2}}
    (cwd / "config/gpt2.yaml").write_text(json.dumps({"extends": "config.yaml", "suite": {"models": models}}))
    built = {p: p.stat().st_mtime_ns for m in MODELS for p in [*(cwd / "models" / m).rglob("*"),
                                                                *(cwd / "results").glob(f"*/{m}/**/*")] if p.is_file()}
    _snakemake(cwd, "--configfile", "config/gpt2.yaml")
    assert {p: p.stat().st_mtime_ns for p in built} == built  # nothing of quick-s and quick-m was rewritten
    assert json.loads((cwd / "models/quick-g/step200/config.json").read_text())["model_type"] == "gpt2"
    rec = ScoresRecord.read(cwd / "results/scores/quick-g/ioi/step200.parquet")
    assert rec.graph == Graph(1, 2, False) and int(np.isfinite(rec.scores).sum()) == Graph(1, 2, False).n_edges
    frame = pd.read_parquet(cwd / "results/scores/quick-g/ioi/step200.parquet")
    assert "a0.h1->m0" in set(frame["src"].astype(str) + "->" + frame["dst"].astype(str))  # MLP 0 reads layer 0
    for path in ("results/audit/quick-g.passed", "results/components/quick-g/step200.parquet",
                 "results/stability/quick-g/ioi/step200.parquet", "results/similarity/quick-g.parquet",
                 "results/circuits/quick-g/greater_than/step200.json", "reports/figures/circuits_quick-g.html"):
        assert (cwd / path).is_file(), path
    for table in ("behavior", "circuits", "components", "similarity", "checkpoint_audit", "algorithm"):
        assert "quick-g" in set(pd.read_parquet(cwd / f"results/tables/{table}.parquet")["model"]), table


def test_deleting_a_scores_file_rebuilds_only_it_and_its_dependents(study, tmp_path):
    study = Path(shutil.copytree(study, tmp_path / "copy", symlinks=True))  # copy2 keeps the timestamps
    target = study / "results/scores/quick-m/ioi/step200.parquet"
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    sibling = target.with_name("step200.examples.parquet")  # written by the same job
    others = {p: p.stat().st_mtime_ns for p in (study / "results/scores").rglob("*.parquet")
              if p not in (target, sibling)}
    sibling_md5 = hashlib.md5(sibling.read_bytes()).hexdigest()
    behavior = {p: p.stat().st_mtime_ns for p in (study / "results/behavior").rglob("*.json")}
    target.unlink()
    # (the tables change, so both models' interactive circuit views are drawn again)
    assert _planned_jobs(study) == {"scores": 1, "circuit": 1, "stability": 1, "similarity": 1, "tables": 1,
                                    "circuit_view": 2, "figures": 1, "report": 1, "track": 1, "all": 1}
    os.umask(0o022)  # the build below inherits it
    _snakemake(study)
    assert hashlib.md5(target.read_bytes()).hexdigest() == md5  # same inputs, same bytes: DVC sees no change
    assert hashlib.md5(sibling.read_bytes()).hexdigest() == sibling_md5
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and stat.S_IMODE(target.parent.stat().st_mode) == 0o755
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert {p: p.stat().st_mtime_ns for p in behavior} == behavior


def test_killed_run_resumes_and_reproduces_the_first_run(study, tmp_path):
    """kill -9 mid-run, then re-run: only unfinished jobs run again, no partial file counts as complete, and the
    finished study is identical to the uninterrupted run. The run starts from a copy of the built study without
    quick-m's results, the tables and the reports (16 jobs to run; the corpus, datasets, checkpoints and quick-s's
    results are kept: tests/test_slurm.py rebuilds the whole study from scratch and compares every file with
    this one)."""
    cwd = Path(shutil.copytree(study, tmp_path / "second", symlinks=True))
    gone = [*(cwd / "results").glob("*/quick-m"), *(cwd / "results").glob("*/quick-m.*"), cwd / "results/tables",
            cwd / "reports"]
    for path in gone:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    everything = _planned_jobs(cwd)
    log = tmp_path / "killed.log"
    with open(log, "w") as out:  # killed once Snakemake reports its first finished job
        proc = subprocess.Popen(["snakemake", "--cores", "2"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 300
        while "Finished jobid" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {p for p in _artefacts() if (cwd / p).exists()}
    assert any("/quick-m/" in p for p in done_before) and len(done_before) < len(_artefacts())
    subprocess.run(["snakemake", "--unlock"], cwd=cwd, check=True,
                   capture_output=True)
    planned = _planned_jobs(cwd)
    assert "corpus" not in planned and "train" not in planned and "scores" in planned
    assert sum(planned.values()) < sum(everything.values()), (planned, everything)  # the finished jobs stay done
    _snakemake(cwd)
    assert all((cwd / p).exists() for p in _artefacts())
    for p in _artefacts():  # atomic writes: every file under its final name is complete and readable
        if p.endswith(".parquet"):
            pd.read_parquet(cwd / p)
        elif p.endswith(".json"):
            json.loads((cwd / p).read_text())
        elif p.endswith(".html"):
            assert (cwd / p).read_text().rstrip().endswith("</html>")
    for p in _artefacts():  # byte for byte: no wall times or other volatile values in any versioned file
        if not p.endswith(".html"):  # the report embeds the jobs' run times and dates by design
            assert (study / p).read_bytes() == (cwd / p).read_bytes(), p


def test_killed_training_job_resumes_from_its_state_bit_identical(study, tmp_path):
    """kill -9 a real training job (quick-m, once it has saved its resume state after a checkpoint past step 0),
    then run Snakemake again: Snakemake reruns the incomplete job without deleting the resume state, the job
    resumes from that state (not from step 0), its checkpoints and training log are byte-identical to the
    uninterrupted build's, and the state is gone once the job is complete."""
    cwd = Path(shutil.copytree(study, tmp_path / "resume", symlinks=True))
    shutil.rmtree(cwd / "models/quick-m")
    target = "models/quick-m/suite.json"
    state = cwd / "models/quick-m/resume/state.json"
    seen = 0
    with open(tmp_path / "killed.log", "w") as out:
        proc = subprocess.Popen(["snakemake", "--cores", "1", target], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300
        while seen < 4 and proc.poll() is None and time.time() < deadline:
            if state.exists():
                seen = json.loads(state.read_text())["step"]
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 4 <= seen < STEPS[-1], seen
    assert not (cwd / target).exists()
    subprocess.run(["snakemake", "--unlock"], cwd=cwd, check=True, capture_output=True)
    _snakemake(cwd, target)
    resumed = re.search(r"resumed from step (\d+) of 200", (cwd / "logs/train/quick-m.log").read_text())
    assert resumed and 4 <= int(resumed.group(1)) < 200
    assert not (cwd / "models/quick-m/resume").exists()
    for p in [*(f"models/quick-m/step{s}/model.safetensors" for s in STEPS), "models/quick-m/train_log.parquet"]:
        assert (study / p).read_bytes() == (cwd / p).read_bytes(), p


def _fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for folder in ("results", "models", "data", "reports") for p in sorted((root / folder).rglob("*"))
            if p.is_file()}


def test_corrupt_inputs_stop_the_build_before_any_job(study, tmp_path):
    """A truncated scores parquet or an unparseable behaviour JSON is named, with "delete it" and what is wrong,
    when the DAG is built: no job starts, so no good output (the circuit JSON, the tables) is deleted."""
    study = Path(shutil.copytree(study, tmp_path / "copy", symlinks=True))
    scores = study / "results/scores/quick-m/ioi/step200.parquet"
    scores.write_bytes(scores.read_bytes()[:200])  # truncated
    before = _fingerprint(study)
    out = subprocess.run(["snakemake", "--cores", "2"], cwd=study, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "results/scores/quick-m/ioi/step200.parquet cannot be read" in text
    assert "delete it and run `snakemake --cores all` again" in text
    assert _fingerprint(study) == before  # the circuit JSON of step 200 and the tables are still there
    scores.unlink()
    behavior = study / "results/behavior/quick-s/ioi/step4.json"
    behavior.write_text('{"model": "quick-s", "ste')
    out = subprocess.run(["snakemake", "--cores", "2", "-n"], cwd=study, capture_output=True, text=True)
    assert out.returncode != 0 and "behaviour file results/behavior/quick-s/ioi/step4.json cannot be read" in (
        out.stdout + out.stderr)


def test_check_lists_missing_corrupt_and_stale_artefacts_and_changes_nothing(study, tmp_path):
    study = Path(shutil.copytree(study, tmp_path / "copy", symlinks=True))
    assert subprocess.run(["circuit-stability", "check"], cwd=study, capture_output=True, text=True).returncode == 0
    (study / "models/quick-m/step100/model.safetensors").unlink()  # a deleted checkpoint
    (study / "results/behavior/quick-s/ioi/step4.json").write_text("{not json")
    nan = study / "results/scores/quick-s/ioi/step200.parquet"
    frame = pd.read_parquet(nan)  # one NaN score, written by hand (the scores writer refuses NaN)
    frame.loc[0, "score"] = np.nan
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(pq.read_schema(nan).metadata)
    pq.write_table(table, nan)
    (study / "config/config.yaml").write_text((study / "config/config.yaml").read_text() + "\nplots: {dpi: 80}\n")
    before = _fingerprint(study)
    out = subprocess.run(["circuit-stability", "check"], cwd=study, capture_output=True, text=True)
    assert out.returncode == 1
    rows = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines()[:-1]}
    assert rows["models/quick-m/step100/model.safetensors"] == "missing"
    assert rows["results/behavior/quick-s/ioi/step4.json"] == "corrupt"
    assert rows["results/scores/quick-s/ioi/step200.parquet"] == "corrupt"
    assert "NaN or infinite" in out.stdout
    assert rows["reports/figures/circuit_size.png"] == "stale"  # the plotting option changed
    assert _fingerprint(study) == before


PLANTED = {"layer": 1, "order": [2, 0, 3, 1]}  # quick-m's second layer: new head i is quick-m's head order[i]


def _relabel(name: str, step: int, from_step: int = 100) -> str:
    """quick-m's node name -> the permuted member's, at ``step`` (a1.h{H}, a1.h{H}<q|k|v> move; nothing else)."""
    from circuit_stability.suite.derive import relabel

    m = re.fullmatch(r"a(\d+)\.h(\d+)(<[qkv]>)?", name)
    if step < from_step or not m or int(m.group(1)) != PLANTED["layer"]:
        return name
    return f"a{m.group(1)}.h{relabel(int(m.group(2)), PLANTED['order'])}{m.group(3) or ''}"


# Normalised effects (direct effect, path patching) divide a change of the logit difference by the clean-to-
# corrupted drop, which is small in quick-m (it has not learnt IOI), so float rounding of the reordered head sum
# is amplified: measured up to 7e-5 of the largest direct effect at step 200 (2026-12-04). The other quantities
# hold to 1e-5.
NORMALISED_REL = 1e-3


def _close(a, b, rel: float = 1e-5) -> bool:
    """Equal within ``rel`` of the larger magnitude (float rounding of a reordered sum over heads)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(np.nanmax(np.abs(a), initial=0.0), np.nanmax(np.abs(b), initial=0.0), 1e-12)
    return a.shape == b.shape and bool(np.all((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= rel * scale + 1e-7)))


def test_planted_head_permutation_is_recovered_by_every_analysis(study, tmp_path):
    """A member derived from quick-m by permuting layer 1's heads from step 100 on computes quick-m's function,
    so every analysis has a known answer: behaviour equal at every checkpoint; at step 0 every artefact equal to
    quick-m's; at step 200 EAP-IG scores, head scores, role flags and path-patching effects equal after relabelling
    the heads (within 1e-5 of the largest value; normalised effects within NORMALISED_REL), circuits equal up to
    the relabelling, the algorithm metrics and the role-pair composition equal, and the edge Jaccard with step 0
    what the relabelled circuits predict. (quick-m learns no task and has 2 layers, so its hand-over table is
    empty and its algorithm metrics undefined: the long study's control row tests those on a model that has them.)"""
    from circuit_stability.records import ComponentsRecord, StabilityRecord
    from circuit_stability.similarity import jaccard

    cwd = Path(shutil.copytree(study, tmp_path / "planted", symlinks=True))
    config = yaml.safe_load((cwd / "config/config.yaml").read_text())
    models = {**config["suite"]["models"],
              "quick-m-permuted": {"derived_from": "quick-m", "permute_heads": PLANTED, "from_step": 100}}
    (cwd / "config/planted.yaml").write_text(json.dumps({"extends": "config.yaml", "suite": {"models": models}}))
    _snakemake(cwd, "--configfile", "config/planted.yaml")
    src, der = "quick-m", "quick-m-permuted"
    manifest = json.loads((cwd / f"models/{der}/suite.json").read_text())
    assert manifest["derived"] == {"source": src, **PLANTED, "from_step": 100}
    for t in TASKS:
        for s in STEPS:
            a, b = (json.loads((cwd / f"results/behavior/{m}/{t}/step{s}.json").read_text()) for m in (src, der))
            assert _close(a["metric"], b["metric"]) and a["accuracy"] == b["accuracy"], (t, s)
    for s in SCORED:
        for t in TASKS:
            a, b = (pd.read_parquet(cwd / f"results/scores/{m}/{t}/step{s}.parquet") for m in (src, der))
            moved = {(_relabel(u, s), _relabel(v, s)): x for u, v, x in zip(a["src"], a["dst"], a["score"])}
            got = dict(zip(zip(b["src"], b["dst"]), b["score"]))
            assert moved.keys() == got.keys()
            keys = sorted(got)
            if s == 0:
                assert [moved[k] for k in keys] == [got[k] for k in keys]  # the same checkpoint: the same bytes
            assert _close([moved[k] for k in keys], [got[k] for k in keys]), (t, s)
            ca, cb = (CircuitRecord.read(cwd / f"results/circuits/{m}/{t}/step{s}.json") for m in (src, der))
            assert ca.valid == cb.valid and ca.size == cb.size
            assert {"->".join(map(lambda n: _relabel(n, s), e.split("->"))) for e in ca.edges} == set(cb.edges)
        a, b = (ComponentsRecord.read(cwd / f"results/components/{m}/step{s}.parquet").frame() for m in (src, der))
        a = a.assign(head=[_relabel(h, s) for h in a["head"]]).set_index(["head", "score"])["value"]
        b = b.set_index(["head", "score"])["value"]
        for score in sorted(set(b.index.get_level_values("score"))):
            rel = NORMALISED_REL if score in ("direct_effect", "query_effect") else 1e-5
            assert _close(a.xs(score, level="score").sort_index(), b.xs(score, level="score").sort_index(), rel), \
                (s, score)
        a, b = (StabilityRecord.read(cwd / f"results/stability/{m}/ioi/step{s}.parquet") for m in (src, der))
        assert a.meta["valid"] == b.meta["valid"] and a.meta["undefined"] == b.meta["undefined"]
        fa = a.frame.assign(head=[_relabel(h, s) for h in a.frame["head"]]).set_index(["receivers", "form", "head"])
        fb = b.frame.set_index(["receivers", "form", "head"])
        assert sorted(fa.index) == sorted(fb.index)
        assert _close(fa["effect"].sort_index(), fb["effect"].sort_index(), NORMALISED_REL)
        assert fa["in_class"].sort_index().equals(fb["in_class"].sort_index())
    tables = cwd / "results/tables"
    roles = pd.read_parquet(tables / "roles.parquet")
    a, b = roles[roles["model"] == src].copy(), roles[roles["model"] == der].copy()
    a["head"] = [_relabel(h, s) for h, s in zip(a["head"], a["step"])]
    key = ["task", "step", "head"]
    role_cols = [c for c in roles.columns if c not in (*key, "model", "tokens_seen", "layer", "head_index")]
    assert a.sort_values(key)[key + role_cols].reset_index(drop=True).equals(
        b.sort_values(key)[key + role_cols].reset_index(drop=True))
    algo = pd.read_parquet(tables / "algorithm.parquet")
    cols = ["step", "panel", "receivers", "form", "denominator"]
    a, b = (algo[algo["model"] == m].sort_values(cols).reset_index(drop=True) for m in (src, der))
    b["reason"] = b["reason"].str.replace(der, src)  # the reasons name the model
    assert a[cols + ["formed", "reason"]].equals(b[cols + ["formed", "reason"]])
    assert _close(a["value"], b["value"], NORMALISED_REL)
    comp = pd.read_parquet(tables / "composition.parquet")
    cols = ["task", "step", "src_role", "dst_role", "n_edges"]
    a, b = (comp[comp["model"] == m].sort_values(cols).reset_index(drop=True) for m in (src, der))
    assert a[cols].equals(b[cols])
    controls = pd.read_parquet(tables / "findings.parquet").query("finding == 'control'")
    assert set(controls["model"]) == {der}

    def control(prefix):
        return controls[controls["quantity"].str.startswith(prefix)]

    behaviour, hand = control("behaviour").iloc[0], control("hand-overs").iloc[0]
    assert behaviour["value"] <= 1e-5 and behaviour["n"] == len(TASKS) * len(STEPS)
    assert hand[["low", "high"]].tolist() == [0.0, 0.0]  # nothing missing or extra
    assert len(control("Fig. 4")) == 1
    for _, j in control("edge Jaccard of step 200 with step 0").iterrows():  # tasks with valid circuits at both
        assert j["value"] == j["low"], j.to_dict()  # as the permutation predicts
    for _, c in control("role-pair composition").iterrows():  # present when the two share a valid (task, step)
        assert c["n"] == 0 or c["value"] == 1.0, c.to_dict()
    sim = pd.read_parquet(tables / "similarity.parquet")
    for t in TASKS:
        c0, c200 = (set(CircuitRecord.read(cwd / f"results/circuits/{der}/{t}/step{s}.json").edges) for s in SCORED)
        row = sim[(sim["model"] == der) & (sim["task"] == t) & (sim["step"] == 200)]
        expected = jaccard(c0, c200) if c0 or c200 else np.nan
        assert _close(row["jaccard_prev"], [expected]), (t, row["jaccard_prev"].tolist(), expected)


def test_the_checkpoint_audit_gates_every_analysis_and_applies_the_integrity_policy(study, tmp_path):
    """The built quick study's checkpoints pass the audit (file and tensor level). The final checkpoint of quick-s
    copied under step 100's label (EleutherAI/pythia #205's case) stops the build at the audit gate before any
    analysis job reads it, naming it; run again, the study is planned without it (suite.integrity: skip), listed as
    skipped in the checkpoint_audit table and absent from the behaviour table; `error` refuses to plan, naming it;
    `keep` plans it with a warning."""
    cwd = Path(shutil.copytree(study, tmp_path / "audited", symlinks=True))
    audit = pd.read_parquet(cwd / "results/tables/checkpoint_audit.parquet")
    assert set(audit["model"]) == set(MODELS) and set(audit["level"]) == {"file", "tensor"}
    assert (audit["flag"] == "").all() and (audit["action"] == "").all()
    assert len(audit) == 2 * len(MODELS) * len(STEPS)

    shutil.copy(cwd / "models/quick-s/step200/model.safetensors", cwd / "models/quick-s/step100/model.safetensors")
    behavior = cwd / "results/behavior/quick-s/ioi/step100.json"
    before = (behavior.read_bytes(), behavior.stat().st_mtime_ns)
    out = subprocess.run(["snakemake", "--cores", "2"], cwd=cwd, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "flagged 1 checkpoint(s) of quick-s" in text and "step 100: final_weights" in text, text[-3000:]
    assert "suite.integrity: skip leaves them out: run the same command again" in text
    assert (behavior.read_bytes(), behavior.stat().st_mtime_ns) == before  # no analysis read the planted checkpoint

    out = _snakemake(cwd)
    assert ("quick-s: 1 checkpoint(s) flagged by the checkpoint audit, skipped (suite.integrity: skip): step 100 "
            "(final_weights: step 100 holds the final checkpoint's weights (step 200))") in out.stdout + out.stderr
    audit = pd.read_parquet(cwd / "results/tables/checkpoint_audit.parquet")
    flagged = audit[audit["flag"] != ""]
    assert set(zip(flagged["model"], flagged["step"], flagged["flag"], flagged["action"])) == {
        ("quick-s", 100, "final_weights", "skipped")}
    # listed in the report (its page embedded) and in the MLflow run of the build
    import base64

    html = (cwd / "reports/report.html").read_text()
    page = re.search(r"filename=checkpoint_audit.html;base64,([A-Za-z0-9+/=]+)", html)
    assert page and re.search(r"<td>quick-s</td>\s*<td>100</td>\s*<td>file</td>\s*<td>final_weights</td>",
                              base64.b64decode(page.group(1)).decode())
    from mlflow import MlflowClient

    summary = json.loads((cwd / "results/tracking/quick.json").read_text())
    params = MlflowClient(summary["tracking_uri"]).get_run(summary["parent_run_id"]).data.params
    assert params["checkpoints_flagged"] == "quick-s:100:final_weights:skipped"
    table = pd.read_parquet(cwd / "results/tables/behavior.parquet")
    assert 100 not in set(table[table["model"] == "quick-s"]["step"])
    assert 100 in set(table[table["model"] == "quick-m"]["step"])

    config = yaml.safe_load((cwd / "config/config.yaml").read_text())
    for policy, ok, said in (("error", False, "suite.integrity: error, and the checkpoint audit (results/audit/) "
                              "flagged:\n  quick-s step 100: final_weights"),
                             ("keep", True, "kept and marked (suite.integrity: keep)")):
        config["suite"]["integrity"] = policy
        (cwd / f"config/{policy}.yaml").write_text(json.dumps(config))
        out = subprocess.run(["snakemake", "-n", "--configfile", f"config/{policy}.yaml"], cwd=cwd,
                             capture_output=True, text=True, timeout=600)
        assert (out.returncode == 0) == ok and said in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
