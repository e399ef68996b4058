"""The SLURM path end to end, on a real cluster: `scripts/slurm-cluster start` runs a single-node SLURM cluster on
this machine (Debian's slurm-wlm 22.05 with slurmdbd accounting in MariaDB, munge, select/cons_tres, 2 fake GPUs),
the quick study runs through `profiles/slurm` (snakemake-executor-plugin-slurm 2.8.0), and then: every SLURM job
COMPLETED, the model jobs were allocated a GPU, groups made fewer SLURM jobs than Snakemake jobs, and the results
equal those of the local build of the same study (conftest's `versioned_study`).

Needs root (the cluster's daemons) and the Debian packages (`.ci/run` installs them); a cluster that cannot start is
a failure with the script's output, not a skip. The cluster is stopped afterwards unless it was already up. The
cluster starts with the session and the SLURM build in the background once the local build has finished (conftest's
`_slurm_build`), beside the other tests: it mostly waits on the queue and the plugin's status checks; these tests run
at the end of the session (conftest's BACKGROUND_FILES), and compare with the local build's artefacts as that build
left them (conftest's `versioned_study_as_built`: tests/test_tracking.py edits a circuit record of the study)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, SLURM_COMMAND as COMMAND, study_env

pytestmark = pytest.mark.slow

CLUSTER = ROOT / "scripts/slurm-cluster"
PARTITION, ACCOUNT = "debug", "circuit"  # scripts/slurm-cluster's names, which profiles/slurm ships with
# Snakemake jobs that run on the submitting machine, not in SLURM: `all`, and the rules marked `localrule`.
LOCAL_RULES = {"all", "report", "track"}
# SLURM jobs that must be allocated a GPU, by the comment the plugin gives them ("rule_<group or rule>_..."): the
# group of the per-checkpoint model jobs, and any model job outside it; the others (corpus, datasets, training, the
# group "summary" of tables and figures) must not be.
# (the circuit view, a plot drawn from the tables, is a CPU job: `rule_circuit_view...` is not the circuit rule)
GPU_JOBS = re.compile(r"^rule_(checkpoints|behavior|components|scores|circuit(?!_view)|stability|similarity)")

# Files of the two builds that legitimately differ, and why. Every other file under data/, models/ and results/
# (checkpoints, datasets, per-checkpoint records, tables) must be byte-identical to the local build's.
DIFFERENT_FILES = {
    "results/tracking/quick.json": "the MLflow run ids of each build's own tracking database",
}
# Fields of the per-checkpoint records (behaviour JSON, circuit JSON, scores parquet metadata) left out when they are
# compared by content: none. The records hold no wall-clock time, peak memory, host, path or timestamp (those are
# in logs/benchmarks/*.tsv and the SLURM logs, which are not compared; tests/test_pipeline.py checks that a resumed
# local build reproduces every versioned file byte for byte). A field added to a record that differs between runs
# fails the comparison below and belongs here, named.
VOLATILE_FIELDS: frozenset[str] = frozenset()


def _run(cmd: list, timeout: int, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=study_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster(_slurm_build) -> subprocess.CompletedProcess:
    """`scripts/slurm-cluster start`'s outcome (conftest's `_slurm_build` started the cluster as the session
    began), which each test checks first (:func:`_require`)."""
    return _slurm_build["start"]


def _require(start: subprocess.CompletedProcess) -> None:
    """Fail the test (not skip it) with the script's output when the cluster did not start."""
    if start.returncode != 0:
        pytest.fail(f"scripts/slurm-cluster start failed (exit {start.returncode}):\n{start.stdout}\n{start.stderr}",
                    pytrace=False)


@pytest.fixture(scope="module")
def slurm_study(_slurm_build) -> dict | None:
    """The quick study built through profiles/slurm in a fresh copy of this checkout (started in the background by
    conftest's `_slurm_build` once the local build had finished): the repository, the console output, the plugin's
    run id (every SLURM job's name) and the build's wall time; None when the cluster did not start."""
    if _slurm_build["start"].returncode != 0:
        return None
    build = _slurm_build["build"]
    code = build.wait(timeout=2400)
    seconds = time.time() - build.started
    log = build.log.read_text()
    assert code == 0, f"{' '.join(COMMAND)} failed after {seconds:.0f} s:\n{log[-6000:]}"
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, f"no 'SLURM run ID' in the build's output:\n{log[-3000:]}"
    print(f"\nquick study through SLURM: {seconds:.0f} s (beside the other tests)")
    return {"repo": _slurm_build["repo"], "log": log, "run_id": run_id.group(1), "seconds": seconds,
            "since": datetime.fromtimestamp(build.started) - timedelta(minutes=5)}


def _sacct(*args: str) -> list[dict[str, str]]:
    fields = ["JobIDRaw", "JobName", "State", "ExitCode", "Comment", "Account", "Partition", "AllocTRES"]
    out = _run(["sacct", "-X", "-P", "-n", "--format", ",".join(fields), *args], 60)
    assert out.returncode == 0, out.stderr
    return [dict(zip(fields, line.split("|", len(fields) - 1))) for line in out.stdout.splitlines() if line]


def test_cluster_schedules_and_accounts_a_gpu_job(slurm_cluster, tmp_path):
    """`sbatch --gpus=1` on the fake GRES: scheduled, run, accounted with gres/gpu=1 in the account."""
    _require(slurm_cluster)
    out = _run(["sbatch", "--parsable", "-A", ACCOUNT, "-p", PARTITION, "--gpus=1", "--mem=100", "-t", "5",
                "-o", tmp_path / "%j.out", "--wrap", "hostname"], 60)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = _sacct("-j", job)
        if rows and rows[0]["State"] not in ("PENDING", "RUNNING", "COMPLETING"):
            break
        time.sleep(1)
    assert rows and rows[0]["State"] == "COMPLETED", rows
    assert rows[0]["Account"] == ACCOUNT and "gres/gpu=1" in rows[0]["AllocTRES"].split(","), rows[0]
    assert (tmp_path / f"{job}.out").read_text().strip()


def test_every_slurm_job_completed_and_model_jobs_had_a_gpu(slurm_cluster, slurm_study):
    _require(slurm_cluster)
    jobs = _sacct("--name", slurm_study["run_id"], "--starttime", slurm_study["since"].strftime("%Y-%m-%dT%H:%M:%S"))
    assert jobs, f"sacct lists no job named {slurm_study['run_id']}"
    assert [j for j in jobs if j["State"] != "COMPLETED" or j["ExitCode"] != "0:0"] == []
    assert {(j["Account"], j["Partition"]) for j in jobs} == {(ACCOUNT, PARTITION)}
    gpu = [j for j in jobs if GPU_JOBS.match(j["Comment"])]
    assert len(gpu) >= 4, [j["Comment"] for j in jobs]  # 2 groups (one per model) and 2 similarity jobs at least
    for j in jobs:
        tres = dict(t.split("=", 1) for t in j["AllocTRES"].split(","))
        assert tres.get("gres/gpu") == ("1" if j in gpu else None), j


def test_groups_make_fewer_slurm_jobs_than_snakemake_jobs(slurm_cluster, slurm_study):
    _require(slurm_cluster)
    jobs = _sacct("--name", slurm_study["run_id"], "--starttime", slurm_study["since"].strftime("%Y-%m-%dT%H:%M:%S"))
    finished = re.findall(r"Finished jobid: \S+ \(Rule: (\w+)\)", slurm_study["log"])
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", slurm_study["log"])
    assert done and done[-1][0] == done[-1][1] and int(done[-1][1]) == len(finished), done
    remote = [r for r in finished if r not in LOCAL_RULES]
    groups = [j for j in jobs if j["Comment"].startswith("rule_checkpoints")]
    print(f"\n{len(finished)} Snakemake jobs, {len(remote)} of them remote, in {len(jobs)} SLURM jobs "
          f"({len(groups)} of the group 'checkpoints')")
    assert len(groups) >= 1 and len(jobs) < len(remote), (len(jobs), len(remote))


def _json_content(path: Path) -> object:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(path.read_text()))


def _parquet_content(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()
            if k != b"pandas" and k.decode() not in VOLATILE_FIELDS}
    return pd.read_parquet(path), meta


def test_results_equal_the_local_build(slurm_cluster, slurm_study, versioned_study_as_built):
    _require(slurm_cluster)
    slurm, local = slurm_study["repo"], versioned_study_as_built
    # (DVC's .gitignore files are left out: the copy predates tests/test_dvc.py's `dvc commit`, which adds them)
    rel = lambda root: {str(p.relative_to(root)) for d in ("data", "models", "results") for p in (root / d).rglob("*")
                        if p.is_file() and p.name != ".gitignore"}
    assert rel(slurm) == rel(local)
    # per-checkpoint records by content, so that a difference names the field
    records = sorted(p for p in rel(local) if re.match(r"results/(behavior|circuits|scores)/", p))
    assert len(records) == 2 * 2 * 6 + 2 * 2 * 2 * 3  # behaviour at 6 steps; scores, per-example scores, circuits at 2
    for p in records:
        if p.endswith(".json"):
            assert _json_content(slurm / p) == _json_content(local / p), p
        else:
            (a, meta_a), (b, meta_b) = _parquet_content(slurm / p), _parquet_content(local / p)
            pd.testing.assert_frame_equal(a, b, check_exact=True, obj=p)
            assert meta_a == meta_b, p
    # and every file, byte for byte (checkpoints, datasets, components, path patching, similarity, tables)
    md5 = lambda path: hashlib.md5(path.read_bytes()).hexdigest()
    differ = sorted(p for p in rel(local) if md5(slurm / p) != md5(local / p))
    assert differ == sorted(p for p in DIFFERENT_FILES if p in rel(local)), differ
