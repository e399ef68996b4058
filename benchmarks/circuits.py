"""Benchmark of the minimal-circuit search (issue 5): ratios measured in this one run.

For each model shape (the embedded sizes and a randomly initialised pythia-160m config, built offline) on one
batch of random prompts, with EAP-IG scores of that batch:

  a. search wall time ÷ one clean forward on the same batch, and that per evaluated size (clean-forward
     equivalents per size; goal ≤ 1.25);
  b. the number of sizes evaluated (goal ≤ 16; the paper's linear scan evaluated 60–100);
  c. search wall time ÷ EAP-IG scoring wall time of the same checkpoint (goal < 1).

Usage: ``python benchmarks/circuits.py [--batch 8] [--positions 20] [--shapes ...]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import build, prompts, timed

from circuit_stability.attribution import edge_attribution, interpolation_points
from circuit_stability.circuits import SearchSettings, minimal_circuit
from circuit_stability.graph import Graph

# the search as the paper runs it (threshold 0.8, sizes 1 .. 5% of the edges), the other settings the schema's
SEARCH = SearchSettings(threshold=0.8, max_fraction=0.05, min_search_edges=1, grid_points=8, selection="greedy",
                        validity_margin=0.0, emergence_fraction=0.5)


def clean_forward(bridge, p) -> None:
    with torch.no_grad():
        bridge(p.clean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--positions", type=int, default=20)
    ap.add_argument("--shapes", nargs="+", default=["mini-s", "mini-m", "mini-l", "pythia-160m"])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch} x {a.positions} tokens, {a.threads} thread(s), threshold 0.8, sizes 1 .. 5% of edges")
    print(f"{'shape':12} {'edges':>9} {'fwd s':>7} {'search s':>8} {'sizes':>5} {'fwd-eq/size':>11} "
          f"{'EAP-IG s':>8} {'search/scoring':>14} {'size found':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.shapes:
            bridge = build(Path(tmp), name)
            graph = Graph.from_config(bridge.cfg)
            p = prompts(bridge.cfg.d_vocab, a.batch, a.positions)
            clean_forward(bridge, p)  # warm-up
            t_fwd = min(timed(clean_forward, bridge, p)[0] for _ in range(3))
            alphas = interpolation_points("EAP-IG", 5, "paper")
            t_score, att = timed(edge_attribution, bridge, graph, p, alphas, a.batch)
            t_search, res = timed(minimal_circuit, bridge, graph, att.scores, p, SEARCH, a.batch)
            n = len(res.curve) + 2  # + m(M) and m(∅)
            print(f"{name:12} {graph.n_edges:9,d} {t_fwd:7.3f} {t_search:8.2f} {len(res.curve):5d} "
                  f"{t_search / t_fwd / n:11.2f} {t_score:8.2f} {t_search / t_score:14.2f} "
                  f"{res.size:>6}{'' if res.reached else ' (not reached)'}", flush=True)


if __name__ == "__main__":
    main()
