"""Training throughput of the embedded suite on this CPU (issue 12): ratios to the float32 baseline, one run.

For each suite shape (config/config.yaml's mini-s, mini-m, mini-l; vocabulary of the suite's tokenizer) the
project's own training step (:func:`circuit_stability.suite.train.train_step`: forward, next-token loss, backward,
gradient clipping, AdamW) is timed on random token batches under each option:

- ``float32 1t``: the trainer as it runs in the workflow (float32, one thread, batch 32 x 64): the baseline;
- ``float32 2t``: two intra-op threads;
- ``bf16 autocast``: ``torch.autocast("cpu", torch.bfloat16)`` around forward and loss (AMX-BF16 where present);
- ``compile``: ``torch.compile`` of the model (inductor), steady state after the warm-up steps; the one-off
  compilation time is printed beside it;
- ``batch 64x32``: the same tokens per step cut as 64 sequences of 32 tokens.

Each option gets ``--warmup`` untimed steps, then the median of ``--repeats`` timings of ``--steps`` steps.
Prints tokens/s and the ratio to ``float32 1t`` of the same shape, measured in this run.

Usage: ``python benchmarks/training.py [--steps 20] [--repeats 3] [--shapes mini-s mini-m mini-l]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import SHAPES

from circuit_stability.suite.corpus import lexicon_sample
from circuit_stability.suite.tokenizer import build_tokenizer
from circuit_stability.suite.train import ModelShape, TrainConfig, init_model, make_optimizer, train_step

OPTIONS = {  # name: (threads, autocast, compile, batch, context)
    "float32 1t": (1, False, False, 32, 64),
    "float32 2t": (2, False, False, 32, 64),
    "bf16 autocast": (1, True, False, 32, 64),
    "compile": (1, False, True, 32, 64),
    "batch 64x32": (1, False, False, 64, 32),
}


class _Autocast(torch.nn.Module):
    """The model with its forward (and so the loss) under bfloat16 autocast."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **kw):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(**kw)


def measure(shape: ModelShape, vocab: int, option: str, steps: int, repeats: int, warmup: int) -> tuple[float, float]:
    """(tokens/s, compile seconds) of ``option`` for ``shape``."""
    threads, autocast, compile_, batch, context = OPTIONS[option]
    torch.set_num_threads(threads)
    cfg = TrainConfig(batch_size=batch, context=context, max_steps=steps, lr=3e-3, warmup_steps=1,
                      min_lr_ratio=0.1, decay_steps=None, weight_decay=0.01, seed=0)
    model = init_model(shape, vocab, cfg)
    model.train()
    opt = make_optimizer(model, cfg)
    run = _Autocast(model) if autocast else model
    compile_s = 0.0
    if compile_:
        run = torch.compile(model)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (warmup + steps * repeats, batch, context), generator=gen)
    t0 = time.perf_counter()
    for i in range(warmup):
        train_step(run, opt, data[i], 1e-3)
    if compile_:
        compile_s = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            train_step(run, opt, data[warmup + r * steps + i], 1e-3)
        times.append(time.perf_counter() - t0)
    return batch * context * steps / statistics.median(times), compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--shapes", nargs="+", default=["mini-s", "mini-m", "mini-l"])
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    a = ap.parse_args()
    vocab = len(build_tokenizer(lexicon_sample()))
    print(f"vocabulary {vocab}; {a.steps} steps x {a.repeats} repeats (median) after {a.warmup} warm-up steps; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'shape':8} {'option':14} {'tokens/s':>10} {'vs float32 1t':>13} {'compile s':>9}")
    for name in a.shapes:
        layers, d_model, heads, _ = SHAPES[name]
        shape = ModelShape(n_layers=layers, d_model=d_model, n_heads=heads, d_mlp=None, rotary_pct=1.0,
                           architecture="gpt-neox", n_kv_heads=None)
        base = None
        for option in ["float32 1t"] + [o for o in a.options if o != "float32 1t"]:
            tps, compile_s = measure(shape, vocab, option, a.steps, a.repeats, a.warmup)
            base = base or tps
            extra = f"{compile_s:9.1f}" if OPTIONS[option][2] else ""
            print(f"{name:8} {option:14} {tps:10,.0f} {tps / base:12.2f}x {extra}", flush=True)


if __name__ == "__main__":
    main()
