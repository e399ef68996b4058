"""Cost model for the paper's scale: EAP-IG + circuit search for Pythia 70m … 12b, 154 checkpoints × 4 tasks.

Counts, per (checkpoint, task), the floating-point work of the engine as implemented here and divides by an
assumed sustained GPU throughput (a model, not a measurement: no GPU was lent to the session that wrote it):

- EAP-IG: 2 forward + m forward/backward passes ≈ (2 + 3m) · 2 · N · T FLOPs (N parameters, T prompt tokens),
  plus the score contraction m · 2 · T · d_model · E (every edge's Δa · ∂M/∂in, summed over positions);
- circuit search: 1 corrupted forward + ≈ 24 patched forwards (8 grid sizes + ≤ 6 binary steps + MIB's 10
  fractions) ≈ 25 · 2 · N · T, plus the patching contractions ≈ 24 · 2 · T · d_model · E;
- memory: bf16 weights (2N bytes) + the float32 activation-difference buffer writers · T · d_model · 4 bytes
  (:func:`circuit_stability.attribution.activation_bytes`; the engine lowers the batch to fit its budget);
- I/O: every (checkpoint, task) job loads the checkpoint twice (scores, then circuit) at ``--read-gbps``.

Usage: ``python benchmarks/cost_model.py [--tflops 300] [--ig-steps 5]``.
"""

from __future__ import annotations

import argparse

from circuit_stability.checkpoints import pythia_schedule
from circuit_stability.graph import Graph

# Published Pythia shapes (Biderman et al. 2023, Table 1): layers, d_model, heads.
PYTHIA = {"70m": (6, 512, 8), "160m": (12, 768, 12), "410m": (24, 1024, 16), "1b": (16, 2048, 8),
          "1.4b": (24, 2048, 16), "2.8b": (32, 2560, 32), "6.9b": (32, 4096, 32), "12b": (36, 5120, 40)}
VOCAB = 50_304
# Prompt tokens per task dataset (examples × mean prompt length in Pythia's tokenizer, as in the paper's data).
TASK_TOKENS = {"ioi": 70 * 17, "gp": 70 * 10, "greater_than": 200 * 12, "sva": 200 * 7}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflops", type=float, default=300.0,
                    help="sustained bf16 TFLOP/s assumed (H100 dense peak ≈ 990; 30%% MFU ≈ 300)")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--read-gbps", type=float, default=2.0, help="checkpoint load speed, GB/s (cached on disk)")
    a = ap.parse_args()
    n_ckpt, m = len(pythia_schedule()), a.ig_steps
    print(f"{n_ckpt} checkpoints x {len(TASK_TOKENS)} tasks, EAP-IG m = {m}, {a.tflops:.0f} TFLOP/s sustained")
    print(f"{'model':6} {'params':>8} {'edges':>10} {'Δa buffer GB (IOI)':>18} {'weights GB':>10} "
          f"{'compute s':>9} {'load s':>6} {'GPU-hours':>10}")
    total = 0.0
    for name, (L, d, H) in PYTHIA.items():
        n = 12 * L * d * d + 2 * VOCAB * d
        g = Graph(L, H)
        seconds = 0.0
        for tokens in TASK_TOKENS.values():
            flops = ((2 + 3 * m) + 25) * 2 * n * tokens + (m + 24) * 2 * tokens * d * g.n_edges
            seconds += flops / (a.tflops * 1e12)
        per = seconds / len(TASK_TOKENS)
        load = 2 * (2 * n / 1e9) / a.read_gbps
        hours = (seconds + len(TASK_TOKENS) * load) * n_ckpt / 3600
        total += hours
        buf = g.n_writers * TASK_TOKENS["ioi"] * d * 4 / 1e9
        print(f"{name:6} {n / 1e9:7.2f}B {g.n_edges:10,d} {buf:18.2f} {2 * n / 1e9:10.1f} {per:9.2f} {load:6.1f} {hours:10.2f}")
    print(f"total: {total:.1f} GPU-hours for the whole study (per (checkpoint, task): compute + load seconds)")


if __name__ == "__main__":
    main()
