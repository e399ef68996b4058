"""Training seeds (PolyPythias-style): a weight seed moves the initialisation only, a data seed the token stream
only; PolyPythias hub names resolve to their revisions and known-missing checkpoints are skipped by name."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from circuit_stability.models import hub_revision, hub_steps, parse_hub_name, resolve_checkpoint
from circuit_stability.suite.seeds import corpus_name, corpus_seed, member_seeds, seeds_from_name

ROOT = Path(__file__).resolve().parents[1]


def _project(dest: Path) -> Path:
    for item in ("Snakefile", "rules", "config", "profiles", "report"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    return dest


def test_names_carry_seeds_and_entries_may_set_them():
    assert seeds_from_name("mini-m-seed3") == {"weight": 3, "data": 3}
    assert seeds_from_name("mini-m-weight-seed2") == {"weight": 2}
    assert seeds_from_name("mini-m-data-seed7") == {"data": 7}
    assert seeds_from_name("mini-m") == seeds_from_name("seed") == {}
    s = member_seeds("mini-m-data-seed7", {}, weight_default=0, data_default=0)
    assert (s.weight, s.data) == (0, 7)
    s = member_seeds("mini-m", {"weight_seed": 5, "data_seed": None}, weight_default=0, data_default=2)
    assert (s.weight, s.data) == (5, 2)
    with pytest.raises(ValueError, match="weight_seed 4 contradicts the name, which says weight seed 3"):
        member_seeds("mini-m-seed3", {"weight_seed": 4}, 0, 0)
    assert corpus_name("mini", 0, 0) == "mini" and corpus_name("mini", 4, 0) == "mini-data-seed4"
    assert corpus_seed("mini-data-seed4", "mini", 0) == 4 and corpus_seed("mini", "mini", 0) == 0
    with pytest.raises(ValueError, match="is not 'mini' or mini-data-seed<d>"):
        corpus_seed("other", "mini", 0)


@pytest.mark.slow
def test_weight_seed_moves_only_the_initialisation_and_data_seed_only_the_stream(tmp_path):
    """Three members of one tiny suite, trained by the workflow: the base, a data seed and a weight seed."""
    project = _project(tmp_path)
    quick = yaml.safe_load((ROOT / "config/quick.yaml").read_text())
    shape = {"n_layers": 1, "d_model": 16, "n_heads": 2, "rotary_pct": 1.0}
    config = {"study": "seedtest", "seed": 0, "source": "suite", "threads": 1,
              "suite": {"name": "t", "corpus": quick["suite"]["corpus"],
                        "training": {"batch_size": 2, "context": 16, "max_steps": 2, "lr": 0.003,
                                     "warmup_steps": 1, "checkpoint_every": 2, "log_until": 1},
                        "models": {"t-s": shape, "t-s-data-seed1": shape, "t-s-weight-seed1": shape}},
              "tasks": {"ioi": {}}, "analysis": {}, "circuits": {}}
    (project / "seeds.yaml").write_text(yaml.safe_dump(config))
    members = list(config["suite"]["models"])
    out = subprocess.run(["snakemake", "--cores", "2", *[f"models/{m}/suite.json" for m in members],
                          "--configfile", "seeds.yaml"], cwd=project, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]

    def manifest(m):
        return yaml.safe_load((project / f"models/{m}/suite.json").read_text())["seeds"]

    assert manifest("t-s") == {"weight": 0, "data": 0, "corpus": "t"}
    assert manifest("t-s-data-seed1") == {"weight": 0, "data": 1, "corpus": "t-data-seed1"}
    assert manifest("t-s-weight-seed1") == {"weight": 1, "data": 0, "corpus": "t"}
    base, data1 = (np.load(project / f"data/corpus/{c}/tokens.npy") for c in ("t", "t-data-seed1"))
    assert base.shape == data1.shape and not np.array_equal(base, data1)  # another stream...
    vocab = [(project / f"data/corpus/{c}/tokenizer/tokenizer.json").read_bytes() for c in ("t", "t-data-seed1")]
    assert vocab[0] == vocab[1]  # ... in the one tokenizer every member shares

    def weights(m, step):
        return load_file(project / f"models/{m}/step{step}/model.safetensors")

    def same(a, b):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    assert same(weights("t-s", 0), weights("t-s-data-seed1", 0))  # the data seed leaves the initialisation
    assert not same(weights("t-s", 0), weights("t-s-weight-seed1", 0))  # the weight seed moves it
    assert not same(weights("t-s", 2), weights("t-s-data-seed1", 2))  # and the other stream trains it elsewhere


def test_polypythias_names_resolve_to_their_revisions():
    assert hub_revision("EleutherAI/pythia-160m", 1000) == "step1000"
    assert hub_revision("EleutherAI/pythia-410m-seed9", 143000) == "step143000"
    assert hub_revision("EleutherAI/pythia-160m-data-seed3", 512) == "step512"
    assert hub_revision("EleutherAI/pythia-160m-weight-seed1", 0) == "step0"
    m = parse_hub_name("EleutherAI/pythia-160m-weight-seed2")
    assert (m.size, m.seed_kind, m.seed) == ("160m", "weight", 2)
    assert parse_hub_name("EleutherAI/pythia-70m-seed4").seed_kind == "both"
    assert resolve_checkpoint("EleutherAI/pythia-14m-seed1", 2000).path is None
    for bad, message in [("EleutherAI/pythia-1b-seed1", "seeds 1-9 exist for sizes"),
                         ("EleutherAI/pythia-160m-seed10", "seeds 1-9 exist for sizes"),
                         ("EleutherAI/pythia-70m-data-seed1", "data-seed<k> exists only as"),
                         ("EleutherAI/pythia-160m-weight-seed4", "weight-seed<k> exists only as")]:
        with pytest.raises(ValueError, match=message):
            hub_revision(bad, 1000)
    with pytest.raises(ValueError, match="has no checkpoint at step 1500"):
        hub_revision("EleutherAI/pythia-160m-seed1", 1500)


def test_known_missing_checkpoints_are_skipped_with_a_warning_naming_them(tmp_path):
    with pytest.warns(UserWarning, match=r"EleutherAI/pythia-410m-seed9: skipping checkpoint step\(s\) \[40000\]"):
        assert hub_steps("EleutherAI/pythia-410m-seed9", [0, 40000, 143000]) == [0, 143000]
    assert hub_steps("EleutherAI/pythia-410m-seed2", [0, 40000]) == [0, 40000]  # its gap is step 111000
    with pytest.raises(ValueError, match="pythia-410m-seed6 step 88000 is missing upstream"):
        resolve_checkpoint("EleutherAI/pythia-410m-seed6", 88000)

    # the workflow plans every checkpoint of the other model and all but the missing one of pythia-410m-seed9
    project = _project(tmp_path)
    config = {"study": "poly", "seed": 0, "source": "hub",
              "hub": {"models": ["EleutherAI/pythia-410m-seed9", "EleutherAI/pythia-160m-data-seed1"],
                      "steps": [0, 39000, 40000, 41000]},
              "tasks": {"ioi": {}}, "analysis": {"steps_per_job": 1}, "circuits": {}}
    (project / "poly.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run(["snakemake", "-n", "--configfile", "poly.yaml"], cwd=project, capture_output=True,
                         text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "EleutherAI/pythia-410m-seed9: skipping checkpoint step(s) [40000], missing upstream" in text
    assert "results/scores/pythia-410m-seed9/ioi/step40000.parquet" not in text
    for step in (0, 39000, 41000):
        assert f"results/scores/pythia-410m-seed9/ioi/step{step}.parquet" in text
    for step in (0, 39000, 40000, 41000):
        assert f"results/scores/pythia-160m-data-seed1/ioi/step{step}.parquet" in text


def test_hub_configs_with_impossible_seeds_or_only_missing_steps_are_refused():
    from circuit_stability.config import ConfigError, validate_config

    config = {"study": "poly", "seed": 0, "source": "hub", "hub": {"models": ["EleutherAI/pythia-1b-seed1"]},
              "tasks": {"ioi": {}}, "analysis": {}, "circuits": {}}
    with pytest.raises(ConfigError, match=r"hub.models.0: 'EleutherAI/pythia-1b-seed1' is not a PolyPythias model"):
        validate_config(config)
    config["hub"] = {"models": ["EleutherAI/pythia-410m-seed9"], "steps": [40000]}
    with pytest.raises(ConfigError, match="every listed checkpoint of EleutherAI/pythia-410m-seed9 is missing"):
        validate_config(config)
    config["hub"]["steps"] = [40000, 41000]
    assert validate_config(config)["hub"]["steps"] == [40000, 41000]


def test_learning_rate_schedules_by_hand():
    """Warm-up, then the cosine over every remaining step (Pythia) or, with decay_steps, a held peak and the cosine
    over the last steps only (warm-up–stable–decay). Values computed by hand: peak 1, floor 0.1, warm-up 10 of 110
    steps; the cosine's midpoint is (1 + 0.1) / 2 = 0.55."""
    import math

    from circuit_stability.suite.train import TrainConfig, learning_rate

    cosine = TrainConfig(batch_size=1, context=8, max_steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1,
                         decay_steps=None, weight_decay=0.0, seed=0)
    wsd = TrainConfig(**{**cosine.__dict__, "decay_steps": 20})
    for cfg in (cosine, wsd):
        assert learning_rate(0, cfg) == 0.1 and learning_rate(9, cfg) == 1.0  # (step + 1) / 10
        assert math.isclose(learning_rate(110, cfg), 0.1)  # the floor
    assert math.isclose(learning_rate(60, cosine), 0.55)  # halfway through the 100 steps after warm-up
    assert learning_rate(10, cosine) == 1.0 and learning_rate(11, cosine) < 1.0
    assert all(learning_rate(s, wsd) == 1.0 for s in range(10, 91))  # held until the last 20 steps
    assert math.isclose(learning_rate(100, wsd), 0.55) and learning_rate(91, wsd) < 1.0  # halfway through them


def test_training_resumes_only_from_a_state_with_its_own_fingerprint(tmp_path, suite_tokenizer, capsys):
    """A finished job's resume state (left in place here: the workflow's build_model removes it) makes a rerun of
    the same job resume at its last step and train nothing; a job with another seed or another token stream
    discards the state and trains from step 0. (Killing a job mid-run: tests/test_pipeline.py.)"""
    from circuit_stability.suite.train import ModelShape, TrainConfig, train_model, training_fingerprint

    shape = ModelShape(n_layers=1, d_model=16, n_heads=2, d_mlp=None, rotary_pct=1.0, architecture="gpt-neox",
                       n_kv_heads=None)
    cfg = TrainConfig(batch_size=2, context=16, max_steps=6, lr=3e-3, warmup_steps=1, min_lr_ratio=0.1,
                      decay_steps=None, weight_decay=0.1, seed=0)
    tokens = np.random.default_rng(0).integers(0, len(suite_tokenizer), size=(6, 2, 16), dtype=np.int32)
    out = tmp_path / "m"
    first = train_model(shape, cfg, tokens, suite_tokenizer, out, [0, 3, 6])
    assert sorted(p.name for p in (out / "resume").iterdir()) == ["state.json", "state.pt", "step0", "step3", "step6"]
    assert yaml.safe_load((out / "resume/state.json").read_text())["step"] == 6
    final = (out / "step6/model.safetensors").read_bytes()
    capsys.readouterr()
    again = train_model(shape, cfg, tokens, suite_tokenizer, out, [0, 3, 6])
    assert "resumed from step 6 of 6" in capsys.readouterr().err
    assert again.equals(first) and (out / "step6/model.safetensors").read_bytes() == final
    for other_cfg, other_tokens in ((TrainConfig(**{**cfg.__dict__, "seed": 1}), tokens), (cfg, tokens[::-1].copy())):
        assert training_fingerprint(shape, other_cfg, other_tokens, len(suite_tokenizer), [0, 3, 6]) != \
            training_fingerprint(shape, cfg, tokens, len(suite_tokenizer), [0, 3, 6])
        other = train_model(shape, other_cfg, other_tokens, suite_tokenizer, tmp_path / "o", [0, 3, 6])
        shutil.rmtree(tmp_path / "o/resume")
        shutil.copytree(out / "resume", tmp_path / "o/resume")  # plant the first job's state
        capsys.readouterr()
        fresh = train_model(shape, other_cfg, other_tokens, suite_tokenizer, tmp_path / "o", [0, 3, 6])
        err = capsys.readouterr().err
        assert "from another run" in err and "resumed" not in err
        assert fresh.equals(other) and not fresh.equals(first)
        shutil.rmtree(tmp_path / "o")
