"""Do pinned CPU kernel paths make suite training bit-identical across x86 CPUs, and what do they cost?

Training a suite model on two CPUs gives different weights: the libraries pick kernels by the instruction sets
a CPU offers (ATen's CPU capability, MKL's and oneDNN's code paths, glibc's libm variants), and different
kernels round differently. Each setting below trains the same model (mini-s's shape by default) on the same
token stream for ``--steps`` optimizer steps in a fresh process, one thread, and prints the SHA-256 of the
trained weights and the training throughput:

- ``native``: what this CPU picks by itself;
- ``older-cpu``: an emulated CPU without AVX2/FMA/AVX-512 (ATen's baseline kernels, MKL limited to SSE4.2,
  oneDNN to SSE4.1, glibc's libm without its AVX2/FMA variants): what such a machine picks by itself;
- ``portable``: :data:`circuit_stability.kernels.PORTABLE` (every layer pinned to its baseline x86-64 path:
  MKL's conditional numerical reproducibility ``MKL_CBWR=COMPATIBLE``);
- ``portable+older-cpu``: the pinned setting on the emulated older CPU.

If ``native`` ≠ ``older-cpu``, the kernel paths change training's bits (the mechanism of cross-CPU
divergence); if ``portable`` = ``portable+older-cpu``, the pinned setting does not depend on what the CPU
offers. Ratios of throughput are to ``native`` in the same run.

Usage: ``python benchmarks/cpu_kernels.py [--steps 300] [--shape mini-s]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {"mini-s": (2, 64, 4), "mini-m": (3, 96, 6), "mini-l": (4, 128, 8)}  # config/config.yaml


def _older_cpu() -> dict[str, str]:
    return {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41",
            "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F,-AVX_Usable"}


def settings() -> dict[str, dict[str, str]]:
    from circuit_stability.kernels import PORTABLE

    return {"native": {}, "older-cpu": _older_cpu(), "portable": dict(PORTABLE),
            "portable+older-cpu": {**_older_cpu(), **PORTABLE}}


def _worker(tokens_path: str, shape: str, steps: int) -> None:
    """Train in this process (its environment already set) and print one JSON line."""
    import time

    import numpy as np
    import torch
    from transformers import PreTrainedTokenizerFast

    from circuit_stability.suite.train import ModelShape, TrainConfig, train_model

    layers, d, heads = SHAPES[shape]
    tokens = np.load(tokens_path)[:steps]
    tok = PreTrainedTokenizerFast.from_pretrained(Path(tokens_path).with_name("tokenizer"))
    cfg = TrainConfig(batch_size=tokens.shape[1], context=tokens.shape[2], max_steps=steps, lr=3e-3, warmup_steps=10,
                      min_lr_ratio=0.1, decay_steps=None, weight_decay=0.01, seed=0)
    out = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    train_model(ModelShape(layers, d, heads, None, 1.0, "gpt-neox", None), cfg, tokens, tok, out, [steps], threads=1)
    seconds = time.perf_counter() - t0
    weights = (out / f"step{steps}" / "model.safetensors").read_bytes()
    print(json.dumps({"sha256": hashlib.sha256(weights).hexdigest()[:16], "tokens_per_s": tokens.size / seconds,
                      "capability": torch.backends.cpu.get_cpu_capability()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--shape", default="mini-s", choices=sorted(SHAPES))
    ap.add_argument("--worker", nargs=2, metavar=("TOKENS", "SHAPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        _worker(a.worker[0], a.worker[1], a.steps)
        return
    from circuit_stability.config import schema_default
    from circuit_stability.suite.build import build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        build_corpus(tmp, 0, schema_default("suite.corpus.weights"), 32, 64, a.steps)
        print(f"{a.shape}, {a.steps} steps of 32 x 64 tokens, 1 thread, each setting in a fresh process")
        print(f"{'setting':20} {'weights sha256':>17} {'ATen':>8} {'tokens/s':>9} {'ratio':>6}")
        results = {}
        for name, env in settings().items():
            proc = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--worker",
                                   str(Path(tmp) / "tokens.npy"), a.shape], env={**os.environ, **env},
                                  capture_output=True, text=True, check=True)
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[name]
            print(f"{name:20} {r['sha256']:>17} {r['capability']:>8} {r['tokens_per_s']:9.0f} "
                  f"{r['tokens_per_s'] / results['native']['tokens_per_s']:6.2f}", flush=True)
    same = lambda x, y: "identical" if results[x]["sha256"] == results[y]["sha256"] else "different"  # noqa: E731
    print(f"native vs older-cpu: {same('native', 'older-cpu')} weights; "
          f"portable vs portable+older-cpu: {same('portable', 'portable+older-cpu')} weights; "
          f"portable costs {results['native']['tokens_per_s'] / results['portable']['tokens_per_s']:.2f}x native time")


if __name__ == "__main__":
    main()
