"""The paper's scale, proven offline: the Pythia DAG, job resources and retries, GPU slots, hub downloads."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from circuit_stability.checkpoints import pythia_schedule
from circuit_stability.cli import EXIT_OUT_OF_MEMORY, out_of_memory
from circuit_stability.devices import claim_gpu, release_gpu, visible_gpus
from circuit_stability.scale import job_resources, pythia_shape, thin

ROOT = Path(__file__).resolve().parents[1]
PYTHIA = ["70m", "160m", "410m", "1b", "1.4b", "2.8b"]
BATCH = {"70m": 70, "160m": 70, "410m": 70, "1b": 35, "1.4b": 35, "2.8b": 20}
DTYPE = {"70m": "float32", "160m": "float32", "410m": "float32", "1b": "bfloat16", "1.4b": "bfloat16",
         "2.8b": "bfloat16"}
KIND = {"Behaviour": "behavior", "Edge scores": "scores", "Minimal circuits": "circuit", "Components": "components",
        "Path patching": "stability", "Circuit similarity": "circuit"}


def _offline(cmd: list[str]) -> list[str]:
    """``cmd`` in a network namespace with no network at all (root, util-linux ``unshare``)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"cannot drop the network for the offline check: {probe.stderr}"
    return ["unshare", "-n", *cmd]


@pytest.fixture(scope="module")
def paper_dag(tmp_path_factory) -> str:
    """The dry run of config/pythia.yaml (6 models x 154 checkpoints x 4 tasks) with no network, commands shown."""
    cwd = tmp_path_factory.mktemp("pythia")
    for name in ("Snakefile", "rules", "config", "report", "profiles"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, cwd / name)
    out = subprocess.run(_offline(["snakemake", "-n", "-p", "--configfile", "config/pythia.yaml",
                                   "--resources", "gpu=4", "hf_io=2"]),
                         cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_paper_scale_dag_job_counts(paper_dag):
    """Every (model, checkpoint) downloaded once; scores and circuits per (model, task, checkpoint); path patching
    at every checkpoint of 70m-410m and a third of them (stability_every 3) of 1b-2.8b; one audit, gate and circuit
    view per model."""
    table = paper_dag.split("Job stats:")[1].split("\n\n")[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    n = len(pythia_schedule())
    assert n == 154 and len(thin(pythia_schedule(), 3)) == 52
    assert counts == {"download": 6 * n, "dataset": 4, "behavior": 6 * n, "components": 6 * n, "scores": 6 * 4 * n,
                      "circuit": 6 * 4 * n, "stability_g0": 3 * n, "stability_g1": 3 * 52, "similarity": 6,
                      "tables": 1, "figures": 1, "report": 1, "track": 1, "all": 1,
                      # the checkpoint audit of each model, its gate and the study's table; each model's circuit view
                      "audit": 6, "audit_gate": 6, "audit_table": 1, "circuit_view": 6, "total": 10_816}


def test_paper_scale_dag_resources(paper_dag):
    """Each model job asks for one GPU and the memory, time and batch size of its model (hub.settings), and
    every one of them reads the hub cache offline."""
    jobs = re.findall(r"^Job \d+: (Behaviour|Edge scores|Minimal circuits|Components|Path patching|Circuit similarity)"
                      r"[^:]*: model pythia-([0-9.]+[mb]).*\[gpu (\d+), (\d+) MB, (\d+) min, batch (\d+)\]$",
                      paper_dag, re.M)
    assert len(jobs) == 10_797 - 924 - 4 - 5
    for what, size, gpu, mem, runtime, batch in jobs:
        want = job_resources(KIND[what], pythia_shape(size), DTYPE[size], BATCH[size], 1, 1, 1)
        assert (int(gpu), int(mem), int(runtime), int(batch)) == (
            want["gpu"], want["mem_mb"], want["runtime"], want["batch_size"]), (what, size)
    downloads = re.findall(r"^Job \d+: Download: EleutherAI/pythia-\S+ step \d+ into HF_HOME \[hf_io 1\]$", paper_dag, re.M)
    assert len(downloads) == 924
    commands = [line for line in paper_dag.splitlines() if "circuit-stability --log" in line]
    model_commands = [c for c in commands if re.search(r" (behavior|scores|circuit|heads|stability|similarity|dataset) ", c)]
    assert model_commands and all("HF_HUB_OFFLINE=1 " in c for c in model_commands)
    assert all("HF_HUB_OFFLINE" not in c for c in commands if " download " in c)


def test_job_resources_halve_the_batch_and_grow_on_retry():
    shape = pythia_shape("1b")
    first, second, third = (job_resources("scores", shape, "bfloat16", 35, 1, a, 1) for a in (1, 2, 3))
    assert (first["batch_size"], second["batch_size"], third["batch_size"]) == (35, 17, 8)
    assert second["mem_mb"] == 2 * first["mem_mb"] and third["runtime"] == 3 * first["runtime"]
    # 12 L d^2 + 2 V d for pythia-1b: 16 layers, d_model 2048, 50,304 rows
    assert shape.n_parameters == 12 * 16 * 2048**2 + 2 * 50_304 * 2048
    assert first["mem_mb"] == 2000 + int(2 * 2 * shape.n_parameters / 1e6)
    assert job_resources("scores", shape, "bfloat16", 1, 1, 5, 1)["batch_size"] == 1
    with pytest.raises(ValueError, match="unknown job kind 'score'"):
        job_resources("score", shape, "bfloat16", 35, 1, 1, 1)
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        job_resources("scores", shape, "bfloat16", 35, 1, 0, 1)


def test_thin_keeps_first_and_last():
    assert thin([0, 1, 2, 4, 8, 16, 32, 64], 3) == [0, 4, 32, 64]
    assert thin([5], 4) == [5] and thin([], 2) == []
    assert thin(pythia_schedule(), 1) == pythia_schedule()


def test_out_of_memory_is_recognised_on_a_real_allocation_failure():
    with pytest.raises(RuntimeError) as error:
        torch.empty(1 << 62, dtype=torch.uint8)  # 4 EiB: the CPU allocator refuses
    assert out_of_memory(error.value)
    assert not out_of_memory(RuntimeError("shape mismatch")) and not out_of_memory(ValueError("x"))
    assert EXIT_OUT_OF_MEMORY == 75


# ---------------------------------------------------------------- GPU slots
def _claimer(lock_dir: Path, gpus: str, hold: float = 60) -> subprocess.Popen:
    code = ("import sys, time; from circuit_stability.devices import claim_gpu; "
            "s = claim_gpu(sys.argv[1], poll=0.05, say=lambda m: print('WAIT', flush=True)); "
            "import os; print('GOT', s.device, os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(float(sys.argv[2]))")
    env = {**os.environ, "CIRCUIT_STABILITY_GPUS": gpus}
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen([sys.executable, "-c", code, str(lock_dir), str(hold)], env=env, stdout=subprocess.PIPE,
                            text=True)


def test_each_job_gets_its_own_gpu(tmp_path):
    first, second = _claimer(tmp_path, "0,1"), _claimer(tmp_path, "0,1")
    lines = [first.stdout.readline().split(), second.stdout.readline().split()]
    for p in (first, second):
        p.kill()
        p.wait()
    assert sorted(line[1] for line in lines) == ["0", "1"]
    assert all(line[1] == line[2] for line in lines)  # CUDA_VISIBLE_DEVICES names the claimed device


def test_killed_job_releases_its_gpu(tmp_path, random_suite):
    """kill -9 a real model job holding the only GPU slot: the job waiting for it gets the device and finishes."""
    from circuit_stability.records import write_dataset
    from circuit_stability.suite import corpus
    from circuit_stability.suite.tokenizer import build_tokenizer
    from circuit_stability.tasks import make_dataset

    dataset = tmp_path / "ioi.parquet"
    write_dataset(make_dataset("ioi", build_tokenizer(corpus.lexicon_sample()), 8, 0), dataset)
    env = {**os.environ, "CIRCUIT_STABILITY_GPUS": "0", "CIRCUIT_STABILITY_GPU_LOCKS": str(tmp_path / "locks")}
    env.pop("SLURM_JOB_ID", None)

    def job(out: str) -> subprocess.Popen:
        return subprocess.Popen(["circuit-stability", "behavior", "--model", "rand", "--suite-dir", str(random_suite),
                                 "--steps", "0", "--dataset", str(dataset), "--tokens-per-step", "1",
                                 "--out-dir", str(tmp_path / out)], env=env, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    # the first job holds the slot: a process that claimed it and then stopped (SIGSTOP), i.e. a job mid-run
    holder = job("a")
    seen = ""
    while "GPU slot: device 0" not in seen:
        line = holder.stderr.readline()
        assert line, f"the first job ended without claiming the slot: {seen}"
        seen += line
    os.killpg(holder.pid, signal.SIGSTOP)
    if holder.poll() is not None:
        pytest.fail("the first job ended before it could be stopped mid-run")
    waiter = job("b")
    first = waiter.stderr.readline()  # its first line: it found the slot taken and waits
    assert "every GPU slot (0) is taken; waiting for one to be released" in first, first
    time.sleep(1)
    assert waiter.poll() is None, "the second job did not wait for the held slot"
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    _, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err[-2000:]
    assert re.search(r"GPU slot: device 0 \(CUDA_VISIBLE_DEVICES=0; waited [1-9]", err), err[-2000:]
    assert (tmp_path / "b" / "step0.json").exists() and not (tmp_path / "a" / "step0.json").exists()


def test_no_gpu_means_no_slot(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUIT_STABILITY_GPUS", "")
    assert visible_gpus() == [] and claim_gpu(tmp_path) is None
    monkeypatch.setenv("CIRCUIT_STABILITY_GPUS", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # SLURM has chosen the devices
    assert claim_gpu(tmp_path) is None
    release_gpu()


# ---------------------------------------------------------------- hub downloads
def test_unreachable_hub_fails_the_download_naming_model_step_and_revision(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    out = subprocess.run(["circuit-stability", "download", "--model-name", "EleutherAI/pythia-70m", "--step", "1000",
                          "--out", str(tmp_path / "m.json")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and not (tmp_path / "m.json").exists()
    assert "EleutherAI/pythia-70m step 1000 (revision 'step1000')" in out.stderr
    assert "the hub cannot be reached" in out.stderr
    bad = subprocess.run(["circuit-stability", "download", "--model-name", "EleutherAI/pythia-70m", "--step", "1001",
                          "--out", str(tmp_path / "m.json")], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "has no checkpoint at step 1001" in bad.stderr
    # other families: CRFM's revision is formatted from the step; OLMo's must be found among the hub's branches
    for repo, said in [("stanford-crfm/alias-gpt2-small-x21",
                        "stanford-crfm/alias-gpt2-small-x21 step 1000 (revision 'checkpoint-1000')"),
                       ("allenai/OLMo-1B-0724-hf", "allenai/OLMo-1B-0724-hf step 1000: listing its revisions failed")]:
        out = subprocess.run(["circuit-stability", "download", "--model-name", repo, "--step", "1000", "--out",
                              str(tmp_path / "m.json")], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and said in out.stderr and "the hub cannot be reached" in out.stderr, out.stderr


def test_evict_deletes_the_revision_from_the_cache(tmp_path):
    """A revision laid out as huggingface_hub caches it (blobs, snapshots/<commit>, refs/<branch>) is deleted by
    its download marker; a second eviction frees nothing."""
    from circuit_stability.hub import evict_checkpoint

    repo = tmp_path / "hub" / "models--EleutherAI--pythia-70m"
    commit, blob = "a" * 40, "b" * 64
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / blob).write_bytes(b"x" * 1000)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model.safetensors").symlink_to(f"../../blobs/{blob}")
    (repo / "refs").mkdir()
    (repo / "refs" / "step1000").write_text(commit)
    marker = tmp_path / "step1000.json"
    marker.write_text(json.dumps({"model": "EleutherAI/pythia-70m", "step": 1000, "commit": commit}))
    assert evict_checkpoint(marker, tmp_path / "hub") == 1000
    assert not (repo / "blobs" / blob).exists() and not (repo / "snapshots" / commit).exists()
    assert evict_checkpoint(marker, tmp_path / "hub") == 0


def test_evict_jobs_wait_for_every_reader_of_their_checkpoint(tmp_path):
    """With hub.evict, one evict job per (model, checkpoint); the jobs an eviction waits for include every job that
    loads that checkpoint: behaviour, components, scores and circuits for each task, and path patching where the
    model patches that step (pythia-1b: every third checkpoint, the last kept; pythia-70m: every one)."""
    import yaml

    for name in ("Snakefile", "rules", "config", "report", "profiles"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    cfg = yaml.safe_load((ROOT / "config/pythia.yaml").read_text())
    steps = [0, 1000, 2000, 3000, 143000]
    cfg["hub"].update(models=["EleutherAI/pythia-70m", "EleutherAI/pythia-1b"], steps=steps, evict=True)
    (tmp_path / "config/evict.yaml").write_text(yaml.safe_dump(cfg))

    def dry_run(*targets: str) -> str:
        out = subprocess.run(_offline(["snakemake", "-n", *targets, "--configfile", "config/evict.yaml"]),
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    evicts = re.findall(r"^Job \d+: Evict: EleutherAI/pythia-(\S+) step (\d+) from HF_HOME", dry_run(), re.M)
    assert sorted((m, int(s)) for m, s in evicts) == sorted((m, s) for m in ("70m", "1b") for s in steps)
    tasks = ("gp", "greater_than", "ioi", "sva")
    for size, step, patched in (("70m", 1000, True), ("1b", 1000, False), ("1b", 3000, True)):
        plan = dry_run(f"data/hub/pythia-{size}/step{step}.evicted")
        jobs = set()  # (stage, task or None) of the model jobs at this step
        for kind, rest, at in re.findall(rf"^Job \d+: ([A-Z][\w ]+?)(?: \([^)]*\))?: model pythia-{re.escape(size)}"
                                         r"(.*?), steps (\d+) \[", plan, re.M):
            if int(at) == step:
                task = re.search(r", task (\w+)", rest)
                jobs.add((kind, task.group(1) if task else None))
        want = {("Behaviour", None), ("Components", None), *(("Edge scores", t) for t in tasks),
                *(("Minimal circuits", t) for t in tasks)} | ({("Path patching", None)} if patched else set())
        assert jobs == want, (size, step)
        assert size == "70m" or (step in thin(steps, 3)) == patched  # the test's own premise


def test_the_paper_scale_datasets_read_pythias_tokenizer_at_the_last_checkpoint(paper_dag):
    assert "dataset --task ioi --tokenizer EleutherAI/pythia-70m --revision step143000 --n-examples 70" in paper_dag


@pytest.mark.parametrize("study, models, steps, family, tokenizer", [
    ("crfm-gpt2", 5, 6, "crfm", "stanford-crfm/alias-gpt2-small-x21 --revision checkpoint-400000 "),
    ("olmo", 1, 4, "olmo", ""),  # (its revision is read from the download marker as the job runs)
    ("smollm2", 1, 4, "smollm2", "HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints --revision step-1200000 ")])
def test_other_family_studies_plan_offline(tmp_path, study, models, steps, family, tokenizer):
    """config/crfm-gpt2.yaml, olmo.yaml and smollm2.yaml plan with no network: a download, behaviour and components
    job per (model, checkpoint), scores and circuits per task too, the audit of each model before them, datasets
    tokenised with the family's tokenizer, and each model job's resources from the family's published shape."""
    from circuit_stability.config import load_config
    from circuit_stability.scale import hub_shape

    for name in ("Snakefile", "rules", "config", "report", "profiles"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    out = subprocess.run(_offline(["snakemake", "-n", "-p", "--configfile", f"config/{study}.yaml",
                                   "--resources", "gpu=4", "hf_io=2"]),
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    table = text.split("Job stats:")[1].split("\n\n")[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    n = models * steps
    assert {k: counts[k] for k in ("audit", "download", "behavior", "components", "scores", "circuit", "stability",
                                   "dataset")} == {"audit": models, "download": n, "behavior": n, "components": n,
                                                   "scores": 4 * n, "circuit": 4 * n, "stability": n, "dataset": 4}
    assert f"data/tasks/{family}/ioi.parquet" in text and f"dataset --task ioi --tokenizer {tokenizer}" in text
    config = load_config(tmp_path / f"config/{study}.yaml")
    names = {r.split("/")[-1]: r for r in config["hub"]["models"]}
    jobs = re.findall(r"^Job \d+: (Behaviour|Edge scores|Minimal circuits|Components|Path patching)[^:]*: model "
                      r"(\S+?),.*\[gpu (\d+), (\d+) MB, (\d+) min, batch (\d+)\]$", text, re.M)
    assert len(jobs) == 11 * n
    for what, model, gpu, mem, runtime, batch in jobs:
        settings = config["hub"]["settings"][names[model]]
        want = job_resources(KIND[what], hub_shape(names[model]), settings["dtype"], settings["batch_size"], 1, 1, 1)
        assert (int(gpu), int(mem), int(runtime), int(batch)) == (
            want["gpu"], want["mem_mb"], want["runtime"], want["batch_size"]), (what, model)
