"""Shared fixtures: a real small model of the embedded suite, trained once per test session."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from circuit_stability.suite import corpus
from circuit_stability.suite.tokenizer import build_tokenizer
from circuit_stability.suite.train import ModelShape, TrainConfig, build_token_stream, train_model

ROOT = Path(__file__).resolve().parents[1]

# A 3-layer suite member: IOI emerges between steps 500 and 1000 on this corpus mix (measured: logit difference
# 1.8 at step 800 in one run, ~13 at step 750 in another), so step 1200 is a model that has learnt the task.
TRAINED_SHAPE = ModelShape(n_layers=3, d_model=96, n_heads=6, rotary_pct=1.0)
TRAINED_CFG = TrainConfig(batch_size=32, context=64, max_steps=1200, lr=3e-3, warmup_steps=100)
WEIGHTS = {"ioi": 4.0, "narrative": 2.0, "repeat": 4.0, "ordinal": 0.5, "filler": 1.0}


def pytest_configure(config):
    """Subprocesses (snakemake, circuit-stability, dvc) come from this interpreter's environment, whether or not
    it is activated: its scripts directory goes first on PATH."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # far faster than 2 for these small models on a 2-core machine


@pytest.fixture(scope="session")
def suite_tokenizer():
    return build_tokenizer(corpus.lexicon_sample())


@pytest.fixture(scope="session")
def trained_suite(tmp_path_factory, suite_tokenizer) -> Path:
    """Folder ``<suite>/mini-t/step{0,1200}``: one model trained with the project's own trainer (~95 s)."""
    root = tmp_path_factory.mktemp("suite")
    cfg = TRAINED_CFG
    n_docs = cfg.max_steps * cfg.batch_size * cfg.context // 40 + 1000
    docs = corpus.generate_documents(0, n_docs, corpus.CorpusConfig(weights=WEIGHTS))
    ids = suite_tokenizer(docs, add_special_tokens=False)["input_ids"]
    tokens = build_token_stream(ids, suite_tokenizer.eos_token_id, cfg)
    train_model(TRAINED_SHAPE, cfg, tokens, suite_tokenizer, root / "mini-t", [0, cfg.max_steps], threads=1)
    return root


@pytest.fixture(scope="session")
def trained_bridge(trained_suite):
    from circuit_stability.models import load_model

    return load_model("mini-t", TRAINED_CFG.max_steps, trained_suite, device="cpu")


@pytest.fixture(scope="session")
def ioi_prompts(trained_bridge):
    from circuit_stability.attribution import Prompts
    from circuit_stability.tasks import make_dataset

    ds = make_dataset("ioi", trained_bridge.tokenizer, 20, seed=1)
    return Prompts.from_dataset(ds, trained_bridge.tokenizer.pad_token_id)


@pytest.fixture
def random_suite(tmp_path) -> Path:
    """Suite folder with ``rand/step0``: a randomly initialised GPT-NeoX (3 layers, 4 heads, d_model 32)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = build_tokenizer(corpus.lexicon_sample())
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=128, rotary_pct=0.25, use_parallel_residual=True,
                        tie_word_embeddings=False, max_position_embeddings=64)
    folder = tmp_path / "rand" / "step0"
    GPTNeoXForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tmp_path


@contextmanager
def trainable(bridge):
    """Let TransformerLens' own tools (which differentiate through parameters) run on a frozen bridge."""
    params = list(bridge.parameters())
    for p in params:
        p.requires_grad_(True)
    try:
        yield bridge
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None


# ---------------------------------------------------------------- a versioned quick study (tests/test_dvc.py,
# tests/test_tracking.py): one build shared by both files, so the suite pays for it once.
def study_env() -> dict[str, str]:
    """Environment for subprocesses: PATH as set by :func:`pytest_configure`, default MLflow URI, a git identity."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.org", GIT_COMMITTER_NAME="test",
               GIT_COMMITTER_EMAIL="test@example.org", DVC_NO_ANALYTICS="1")
    return env


def run_ok(cmd: list[str], cwd: Path, timeout: int = 900):
    """Run a command; fail the test with its output tail unless it exits 0."""
    import subprocess

    out = subprocess.run(cmd, cwd=cwd, env=study_env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="session")
def versioned_study(tmp_path_factory) -> Path:
    """A git repository made from this checkout, its DVC stages set to config/quick.yaml and its default DVC
    remote to a temporary folder (``<tmp>/remote``), with the quick study built by ``snakemake --cores 4``
    (4 jobs at once; the MLflow database is the default ``<repo>/mlflow.db``)."""
    import subprocess

    base = tmp_path_factory.mktemp("versioned")
    repo = base / "origin"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_bytes(src.read_bytes())
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("configfile: config/config.yaml", "configfile: config/quick.yaml"))
    run_ok(["git", "init", "-q"], repo)
    run_ok(["dvc", "remote", "add", "-d", "-f", "test", str(base / "remote")], repo)
    run_ok(["git", "add", "-A"], repo)
    run_ok(["git", "commit", "-qm", "quick study"], repo)
    run_ok(["snakemake", "--cores", "4", "--configfile", "config/quick.yaml"], repo)
    return repo
