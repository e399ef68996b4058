"""Cost model for the paper's scale: Pythia 70m … 12b, 154 checkpoints × 4 tasks, every stage.

Counts, per checkpoint, the floating-point work of the engine as implemented here and divides by a sustained GPU
throughput (``--tflops``: an assumption, not a measurement, where no GPU has measured it; README "Running on a
cluster" says which):

- EAP-IG (per task): 2 forward + m forward/backward passes ≈ (2 + 3m) · 2 · N · T FLOPs (N parameters, T prompt
  tokens), plus the score contraction m · 2 · T · d_model · E (every edge's Δa · ∂M/∂in, summed over positions);
- circuit search (per task): 1 corrupted forward + ≈ 24 patched forwards (8 grid sizes + ≤ 6 binary steps + MIB's
  10 fractions) ≈ 25 · 2 · N · T, plus the patching contractions ≈ 24 · 2 · T · d_model · E;
- path patching (IOI, at every k-th checkpoint, config/pythia.yaml's ``stability_every``): each of the L·H senders
  in 2 forms into 3 receiver sets, replaying on average half the layers ≈ 6 · L·H · ½ · 2 · N · T_ioi;
- components: ≈ 10 forwards of 8 × 40 tokens; behaviour: 2 forwards per task;
- memory: weights (2N bytes in bfloat16 from 1b up, 4N below) + the float32 activation-difference buffer
  writers · batch · T · d_model · 4 bytes at config/pythia.yaml's batch sizes, + autograd activations ≈ 2×
  the buffer;
- disk: Pythia's checkpoints are float16 safetensors, 2N bytes each, 154 per model (or a few at a time with
  ``hub.evict``);
- I/O: every job loads its checkpoint (behaviour, components and path patching once, scores and circuits once per
  task) at ``--read-gbps``.

A second table gives the other families (docs/architectures.md) per 100 checkpoints × 4 tasks, in bfloat16 with
float32 accumulation: parameters from each model's published shape (:attr:`circuit_stability.scale.PublishedShape.n_parameters`: attention with K
key/value heads, plain or gated MLP, tied or untied embeddings; they reproduce the published totals, e.g. GPT-2
small 124M, SmolLM2-135M 135M, OLMo-7B 6.9B, Llama-3-8B 8.0B), edges of the sequential graph, GPU memory at the
batch given, and the largest batch whose EAP-IG fits an 80 GB GPU.

Usage: ``python benchmarks/cost_model.py [--tflops 300] [--ig-steps 5]``.
"""

from __future__ import annotations

import argparse

from circuit_stability.checkpoints import pythia_schedule
from circuit_stability.graph import Graph
from circuit_stability.scale import PUBLISHED_SHAPES, PYTHIA_SHAPES, PYTHIA_VOCAB, Shape, thin

# Prompt tokens per task dataset (examples × mean prompt length in Pythia's tokenizer, as in the paper's data).
TASK_TOKENS = {"ioi": 70 * 17, "gp": 70 * 10, "greater_than": 200 * 12, "sva": 200 * 7}
SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
# config/pythia.yaml: batch size, bytes per weight, path patching at every k-th checkpoint
SETTINGS = {"70m": (70, 4, 1), "160m": (70, 4, 1), "410m": (70, 4, 1), "1b": (35, 2, 3), "1.4b": (35, 2, 3),
            "2.8b": (20, 2, 3), "6.9b": (10, 2, 3), "12b": (5, 2, 3)}


def costs(size: str, tflops: float, m: int, read_gbps: float) -> dict:
    """GPU-hours, GPU memory and disk of pythia-``size`` over 154 checkpoints × 4 tasks (module docstring)."""
    L, d, H = PYTHIA_SHAPES[size]
    n = Shape(L, d, H, PYTHIA_VOCAB).n_parameters
    batch, weight_bytes, every = SETTINGS[size]
    g = Graph(L, H)
    steps = pythia_schedule()
    patched = len(thin(steps, every))
    flops = 0.0
    for tokens in TASK_TOKENS.values():  # per checkpoint, every task: behaviour, EAP-IG, circuit search
        flops += 2 * 2 * n * tokens
        flops += ((2 + 3 * m) + 25) * 2 * n * tokens + (m + 24) * 2 * tokens * d * g.n_edges
    flops += 10 * 2 * n * 8 * 40  # components
    compute = flops * len(steps) + 6 * L * H * 0.5 * 2 * n * TASK_TOKENS["ioi"] * patched
    loads = (2 + 2 * len(TASK_TOKENS)) * len(steps) + patched
    load_s = loads * weight_bytes * n / 1e9 / read_gbps
    hours = (compute / (tflops * 1e12) + load_s) / 3600
    buffer = g.n_writers * batch * 17 * d * 4
    return {"params": n, "edges": g.n_edges, "gpu_hours": hours, "compute_share": compute / (tflops * 1e12) / 3600 / hours,
            "gpu_gb": (weight_bytes * n + 3 * buffer) / 1e9, "disk_tb": len(steps) * 2 * n / 1e12,
            "checkpoint_gb": 2 * n / 1e9}


# The other families' rows: published shapes (circuit_stability.scale.PUBLISHED_SHAPES, with their sources)
FAMILIES = ("gpt2-small", "gpt2-medium", "smollm2-135m", "smollm2-1.7b", "olmo-1b", "olmo-7b", "llama-3-8b")
GPU_GB = 80.0


def family_costs(name: str, tflops: float, m: int, batch: int) -> dict:
    """Per 100 checkpoints × 4 tasks of a published shape (:data:`circuit_stability.scale.PUBLISHED_SHAPES`), bfloat16 weights: GPU-hours (the same FLOP
    count as :func:`costs`, path patching at every checkpoint), GPU memory of EAP-IG at ``batch`` (weights + 3× the
    float32 Δa buffer, IOI's 17 tokens), and the largest batch that fits :data:`GPU_GB`."""
    shape = PUBLISHED_SHAPES[name]
    L, d, H, K = shape.n_layers, shape.d_model, shape.n_heads, shape.n_kv_heads
    n = shape.n_parameters
    g = Graph(L, H, False, K)
    flops = 0.0
    for tokens in TASK_TOKENS.values():
        flops += 2 * 2 * n * tokens + ((2 + 3 * m) + 25) * 2 * n * tokens + (m + 24) * 2 * tokens * d * g.n_edges
    flops += 10 * 2 * n * 8 * 40 + 6 * L * H * 0.5 * 2 * n * TASK_TOKENS["ioi"]
    per_example = 3 * g.n_writers * 17 * d * 4
    return {"params": n, "edges": g.n_edges, "gpu_hours": 100 * flops / (tflops * 1e12) / 3600,
            "gpu_gb": (2 * n + batch * per_example) / 1e9,
            "max_batch": int((GPU_GB * 1e9 - 2 * n) // per_example)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflops", type=float, default=300.0,
                    help="sustained bf16 TFLOP/s (an H100's dense peak ≈ 990; 30%% of it ≈ 300)")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--read-gbps", type=float, default=2.0, help="checkpoint load speed, GB/s (cached on disk)")
    a = ap.parse_args()
    print(f"{len(pythia_schedule())} checkpoints x {len(TASK_TOKENS)} tasks, EAP-IG m = {a.ig_steps}, "
          f"{a.tflops:.0f} TFLOP/s sustained, loads at {a.read_gbps} GB/s")
    print(f"{'model':6} {'params':>7} {'edges':>9} {'GPU-hours':>9} {'compute':>7} {'GPU GB':>7} {'ckpt GB':>7} "
          f"{'disk TB':>7}")
    total = 0.0
    for size in SIZES:
        c = costs(size, a.tflops, a.ig_steps, a.read_gbps)
        total += c["gpu_hours"]
        print(f"{size:6} {c['params'] / 1e9:6.2f}B {c['edges']:9,d} {c['gpu_hours']:9.2f} {c['compute_share']:7.0%} "
              f"{c['gpu_gb']:7.1f} {c['checkpoint_gb']:7.2f} {c['disk_tb']:7.2f}")
    print(f"total: {total:.1f} GPU-hours for all eight sizes")
    batch = 16
    print(f"\nother families, bfloat16, per 100 checkpoints x {len(TASK_TOKENS)} tasks; GPU memory of EAP-IG at batch "
          f"{batch}; largest batch on one {GPU_GB:.0f} GB GPU")
    print(f"{'model':13} {'params':>7} {'edges':>9} {'GPU-h/100':>9} {'GPU GB':>7} {'max batch':>9}")
    for name in FAMILIES:
        c = family_costs(name, a.tflops, a.ig_steps, batch)
        print(f"{name:13} {c['params'] / 1e9:6.3f}B {c['edges']:9,d} {c['gpu_hours']:9.2f} {c['gpu_gb']:7.1f} "
              f"{c['max_batch']:9d}")


if __name__ == "__main__":
    main()
