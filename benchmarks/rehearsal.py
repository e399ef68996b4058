"""Rehearsal at Pythia's real sizes, on the CPU: every stage but the download, at the real graph sizes.

pythia-70m and pythia-160m are built from their published hyperparameters (Biderman et al. 2023, Table 1: 6 layers
x 512 x 8 heads, 12 x 768 x 12; GPT-NeoX with parallel attention, rotary_pct 0.25, the 50,304-row vocabulary, a
2,048-token context) with random weights. Two random "checkpoints" per model (step0, step1) are written as local
Hugging Face folders, and the pipeline's own commands run on them, one process per stage as a workflow job does:
behaviour, EAP-IG scores (m = 5, with the per-example scores of the bootstrap), the minimal-circuit search with the
faithfulness curves, the components (head scores) and path patching, on the IOI task. Graphs: 3,580 and 32,347 edges.

``--models olmo-1b`` rehearses a sequential architecture at a real 1B shape instead: OLMo-1B's published
hyperparameters (allenai/OLMo-1B-0724-hf's config: 16 layers x 2048 x 16 heads, SwiGLU MLP of 8,192, non-parametric
LayerNorm, rotary, tied 50,304-row embedding; 1.18B parameters, 101,273 edges), its peak memory to compare with
benchmarks/cost_model.py's estimate.

Random weights do not do the task, and the circuit search (and after it path patching) stops at once where the
model does not (circuit validity, design §5). So each "checkpoint" is the next weight seed (from FIRST_SEED) whose IOI
logit difference is positive and above the corrupted run's, and the circuit stage runs with validity margin 0,
a vanishing emergence fraction and a learnt criterion every task meets (LEARNT_ANYTHING): the searches and path
patching then run in full, on noise.

Usage: ``python benchmarks/rehearsal.py [--models 70m,160m] [--examples 70] [--out rehearsal.json] [--in-process]``;
prints per model and stage the wall time and the peak resident memory of the stage's process. ``--in-process`` runs
the stages' commands in this process instead (the same code, through ``circuit_stability.cli.main``; no peak memory
per stage): tests/test_rehearsal.py uses it to spare nine imports of torch and TransformerLens (~5 s of CPU each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("behavior", "scores", "circuit", "heads", "stability")
# Random weights never learn a task, so the rehearsal counts any task as learnt (no floor, any accuracy)
LEARNT_ANYTHING = json.dumps({"p_value": 1 - 1e-9, "floors": {"logit_diff": 0.0, "prob_diff": 0.0}})
# Where the seed search starts: a search from seed 0 on 2026-12-02 with 8 IOI examples found 70m's first two valid
# seeds at 10 and 12 and 160m's at 1 and 2 (with 4 examples, from these starts: 10, 11 and 1, 5); starting there
# saves building and rejecting the seeds before.
FIRST_SEED = {"70m": 10, "160m": 1}
SEQUENTIAL = ("olmo-1b",)  # the sequential shapes rehearsed (circuit_stability.scale.PUBLISHED_SHAPES)


def _config(size: str):
    """The Hugging Face config and model class of a rehearsed shape: a Pythia size, or OLMo-1B."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, OlmoConfig, OlmoForCausalLM

    from circuit_stability.scale import PUBLISHED_SHAPES, PYTHIA_SHAPES, PYTHIA_VOCAB

    if size == "olmo-1b":
        s = PUBLISHED_SHAPES[size]
        return OlmoConfig(vocab_size=s.d_vocab, hidden_size=s.d_model, num_hidden_layers=s.n_layers,
                          num_attention_heads=s.n_heads, intermediate_size=s.d_mlp, max_position_embeddings=2048,
                          tie_word_embeddings=s.tied, initializer_range=0.02, pad_token_id=1, bos_token_id=None,
                          eos_token_id=0), OlmoForCausalLM
    n_layers, d_model, n_heads = PYTHIA_SHAPES[size]
    return GPTNeoXConfig(vocab_size=PYTHIA_VOCAB, hidden_size=d_model, num_hidden_layers=n_layers,
                         num_attention_heads=n_heads, intermediate_size=4 * d_model, rotary_pct=0.25,
                         rotary_emb_base=10000, use_parallel_residual=True, max_position_embeddings=2048,
                         tie_word_embeddings=False, initializer_range=0.02), GPTNeoXForCausalLM


def _peak_kb(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM of /proc/<pid>/status, kB; 0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run one stage; return (seconds, peak resident MB of its process). Raises RuntimeError with the log tail.

    The peak is VmHWM read every 20 ms while the stage runs: it starts afresh at exec (unlike ``wait4``'s
    ``ru_maxrss``, which counts the parent's memory the child held between fork and exec)."""
    t0 = time.perf_counter()
    peak = 0
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        while p.poll() is None:
            peak = max(peak, _peak_kb(p.pid))
            time.sleep(0.02)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read_text()[-3000:]}")
    return seconds, peak / 1024


def _run_in_process(cmd: list[str], log: Path) -> tuple[float, None]:
    """Run one stage's command (``python -m circuit_stability.cli ...``) in this process: return (seconds, None).
    Raises RuntimeError naming the command and the error."""
    from circuit_stability.cli import main as cli

    t0 = time.perf_counter()
    try:
        cli(cmd[3:])  # cmd is [python, -m, circuit_stability.cli, stage, ...]
    except (Exception, SystemExit) as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {type(e).__name__}: {e}") from e
    log.write_text("(run in process)\n")
    return time.perf_counter() - t0, None


def build_checkpoints(size: str, folder: Path, dataset: Path, n_checkpoints: int = 2) -> list[int]:
    """Write ``n_checkpoints`` random pythia-``size`` models to ``folder/step{k}``, each the next weight seed whose
    IOI logit difference m(M) is positive and above the corrupted run's. Returns the seeds."""
    import torch

    from circuit_stability.attribution import Prompts
    from circuit_stability.behavior import example_metrics
    from circuit_stability.models import load_model
    from circuit_stability.records import read_dataset
    from circuit_stability.suite import corpus
    from circuit_stability.suite.tokenizer import build_tokenizer

    config, model_class = _config(size)
    tokenizer = build_tokenizer(corpus.lexicon_sample())
    ds = read_dataset(dataset)
    seeds, seed = [], FIRST_SEED.get(size, 0)
    while len(seeds) < n_checkpoints:
        torch.manual_seed(seed)
        step = folder / f"step{len(seeds)}"
        model_class(config).save_pretrained(step)
        tokenizer.save_pretrained(step)
        bridge = load_model(step.parent.name, len(seeds), folder.parent)
        clean, corrupted = example_metrics(bridge, Prompts.from_dataset(ds, bridge.tokenizer.pad_token_id), 70)
        m, e = float(clean.mean()), float(corrupted.mean())
        if m > 0 and m > e:
            seeds.append(seed)
        seed += 1
        if seed > FIRST_SEED.get(size, 0) + 50:
            raise RuntimeError(f"fewer than {n_checkpoints} valid random {size} among 51 weight seeds")
    return seeds


def rehearse(size: str, root: Path, examples: int, in_process: bool = False) -> dict:
    """Build pythia-``size``'s two random checkpoints under ``root`` and run every stage on them (each in its own
    process, or all in this one with ``in_process``)."""
    from circuit_stability.graph import Graph
    from circuit_stability.records import CircuitRecord, ScoresRecord, write_dataset
    from circuit_stability.scale import PUBLISHED_SHAPES, PYTHIA_SHAPES
    from circuit_stability.suite import corpus
    from circuit_stability.suite.tokenizer import build_tokenizer
    from circuit_stability.tasks import make_dataset

    name = size if size in SEQUENTIAL else f"pythia-{size}"
    dataset = root / "ioi.parquet"
    if not dataset.exists():
        write_dataset(make_dataset("ioi", build_tokenizer(corpus.lexicon_sample()), examples, 42), dataset)
    t0 = time.perf_counter()
    seeds = build_checkpoints(size, root / "models" / name, dataset)
    build = time.perf_counter() - t0
    res, logs = root / "results" / name, root / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    model = ["--model", name, "--suite-dir", str(root / "models"), "--steps", "0,1"]
    checkpoint = [*model, "--dataset", str(dataset), "--tokens-per-step", "1", "--batch-size", str(examples)]
    cli = [sys.executable, "-m", "circuit_stability.cli"]
    commands = {
        "behavior": [*cli, "behavior", *checkpoint, "--out-dir", str(res / "behavior")],
        "scores": [*cli, "scores", *checkpoint, "--example-scores", "1.0", "--out-dir", str(res / "scores")],
        "circuit": [*cli, "circuit", *checkpoint, "--scores-dir", str(res / "scores"),
                    "--final-behavior", str(res / "behavior" / "step1.json"), "--behavior-dir", str(res / "behavior"),
                    "--validity-margin", "0", "--emergence-fraction", "1e-9", "--learnt", LEARNT_ANYTHING,
                    "--out-dir", str(res / "circuits")],
        "heads": [*cli, "heads", *model, "--ioi-dataset", str(dataset), "--tokens-per-step", "1",
                  "--out-dir", str(res / "components")],
        "stability": [*cli, "stability", *model, "--ioi-dataset", str(dataset), "--components-dir",
                      str(res / "components"), "--circuits-dir", str(res / "circuits"), "--tokens-per-step", "1",
                      "--out-dir", str(res / "stability")],
    }
    stages = {}
    for stage in STAGES:
        seconds, peak = (_run_in_process if in_process else _run)(commands[stage], logs / f"{stage}.log")
        stages[stage] = {"seconds": round(seconds, 2), "peak_mb": None if peak is None else round(peak)}
        print(f"  {name} {stage:9}: {seconds:7.1f} s" + ("" if peak is None else f", peak {peak:7.0f} MB"), flush=True)
    graph = (Graph(PUBLISHED_SHAPES[size].n_layers, PUBLISHED_SHAPES[size].n_heads, False) if size in SEQUENTIAL
             else Graph(*PYTHIA_SHAPES[size][::2]))
    scores = ScoresRecord.read(res / "scores" / "step1.parquet")
    circuits = [CircuitRecord.read(res / "circuits" / f"step{s}.json") for s in (0, 1)]
    import pandas as pd

    patched = [len(pd.read_parquet(res / "stability" / f"step{s}.parquet")) for s in (0, 1)]
    return {"model": name, "n_edges": graph.n_edges, "scored_edges": int(scores.graph.n_edges), "weight_seeds": seeds,
            "examples": examples, "build_seconds": round(build, 1), "stages": stages,
            "circuit_edges": [c.n_edges for c in circuits], "circuit_valid": [c.valid for c in circuits],
            "search_sizes": [len(c.faithfulness) for c in circuits], "path_patching_rows": patched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="70m,160m", help="comma-separated Pythia sizes, or olmo-1b")
    ap.add_argument("--examples", type=int, default=70, help="IOI examples (the paper: 70)")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    ap.add_argument("--workdir", default=None, help="folder for the models and results (default: a temporary one)")
    ap.add_argument("--in-process", action="store_true",
                    help="run the stages in this process (no peak memory per stage)")
    a = ap.parse_args()
    import torch

    print(f"rehearsal: torch {torch.__version__}, {os.cpu_count()} CPUs, {a.examples} IOI examples, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.workdir or tmp)
        results = [rehearse(size, root, a.examples, a.in_process) for size in a.models.split(",")]
    for r in results:
        total = sum(s["seconds"] for s in r["stages"].values())
        peaks = [s["peak_mb"] for s in r["stages"].values() if s["peak_mb"] is not None]
        print(f"{r['model']}: {r['n_edges']:,} edges, stages {total:.0f} s, peak "
              f"{max(peaks) if peaks else 'not measured'} MB; circuits {r['circuit_edges']} edges "
              f"(valid {r['circuit_valid']}), path-patching rows {r['path_patching_rows']}")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
