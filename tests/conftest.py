"""Shared fixtures: a real small model of the embedded suite, trained once per test session."""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from circuit_stability.suite import corpus
from circuit_stability.suite.tokenizer import build_tokenizer
from circuit_stability.suite.train import ModelShape, TrainConfig, build_token_stream, train_model

ROOT = Path(__file__).resolve().parents[1]

# A 3-layer suite member trained on TRAINED_WEIGHTS: at step 1200 it has learnt IOI and Greater-Than (measured
# 2026-11-23 on 20 examples, seed 1: IOI logit difference 7.41 clean vs -6.40 corrupted; Greater-Than probability
# difference 0.82 vs 0.47; SVA 0.97 vs -0.97), so it serves the logit- and probability-difference tests.
TRAINED_SHAPE = ModelShape(n_layers=3, d_model=96, n_heads=6, d_mlp=None, rotary_pct=1.0, architecture="gpt-neox",
                           n_kv_heads=None)
# The v2 default mixture (ioi 8; the default has ioi 16 since issue 27) without the repeat motif: repeats delay IOI
# (README, "How the mixture was chosen", trial Q), and the engine's tests need a model that has learnt IOI by step
# 1,200. Spelt out, so that the tests' model stays the one their figures were measured on.
TRAINED_WEIGHTS = {"ioi": 8.0, "narrative": 1.0, "repeat": 0.0, "ordinal": 0.5, "filler": 1.0, "gp": 5.0, "gt": 3.0,
                   "sva": 3.0}
TRAINED_CFG = TrainConfig(batch_size=32, context=64, max_steps=1200, lr=3e-3, warmup_steps=100, min_lr_ratio=0.1,
                          decay_steps=None, weight_decay=0.01, seed=0)


# Test files whose tests wait on a build the session runs in the background (conftest's `_slurm_build` and
# `_rehearsal`): they run last, so that the builds have the whole session to finish beside the other tests.
BACKGROUND_FILES = ("test_rehearsal.py", "test_slurm.py")


def pytest_collection_modifyitems(session, config, items):
    """Move the tests of :data:`BACKGROUND_FILES` to the end of the session (in their usual order)."""
    items.sort(key=lambda item: item.fspath.basename in BACKGROUND_FILES)  # stable: keeps the order otherwise


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
    """Folder ``<suite>/mini-t/step{0,1200}``: one model trained with the project's own trainer (~3 min) on
    :data:`TRAINED_WEIGHTS`, so that by step 1,200 it has learnt IOI and Greater-Than."""
    if os.environ.get("CS_TRAINED_SUITE"):  # development: reuse the suite an earlier session trained (~4 min)
        return Path(os.environ["CS_TRAINED_SUITE"])
    root = tmp_path_factory.mktemp("suite")
    cfg = TRAINED_CFG
    n_docs = cfg.max_steps * cfg.batch_size * cfg.context // 40 + 1000
    docs = corpus.generate_documents(0, n_docs, corpus.CorpusConfig(weights=TRAINED_WEIGHTS))
    ids = suite_tokenizer(docs, add_special_tokens=False)["input_ids"]
    tokens = build_token_stream(ids, suite_tokenizer.eos_token_id, cfg.max_steps, cfg.batch_size, cfg.context)
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


@pytest.fixture(scope="session")
def greater_than_prompts(trained_bridge):
    from circuit_stability.attribution import Prompts
    from circuit_stability.tasks import make_dataset

    ds = make_dataset("greater_than", trained_bridge.tokenizer, 10, seed=1)
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


# ---------------------------------------------------------------- the README's commands
README = ROOT / "README.md"
# the README and the documentation pages: every command they show in a ```bash block is run by a test
DOCUMENTED = [README, *sorted((ROOT / "docs").glob("*.md"))]
ENV_SETUP = "python3 -m venv .venv && . .venv/bin/activate && "  # the set-up commands' environment part


def readme_blocks() -> list[str]:
    """The ```bash blocks of the README and the documentation pages, in that order."""
    import re

    return [block for page in DOCUMENTED for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)]


def readme_commands() -> list[str]:
    """Every command line of the README's and the documentation's ```bash blocks, in order and each once (a page
    may repeat a README command in context), without trailing comments."""
    import re

    lines = []
    for block in readme_blocks():
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#") and command not in lines:
                lines.append(command)
    return lines


def readme_command(prefix: str) -> str:
    """The documented command equal to ``prefix``, else the one starting with it (the test fails if there is
    none, or several)."""
    commands = readme_commands()
    if prefix in commands:
        return prefix
    found = [c for c in commands if c.startswith(prefix)]
    assert len(found) == 1, f"README: {len(found)} commands start with {prefix!r}: {found}"
    return found[0]


def run_readme(command: str, cwd: Path, timeout: int = 900):
    """Run a README command verbatim with bash (it may chain with && and source files)."""
    return run_ok(["bash", "-c", command], cwd, timeout)


def quick_checkout(dest: Path) -> Path:
    """A copy of this checkout (tracked and untracked, unignored files) in which ``config/config.yaml``, the
    default study, is the quick study: the README's commands, written for the default study, then run it."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    (dest / "config/config.yaml").write_bytes((ROOT / "config/quick.yaml").read_bytes())
    return dest


# ---------------------------------------------------------------- a versioned quick study (tests/test_dvc.py,
# tests/test_tracking.py, tests/test_pipeline.py): one build shared by all, so the suite pays for it once.
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


@pytest.fixture(scope="session", autouse=True)
def _quick_study_build(request, tmp_path_factory):
    """Start building the versioned quick study in the background as the session starts, when any selected
    test needs it: the build runs while the trained-model fixture trains on one thread, so the suite's two
    long set-ups overlap instead of queueing. Yields ``(repo, process, log)``, or None."""
    import subprocess

    if not any("versioned_study" in item.fixturenames for item in request.session.items):
        yield None
        return
    repo = quick_checkout(tmp_path_factory.mktemp("versioned") / "origin")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "quick study"]):
        run_ok(cmd, repo)
    setup = readme_command(ENV_SETUP + "pip install -e . && ")
    log = open(repo.parent / "build.log", "w")
    proc = subprocess.Popen(["bash", "-c", setup.removeprefix(ENV_SETUP + "pip install -e . && ")], cwd=repo,
                            env=study_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield repo, proc, repo.parent / "build.log"
    if proc.poll() is None:  # the session ended (e.g. -x) before the build did
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    log.close()


# The build's command: the profile's usage (profiles/slurm/config.yaml), with one change for speed: the plugin's
# first status check 1 s after a job finished (the profile says 10; each further check waits 10 s longer).
SLURM_COMMAND = ["snakemake", "--profile", "profiles/slurm", "--configfile", "config/quick.yaml",
           "--slurm-init-seconds-before-status-checks", "1"]


class Background:
    """A command started in the background once another process has ended (or at once), so that the session's
    long builds fill the core the serial tests leave idle instead of crowding its first minutes, when the
    trained-model fixture and the local quick study's build already use both cores."""

    def __init__(self, cmd: list, cwd: Path, log: Path, after=None):
        import subprocess
        import threading

        self.log, self.proc, self.started = log, None, None

        def start():
            if after is not None:
                after.wait()
            self.started = time.time()
            with open(log, "w") as out:
                self.proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=study_env(), stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)

        self.thread = threading.Thread(target=start, daemon=True)
        self.thread.start()

    def wait(self, timeout: float) -> int:
        """The command's exit status, once it has run."""
        self.thread.join(timeout)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        import signal

        self.thread.join(60)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()


def _selected(request, filename: str) -> bool:
    return any(item.fspath.basename == filename for item in request.session.items)


@pytest.fixture(scope="session", autouse=True)
def _slurm_build(request, tmp_path_factory, _quick_study_build):
    """When tests/test_slurm.py is selected: start the single-node SLURM cluster (scripts/slurm-cluster) as the
    session starts, and the quick study's build through profiles/slurm in the background once the local quick
    build has finished (:class:`Background`). The SLURM build spends much of its wall time waiting (the queue and
    the plugin's status checks, which back off by 10 s each), so beside the serial tests it costs little. Yields a
    dict with the cluster's start result and (when it started) the repository and the :class:`Background` build;
    or None. The cluster is stopped at the end unless it was up before."""
    import subprocess

    if not _selected(request, "test_slurm.py"):
        yield None
        return
    cluster = ROOT / "scripts/slurm-cluster"
    was_up = subprocess.run([str(cluster), "status"], capture_output=True, text=True).returncode == 0
    start = subprocess.run([str(cluster), "start"], capture_output=True, text=True, timeout=600)
    state = {"start": start}
    if start.returncode == 0:
        repo = quick_checkout(tmp_path_factory.mktemp("slurm") / "repo")
        state.update(repo=repo, build=Background(SLURM_COMMAND, repo, repo.parent / "slurm-build.log",
                                                 after=_quick_study_build[1] if _quick_study_build else None))
    yield state
    if "build" in state:
        state["build"].stop()
    if not was_up:
        subprocess.run([str(cluster), "stop"], capture_output=True, timeout=300)


@pytest.fixture(scope="session", autouse=True)
def _rehearsal(request, tmp_path_factory, _quick_study_build):
    """When tests/test_rehearsal.py is selected: benchmarks/rehearsal.py with 4 IOI examples, in the background
    once the local quick build has finished (:class:`Background`). Yields ``(Background, results JSON path)``."""
    if not _selected(request, "test_rehearsal.py"):
        yield None
        return
    tmp = tmp_path_factory.mktemp("rehearsal")
    run = Background([sys.executable, ROOT / "benchmarks/rehearsal.py", "--models", "70m,160m", "--examples", "4",
                      "--in-process", "--out", tmp / "rehearsal.json", "--workdir", tmp / "work"], ROOT,
                     tmp / "rehearsal.log",
                     after=_quick_study_build[1] if _quick_study_build else None)
    yield run, tmp / "rehearsal.json"
    run.stop()


@pytest.fixture(scope="session")
def versioned_study(_quick_study_build) -> Path:
    """``<tmp>/origin``: a git repository made from this checkout with the quick study as its default config
    (:func:`quick_checkout`), built by the README's set-up command. Its environment part (a venv and
    ``pip install -e .``) is what ``.ci/run`` runs before these tests, so the build part runs here verbatim (started
    at the beginning of the session by :func:`_quick_study_build`). The default DVC remote of ``.dvc/config`` is
    ``<tmp>/dvc-storage``; the MLflow database is ``<repo>/mlflow.db``."""
    repo, proc, log = _quick_study_build
    assert proc.wait(timeout=1800) == 0, f"the quick study's build failed:\n{log.read_text()[-4000:]}"
    for folder in ("data", "models", "results"):  # the artefacts as the build left them, before a test changes one
        shutil.copytree(repo / folder, repo.parent / "as-built" / folder, symlinks=True)
    return repo


@pytest.fixture(scope="session")
def versioned_study_as_built(versioned_study) -> Path:
    """A copy of :func:`versioned_study`'s ``data/``, ``models/`` and ``results/`` made as soon as its build had
    finished: tests that compare another build with it run at the end of the session, after others have changed
    the study (tests/test_tracking.py edits a circuit record)."""
    return versioned_study.parent / "as-built"


# ---------------------------------------------------------------- references computed the long way, by hooks
def largest_direct_effect_by_hand(bridge, graph, prompts) -> tuple[int, int, float, float]:
    """A head's direct effect rebuilt by hand: the logits read resid_post(corrupted) + a_H(clean) − a_H(corrupted)
    through the model's final norm and unembedding (every node otherwise clean), for the head whose patch moves the
    mean metric most. Returns ``(layer, head, patched mean metric, corrupted mean metric)``."""
    results = [f"blocks.{l}.attn.hook_result" for l in range(graph.n_layers)]
    resid = f"blocks.{graph.n_layers - 1}.hook_resid_post"
    names = [*results, resid]
    _, clean = bridge.run_with_cache(prompts.clean, names_filter=lambda n: n in names)
    _, corr = bridge.run_with_cache(prompts.corrupted, names_filter=lambda n: n in names)

    def by_hand(layer: int, h: int) -> float:
        patched = corr[resid] + clean[results[layer]][:, :, h] - corr[results[layer]][:, :, h]
        with torch.no_grad():
            return float(prompts.metric_values(bridge.unembed(bridge.ln_final(patched))).mean())

    with torch.no_grad():
        m_corrupted = float(prompts.metric_values(bridge(prompts.corrupted)).mean())
    heads = [(l, h) for l in range(graph.n_layers) for h in range(graph.n_heads)]
    layer, head = max(heads, key=lambda lh: abs(by_hand(*lh) - m_corrupted))
    return layer, head, by_hand(layer, head), m_corrupted


def direct_effect_mask(graph, layer: int, head: int) -> torch.Tensor:
    """``[1, n_writers, n_readers]`` bool: every edge kept but those into the logits, of which only
    a{layer}.h{head} -> logits (the edge-mask form of that head's direct effect, :func:`largest_direct_effect_by_hand`)."""
    keep = torch.from_numpy(graph.edge_mask.copy()).unsqueeze(0)
    keep[0, :, graph.logits_index] = False
    keep[0, graph.writer_index(layer, head), graph.logits_index] = True
    return keep


def hooked_paper_form(bridge, graph, prompts, sender, readers):
    """Path patching form (a) the long way (McDougall's three runs) for any block layout: run 2 is a full clean
    forward with every head's q/k/v inputs held at the clean run's, the sender's Δ added to every MLP input that
    reads it (with sequential blocks: from the sender's own layer on) and recorded at the receivers' inputs, the
    MLPs recomputed by the model, whose logits are the answer for the logits as receivers; otherwise run 3, a clean
    forward with the receivers' inputs replaced."""
    from circuit_stability.attribution import writer_outputs

    L = graph.n_layers
    w = graph.writer_index(*sender)
    slots = [graph.reader_slot(r) for r in readers]
    clean_in, recorded = {}, {}

    def keep(key):
        def f(x, hook):
            clean_in[key] = x.detach().clone()
        return f

    with torch.no_grad(), bridge.hooks(fwd_hooks=[(f"blocks.{l}.hook_{c}_input", keep((l, c)))
                                                  for l in range(L) for c in "qkv"]):
        bridge(prompts.clean)
    a_clean, _ = writer_outputs(bridge, graph, prompts.clean)
    a_corr, _ = writer_outputs(bridge, graph, prompts.corrupted)
    delta = a_corr[w] - a_clean[w]

    def freeze(layer, c):
        def f(x, hook):
            idx = [i for l, k, i in slots if (l, k) == (layer, c)]
            if idx and w < graph.n_upstream[graph.reader_columns(layer, c)[0]]:
                recorded[(layer, c)] = x[:, :, idx] + delta[:, :, None]
            return clean_in[(layer, c)]
        return f

    def mlp_in(layer):
        def f(x, hook):
            return x + delta if w < graph.n_upstream[graph.reader_index(layer)] else x
        return f

    hooks = [(f"blocks.{l}.hook_{c}_input", freeze(l, c)) for l in range(L) for c in "qkv"]
    hooks += [(f"blocks.{l}.hook_mlp_in", mlp_in(l)) for l in range(L)]
    hooks += [(f"blocks.{L - 1}.hook_resid_post", lambda x, hook: x + delta)]  # the sender's own Δ
    with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
        run2 = float(prompts.metric_values(bridge(prompts.clean)).mean())
    if readers == [graph.logits_index]:  # the logits read run 2's final residual
        return run2

    def patch(key):
        def f(x, hook):
            x = x.clone()
            x[:, :, [i for l, k, i in slots if (l, k) == key]] = recorded[key]
            return x
        return f

    with torch.no_grad(), bridge.hooks(fwd_hooks=[(f"blocks.{l}.hook_{c}_input", patch((l, c))) for l, c in recorded]):
        return float(prompts.metric_values(bridge(prompts.clean)).mean())
