"""The checkpoint audit on hand-built checkpoints and on the hub's own file-metadata objects (offline)."""

import hashlib
import re
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub.hf_api import RepoFile
from safetensors.torch import save_file

from circuit_stability.audit import (checkpoint_digest, content_id, file_level_audit, hub_weight_hashes,
                                     lineage_audit, tensor_level_audit)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _repo_file(path: str, sha256: str | None) -> RepoFile:
    """A RepoFile as huggingface_hub builds it from the hub's tree JSON (git-LFS files carry their SHA-256)."""
    lfs = {"size": 5_000_000_000, "oid": sha256, "pointerSize": 135} if sha256 else None
    return RepoFile(path=path, size=5_000_000_000 if sha256 else 500, oid=_sha(path)[:40], lfs=lfs)


# EleutherAI/pythia #205's pattern for pythia-2.8b: early steps serving main's (the final step's) weights, two
# steps sharing a second blob, the others their own
MAIN, SECOND = _sha("main blob"), _sha("second blob")
PYTHIA_28B = {0: MAIN, 1: _sha("s1"), 512: MAIN, 1000: MAIN, 2000: _sha("s2000"), 54000: SECOND, 55000: MAIN,
              98000: SECOND, 143000: MAIN}


def _tree(repo, revision):
    """A revision's tree; every revision also serves a step-specific pytorch_model.bin, which a load does not read
    where model.safetensors exists (so it must not hide #205's shared safetensors blob)."""
    step = int(revision.removeprefix("step"))
    return [_repo_file(".gitattributes", None), _repo_file("config.json", None),
            _repo_file("model.safetensors", PYTHIA_28B[step]), _repo_file("pytorch_model.bin", _sha(f"bin{step}")),
            _repo_file("tokenizer.json", None)]


def test_file_level_audit_flags_final_weights_under_early_labels_and_shared_blobs():
    """From the hub's tree metadata (RepoFile objects with LFS SHA-256, as list_repo_tree returns them): the early
    steps serving the final step's blob are 'final_weights', the two steps sharing another blob 'duplicate', the
    final step and the steps with their own blob unflagged. Only weight files count (config and tokenizer are the
    same in every revision)."""
    hashes = hub_weight_hashes("EleutherAI/pythia-2.8b", {s: f"step{s}" for s in PYTHIA_28B}, list_files=_tree)
    assert hashes[1000] == {"model.safetensors": MAIN}
    table = file_level_audit("EleutherAI/pythia-2.8b", hashes).set_index("step")
    assert table.loc[[0, 512, 1000, 55000], "flag"].eq("final_weights").all()
    assert table.loc[[54000, 98000], "flag"].eq("duplicate").all()
    assert table.loc[[1, 2000, 143000], "flag"].eq("").all()
    assert table.loc[54000, "duplicate_of"] == [98000] and table.loc[143000, "duplicate_of"] == [0, 512, 1000, 55000]
    assert "final checkpoint's weights (step 143000)" in table.loc[512, "reason"]
    assert table.loc[0, "content"] == content_id({"model.safetensors": MAIN}) != table.loc[1, "content"]


def test_sharded_revisions_compare_every_shard():
    """pythia-12b #206: steps whose first shard is the final model's but whose second is their own are not
    duplicates of the final step (the content is every weight file), nor of each other."""
    hashes = {50000: {"model-00001-of-00002.safetensors": _sha("final-1"), "model-00002-of-00002.safetensors": _sha("a")},
              58000: {"model-00001-of-00002.safetensors": _sha("final-1"), "model-00002-of-00002.safetensors": _sha("b")},
              143000: {"model-00001-of-00002.safetensors": _sha("final-1"),
                       "model-00002-of-00002.safetensors": _sha("final-2")}}
    assert file_level_audit("EleutherAI/pythia-12b", hashes)["flag"].eq("").all()


def test_the_real_hub_call_fails_with_the_repository_and_revision_named(monkeypatch):
    """This machine cannot reach the hub. The real call path (HfApi.list_repo_tree) runs to huggingface_hub's HTTP
    layer, which refuses in offline mode (without it the same failure takes ~25 s of connection retries), and the
    error names the repository and the revision."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"cannot list EleutherAI/pythia-70m revision 'step1000' on the hub: "
                                              r"OfflineModeIsEnabled: Cannot reach https://huggingface.co/api/models/"
                                              r"EleutherAI/pythia-70m/tree/step1000"):
        hub_weight_hashes("EleutherAI/pythia-70m", {1000: "step1000"})


def _trajectory(root, steps=(*range(0, 1001, 100), 3000), seed=0, init=None):
    """Checkpoint folders of a made-up training run: θ_s = θ_0 + (s / 1000)·Δ + noise, a 'embed' and a 'layer'
    tensor (float32) and an integer buffer; returns {step: folder}."""
    g = torch.Generator().manual_seed(seed)
    theta0 = init if init is not None else {"embed": torch.randn(64, 16, generator=g),
                                            "layer": torch.randn(16, 16, generator=g)}
    delta = {k: torch.randn(v.shape, generator=g) for k, v in theta0.items()}
    folders = {}
    for s in steps:
        t = {k: v + (s / 1000) * delta[k] + (0.01 * torch.randn(v.shape, generator=g) if s else 0)
             for k, v in theta0.items()}
        t["position_ids"] = torch.arange(8)
        folders[s] = root / f"step{s}"
        folders[s].mkdir(parents=True)
        save_file(t, folders[s] / "model.safetensors")
    return folders


def test_tensor_level_audit_passes_a_clean_run_and_catches_each_corruption(tmp_path):
    """A clean run (checkpoints every 100 steps to 1,000, then 3,000) has no flag, distances to the first and final checkpoints that grow and shrink with the step,
    and neighbours at the planted step size. Then, on copies: the final checkpoint copied into step 100's folder is
    'final_weights'; step 500 with the final model's embedding (#206's transplanted shard) is a
    'trajectory_break'; a truncated step 700 is 'unreadable'; both of these left out of their neighbours'
    distances."""
    folders = _trajectory(tmp_path / "clean")
    clean = tensor_level_audit("run", folders).set_index("step")
    assert clean["flag"].eq("").all(), clean[["flag", "reason"]]
    assert clean["rel_to_first"].is_monotonic_increasing and clean["rel_to_final"].is_monotonic_decreasing
    assert clean.loc[0, "rel_to_first"] == 0 and clean.loc[3000, "rel_to_final"] == 0
    assert clean.loc[0, "content"] == checkpoint_digest(folders[0]) and clean["content"].nunique() == 12

    bad = {s: tmp_path / "bad" / f"step{s}" for s in folders}
    shutil.copytree(tmp_path / "clean", tmp_path / "bad")
    shutil.copy(folders[3000] / "model.safetensors", bad[100] / "model.safetensors")
    from safetensors.torch import load_file

    mixed = load_file(folders[500] / "model.safetensors")
    mixed["embed"] = load_file(folders[3000] / "model.safetensors")["embed"]
    save_file(mixed, bad[500] / "model.safetensors")
    data = (bad[700] / "model.safetensors").read_bytes()
    (bad[700] / "model.safetensors").write_bytes(data[:len(data) // 2])
    table = tensor_level_audit("run", bad).set_index("step")
    expected = {s: "" for s in folders} | {100: "final_weights", 500: "trajectory_break", 700: "unreadable"}
    assert table["flag"].to_dict() == expected, table[["flag", "reason"]]
    assert "final checkpoint's weights (step 3000)" in table.loc[100, "reason"]
    assert "neighbours 400 and 600" in table.loc[500, "reason"]
    assert table.loc[[100, 700], "rel_to_prev"].isna().all() and table.loc[800, "rel_to_prev"] > 0  # 600 -> 800
    assert "step 700" in table.loc[700, "reason"] and "SafetensorError" in table.loc[700, "reason"]


def test_a_noisy_run_is_not_a_break():
    """Checkpoints whose updates are pure noise (no drift) are at most ~1x as far from a neighbour as the neighbours
    from each other: far below the break ratio of 2. Checked on 30 random-walk checkpoints."""
    import tempfile
    from pathlib import Path

    g = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory() as tmp:
        folders, theta = {}, torch.randn(32, 32, generator=g)
        for s in range(30):
            theta = theta + 0.1 * torch.randn(32, 32, generator=g)
            folders[s] = Path(tmp) / f"step{s}"
            folders[s].mkdir()
            save_file({"w": theta}, folders[s] / "model.safetensors")
        table = tensor_level_audit("walk", folders)
    assert table["flag"].eq("").all()
    interior = table.iloc[1:-1]
    assert (np.minimum(interior["rel_to_prev"], interior["rel_to_next"]) > 0).all()


def test_lineage_audit_catches_a_run_that_does_not_descend_from_its_own_step_0(tmp_path):
    """Two seeds' runs: each early checkpoint is nearest its own step 0. With the two step-0 folders swapped
    (#203), every early checkpoint of both runs is nearest the other's step 0 and flagged 'lineage'."""
    runs = {"seed1": _trajectory(tmp_path / "seed1", (0, 1, 2, 4), seed=1),
            "seed2": _trajectory(tmp_path / "seed2", (0, 1, 2, 4), seed=2)}
    clean = lineage_audit(runs)
    assert len(clean) == 6 and clean["flag"].eq("").all()
    swapped = {m: dict(f) for m, f in runs.items()}
    swapped["seed1"][0], swapped["seed2"][0] = runs["seed2"][0], runs["seed1"][0]
    table = lineage_audit(swapped)
    assert table["flag"].eq("lineage").all(), table[["model", "step", "flag"]]
    assert "seed1 step 1 is closer to seed2's step 0" in table.iloc[0]["reason"]


def test_the_audit_command_prints_the_flagged_checkpoints(tmp_path):
    """`circuit-stability audit <model>` on a local suite: exit 0 and a summary on a clean run; with the final
    checkpoint copied into step 100's folder, exit 1 and the flagged step with its reason, at the file level and
    (--tensors) the tensor level. On a hub model, with the hub out of reach, exit 2 saying what it would have
    checked."""
    import os
    import subprocess

    for folder in _trajectory(tmp_path / "models" / "run", steps=(0, 100, 200, 300)).values():
        (folder / "config.json").write_text("{}")  # what makes a folder a checkpoint (models.local_steps)
    cmd = ["circuit-stability", "audit", "run", "--suite-dir", str(tmp_path / "models")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0 and "run: 4 checkpoints audited (file level); checkpoints flagged: none" in out.stdout, out
    shutil.copy(tmp_path / "models/run/step300/model.safetensors", tmp_path / "models/run/step100/model.safetensors")
    out = subprocess.run([*cmd, "--tensors"], capture_output=True, text=True)
    assert out.returncode == 1, out
    assert "checkpoints flagged: final_weights 1" in out.stdout and "file and tensor level" in out.stdout
    assert "step 100 holds the final checkpoint's weights (step 300)" in out.stdout
    # the workflow's form: the table written (exit 0: the study's policy decides), and the lineage against another
    # seed's run, whose step 0 this run's step 100 now is (#203)
    for folder in _trajectory(tmp_path / "models" / "other", steps=(0,), seed=5).values():
        (folder / "config.json").write_text("{}")
    shutil.copy(tmp_path / "models/other/step0/model.safetensors", tmp_path / "models/run/step100/model.safetensors")
    out = subprocess.run([*cmd, "--steps", "0,100,200", "--lineage-with", "other", "--out", str(tmp_path / "t.parquet")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out
    import pandas as pd

    table = pd.read_parquet(tmp_path / "t.parquet")
    assert sorted(set(table["step"])) == [0, 100, 200] and set(table["level"]) == {"file", "lineage"}
    lineage = table[table["level"] == "lineage"]
    assert list(zip(lineage["step"], lineage["flag"])) == [(100, "lineage"), (200, "")]
    assert "run step 100 is closer to other's step 0" in lineage["reason"].iloc[0]
    out = subprocess.run([*cmd, "--steps", "0,150"], capture_output=True, text=True)
    assert out.returncode != 0 and "no checkpoint of step(s) [150]" in out.stderr, out
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(["circuit-stability", "audit", "EleutherAI/pythia-70m"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 2, out
    assert "cannot list EleutherAI/pythia-70m revision 'step0' on the hub" in out.stdout
    assert "would have compared the weight files' SHA-256" in out.stdout and "154 revisions" in out.stdout


def test_the_integrity_policy_skips_stops_or_keeps_the_flagged_planned_checkpoints(tmp_path):
    """flagged_steps reads an audit table (both levels, one entry per step); integrity_gate passes a plan without
    flagged steps under every policy, and with one: skip and error raise naming the step, its flag and what to do,
    keep returns it. A table older than the checkpoints it describes is ignored (they were rewritten)."""
    import os

    import pandas as pd

    from circuit_stability.audit import IntegrityError, flagged_steps, integrity_gate, read_skipped

    table = pd.concat([file_level_audit("m", {0: {"model.safetensors": "a"}, 100: {"model.safetensors": "c"},
                                              200: {"model.safetensors": "c"}}),
                       file_level_audit("m", {0: {"model.safetensors": "a"}, 100: {"model.safetensors": "c"},
                                              200: {"model.safetensors": "c"}})])
    flagged = flagged_steps(table)
    assert flagged == {100: "final_weights: step 100 holds the final checkpoint's weights (step 200)"}
    for policy in ("skip", "error", "keep"):
        assert integrity_gate("m", flagged, [0, 200], policy, "suite.integrity") == []
    assert integrity_gate("m", flagged, [0, 100, 200], "keep", "suite.integrity") == [100]
    record = tmp_path / "m.skipped.json"
    for policy, todo in (("skip", "suite.integrity: skip leaves them out"), ("error", "suite.integrity: error stops")):
        with pytest.raises(IntegrityError, match=r"(?s)1 checkpoint\(s\) of m .*step 100: final_weights.*" + todo):
            integrity_gate("m", flagged, [0, 100, 200], policy, "suite.integrity", record=record)
    # the record the next plan reads: the flagged planned steps, added to what it held
    assert read_skipped(record) == flagged
    with pytest.raises(IntegrityError):
        integrity_gate("m", {**flagged, 0: "duplicate: x"}, [0, 200], "skip", "suite.integrity", record=record)
    assert read_skipped(record) == {0: "duplicate: x", **flagged}
    assert integrity_gate("m", flagged, [0, 200], "skip", "suite.integrity", record=tmp_path / "none.json") == []
    assert not (tmp_path / "none.json").exists()
    with pytest.raises(ValueError, match="'ignore' is not a policy; valid: skip, error, keep"):
        integrity_gate("m", flagged, [0], "ignore", "hub.integrity")

    path = tmp_path / "m.parquet"
    table.to_parquet(path)
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"x")
    os.utime(checkpoint, (path.stat().st_mtime - 10,) * 2)
    assert flagged_steps(path, newer_than=[checkpoint]) == flagged
    os.utime(checkpoint, (path.stat().st_mtime + 10,) * 2)
    assert flagged_steps(path, newer_than=[checkpoint]) == {}
    assert flagged_steps(tmp_path / "none.parquet") == {}
    assert read_skipped(record, newer_than=[checkpoint]) == {}  # the checkpoint is newer: stale
    os.utime(checkpoint, (record.stat().st_mtime - 10,) * 2)
    assert read_skipped(record, newer_than=[checkpoint]) == {0: "duplicate: x", **flagged}
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"m.parquet: the checkpoint audit table cannot be read .* delete it and run "
                                         r"again: the audit runs again"):
        flagged_steps(path)
    table.drop(columns="reason").to_parquet(path)
    with pytest.raises(ValueError, match=r"m.parquet: not a checkpoint audit table: no column\(s\) \['reason'\]"):
        flagged_steps(path)


def test_the_download_marker_records_the_weight_hashes_the_audit_compares(monkeypatch, tmp_path):
    """The hub cannot be reached here: huggingface_hub's own metadata objects (RepoSibling, BlobLfsInfo) stand for
    the hub's answer. The marker records each weight file's git-LFS SHA-256 (not the index JSON's, not the
    config's) and their content id, the same id the file-level audit gives that revision."""
    import json
    import types

    import huggingface_hub
    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

    from circuit_stability.hub import download_checkpoint

    shards = {"model-00001-of-00002.safetensors": _sha("s1"), "model-00002-of-00002.safetensors": _sha("s2")}
    siblings = [RepoSibling("config.json", 600), RepoSibling("model.safetensors.index.json", 900),
                *[RepoSibling(f, 10, lfs=BlobLfsInfo(size=10, sha256=h, pointer_size=130)) for f, h in shards.items()]]
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, name, revision, files_metadata: types.SimpleNamespace(sha="c0ffee", siblings=siblings))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(tmp_path / "snap"))
    marker = download_checkpoint("EleutherAI/pythia-12b", 50000, tmp_path / "step50000.json")
    assert json.loads((tmp_path / "step50000.json").read_text()) == marker
    assert marker["sha256"] == shards
    assert marker["content"] == content_id(shards) == file_level_audit("m", {50000: shards})["content"].iloc[0]


def test_a_hub_study_audits_each_model_before_any_download_and_says_what_it_could_not_check(tmp_path):
    """A Pythia study plans the file-level audit of each model before its downloads (which wait for its gate). Run
    here, where the hub cannot be reached, the audit job fails saying so and what it would have compared, and
    nothing is downloaded."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for item in ("Snakefile", "rules", "config", "report"):
        (shutil.copytree if (root / item).is_dir() else shutil.copy)(root / item, tmp_path / item)
    (tmp_path / "config/hub.yaml").write_text(json.dumps({
        "extends": "pythia.yaml", "study": "hub-audit",
        "hub": {"models": ["EleutherAI/pythia-70m"], "steps": [0, 1000, 143000]}}))
    cmd = ["snakemake", "data/hub/pythia-70m/step1000.json", "--cores", "1", "--configfile", "config/hub.yaml"]
    plan = subprocess.run([*cmd, "-n"], cwd=tmp_path, capture_output=True,
                          text=True)
    text = plan.stdout + plan.stderr
    assert plan.returncode == 0, text[-3000:]
    assert re.search(r"audit\s+1\n", text) and re.search(r"audit_gate\s+1\n", text), text[-3000:]
    assert "Checkpoint audit: EleutherAI/pythia-70m, file level (hub metadata, no weights downloaded)" in text
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "cannot list EleutherAI/pythia-70m revision 'step0' on the hub" in text, text[-3000:]
    assert ("not audited: the file-level audit would have compared the weight files' SHA-256 (git LFS metadata, no "
            "weights downloaded) of 3 revisions of EleutherAI/pythia-70m (step0 … step143000)") in text
    assert not (tmp_path / "data/hub").exists() and not (tmp_path / "results/audit/pythia-70m.parquet").exists()
