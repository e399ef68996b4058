"""Throughput of EAP-IG scoring per model shape, and the speed-up over TransformerLens 4 as the batch grows.
Every figure is measured in this one run.

1. For each shape (the embedded suite's three sizes; random pythia-70m and pythia-160m from their published
   hyperparameters; on a GPU, every Pythia size up to --max-gpu-size): examples per second of EAP-IG (m = 5) on a
   batch of the paper's IOI size (70 prompts of 17 tokens), next to examples per second of the bare passes the
   method needs on the same batch (2 forward + m forward/backward, no hooks), their ratio (the engine's overhead),
   and the peak memory above the loaded model (host RSS on the CPU; ``torch.cuda.max_memory_allocated`` on a GPU).
   On a GPU the models run in bfloat16 (scores accumulated in float32), as config/pythia.yaml runs 1b and up.
2. Speed-up over TransformerLens 4's edge attribution patching (``attribution_patch``, edge granularity, the same
   mean logit-difference metric) on the suite models at 2, 10, 35 and 70 examples: TL wall time / our EAP wall time
   (EAP: one gradient point, the method TL implements).

Usage: ``python benchmarks/throughput.py [--batch 70] [--tl-batches 2,10,35,70] [--max-gpu-size 12b]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import SHAPES, PeakRSS, bare_passes, build, prompts, sync, timed

from circuit_stability.attribution import Prompts, edge_attribution, interpolation_points
from circuit_stability.graph import Graph
from circuit_stability.scale import PYTHIA_SHAPES, PYTHIA_VOCAB

POSITIONS = 17  # tokens of an IOI prompt in Pythia's tokenizer (benchmarks/cost_model.py)


def tl_eap(bridge, p: Prompts) -> None:
    """TransformerLens 4's edge-granularity attribution patching on the whole batch, mean logit difference."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    params = list(bridge.parameters())
    for q in params:
        q.requires_grad_(True)  # TL differentiates through parameters
    try:
        metric = lambda logits: (logits[:, -1, 5] - logits[:, -1, 6]).mean()  # noqa: E731
        attribution_patch(bridge, p.clean, p.corrupted, metric, EdgeAttributionConfig(granularity="edge"))
    finally:
        for q in params:
            q.requires_grad_(False)
            q.grad = None


def throughput(tmp: Path, a: argparse.Namespace, device: str) -> None:
    shapes = {n: s for n, s in SHAPES.items()}
    if device == "cuda":
        sizes = list(PYTHIA_SHAPES)[: list(PYTHIA_SHAPES).index(a.max_gpu_size) + 1]
        shapes.update({f"pythia-{s}": (*PYTHIA_SHAPES[s], PYTHIA_VOCAB) for s in sizes})
    dtype = "bfloat16" if device == "cuda" else "float32"
    print(f"\n1. EAP-IG throughput, {a.batch} examples x {POSITIONS} tokens, m = {a.ig_steps}, {device}, {dtype}")
    print(f"{'shape':12} {'edges':>9} {'bare ex/s':>9} {'EAP-IG ex/s':>11} {'overhead':>8} {'peak MB':>8}")
    for name, (layers, d, heads, vocab) in shapes.items():
        bridge = build(tmp, name, (layers, d, heads, vocab), device, dtype)
        graph = Graph.from_config(bridge.cfg)
        p = prompts(bridge.cfg.d_vocab, a.batch, POSITIONS)
        p = Prompts(p.clean.to(device), p.corrupted.to(device), p.position.to(device), p.answer_ids.to(device),
                    p.flags.to(device), p.metric)
        bare_passes(bridge, p, 1)  # warm-up
        t_bare = bare_passes(bridge, p, a.ig_steps)
        alphas = interpolation_points("EAP-IG", a.ig_steps, "paper")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            sync()
            t_ig, _ = timed(edge_attribution, bridge, graph, p, alphas, a.batch)
            sync()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            with PeakRSS() as rss:
                t_ig, _ = timed(edge_attribution, bridge, graph, p, alphas, a.batch)
            peak = rss.peak / 2**20
        print(f"{name:12} {graph.n_edges:9,d} {a.batch / t_bare:9.1f} {a.batch / t_ig:11.1f} {t_ig / t_bare:8.2f} "
              f"{peak:8.0f}", flush=True)
        del bridge


def speedup(tmp: Path, a: argparse.Namespace) -> None:
    batches = [int(b) for b in a.tl_batches.split(",")]
    print(f"\n2. Speed-up over TransformerLens 4 edge attribution patching (EAP), {POSITIONS} tokens, cpu, float32")
    print(f"{'shape':8} {'edges':>6} " + " ".join(f"{'TL s':>7} {'ours s':>7} {'x' + str(b):>6}" for b in batches))
    for name in ("mini-s", "mini-m", "mini-l"):
        bridge = build(tmp, name)
        graph = Graph.from_config(bridge.cfg)
        cells = []
        for b in batches:
            p = prompts(bridge.cfg.d_vocab, b, POSITIONS)
            edge_attribution(bridge, graph, p, [0.0], b)  # warm-up
            t_ours, _ = timed(edge_attribution, bridge, graph, p, [0.0], b)
            t_tl, _ = timed(tl_eap, bridge, p)
            cells.append(f"{t_tl:7.2f} {t_ours:7.3f} {t_tl / t_ours:5.0f}x")
        print(f"{name:8} {graph.n_edges:6,d} " + " ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=70, help="examples (the paper's IOI: 70)")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--tl-batches", default="2,10,35,70")
    ap.add_argument("--max-gpu-size", default="12b", choices=list(PYTHIA_SHAPES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-speedup", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"throughput: torch {torch.__version__}, {device}, {a.threads} thread(s), {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory() as tmp:
        throughput(Path(tmp), a, "cpu")
        if device == "cuda":
            throughput(Path(tmp), a, "cuda")
        if not a.skip_speedup:
            speedup(Path(tmp), a)


if __name__ == "__main__":
    main()
