"""Benchmark of the attribution engine (issue 4): every figure is a ratio measured in this one run.

For each model shape (the three embedded suite sizes and randomly initialised pythia-70m / pythia-160m configs,
built offline from their published hyperparameters) on one batch of random prompts:

  a. overhead = EAP-IG wall time ÷ wall time of the bare passes it needs (2 forward + m forward/backward on the
     same batch, same model, no hooks);
  b. speed-up = TransformerLens 4 ``attribution_patch`` edge-EAP wall time ÷ our EAP wall time (same batch);
  c. peak memory above the loaded model (RSS sampled every 5 ms) against the formula
     writers × batch × positions × d_model × 4 bytes of the activation-difference buffer.

Usage: ``python benchmarks/attribution.py [--batch 8] [--positions 20] [--tl-batch 2] [--shapes ...]``.
Runs in about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import SHAPES, PeakRSS, bare_passes, build, prompts, timed

from circuit_stability.attribution import Prompts, activation_bytes, edge_attribution, interpolation_points
from circuit_stability.graph import Graph


def tl_eap(bridge, p: Prompts) -> None:
    """TransformerLens 4's edge-granularity EAP, one pair at a time (its design), same metric."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    params = list(bridge.parameters())
    for q in params:
        q.requires_grad_(True)  # TL differentiates through parameters
    try:
        metric = lambda logits: logits[0, -1, 5] - logits[0, -1, 6]  # noqa: E731
        attribution_patch(bridge, p.clean, p.corrupted, metric, EdgeAttributionConfig(granularity="edge"))
    finally:
        for q in params:
            q.requires_grad_(False)
            q.grad = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--positions", type=int, default=20)
    ap.add_argument("--tl-batch", type=int, default=2, help="examples for the (slow) TransformerLens baseline")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch} x {a.positions} tokens, EAP-IG m = {a.ig_steps}, TL baseline on {a.tl_batch} "
          f"examples, {a.threads} thread(s)")
    print(f"{'shape':12} {'edges':>9} {'bare s':>7} {'EAP-IG s':>9} {'overhead':>8} {'TL EAP s':>9} "
          f"{'our EAP s':>9} {'speed-up':>8} {'peak MB':>8} {'formula MB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.shapes:
            bridge = build(Path(tmp), name)
            graph = Graph.from_config(bridge.cfg)
            p = prompts(bridge.cfg.d_vocab, a.batch, a.positions)
            bare_passes(bridge, p, 1)  # warm-up
            t_bare = bare_passes(bridge, p, a.ig_steps)
            with PeakRSS() as peak:
                alphas = interpolation_points("EAP-IG", a.ig_steps, "paper")
                t_ig, _ = timed(edge_attribution, bridge, graph, p, alphas, a.batch)
            small = Prompts(p.clean[: a.tl_batch], p.corrupted[: a.tl_batch], p.position[: a.tl_batch],
                            p.answer_ids[: a.tl_batch], p.flags[: a.tl_batch], p.metric)
            t_ours, _ = timed(edge_attribution, bridge, graph, small, [0.0], a.tl_batch)
            t_tl, _ = timed(tl_eap, bridge, small)
            formula = activation_bytes(graph, a.batch, a.positions, bridge.cfg.d_model)
            print(f"{name:12} {graph.n_edges:9,d} {t_bare:7.2f} {t_ig:9.2f} {t_ig / t_bare:8.2f} {t_tl:9.2f} "
                  f"{t_ours:9.3f} {t_tl / t_ours:7.0f}x {peak.peak / 2**20:8.1f} {formula / 2**20:10.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
