"""Benchmark of the IOI path-patching stage (the algorithm-stability issue): its cost against EAP-IG scoring of the
same checkpoints, measured in this one run.

For every qualifying checkpoint of a built study (a valid IOI circuit, a model with at least three layers: the
checkpoints the stability rule path-patches), on the study's IOI prompts:

  a. path patching: every head into every receiver set that exists there, both forms
     (``stability.checkpoint_effects``, what the rule runs per checkpoint);
  b. EAP-IG scoring of IOI at the study's settings (``attribution.score_edges``, what the scores rule runs);

and prints each checkpoint's seconds and the ratio a/b, then the total ratio (goal: ≤ 1). Model loading and
imports are outside both timings (both rules pay them once per job).

Usage: ``python benchmarks/stability.py --study <built study folder> [--threads 1]`` (the default study:
``snakemake --cores all`` first).
"""

from __future__ import annotations

from common import suite_study, timed

from circuit_stability.attribution import Prompts, score_edges
from circuit_stability.graph import Graph
from circuit_stability.models import load_model
from circuit_stability.records import CircuitRecord, ComponentsRecord, read_dataset
from circuit_stability.stability import checkpoint_effects


def main() -> None:
    a, cfg = suite_study(__doc__)
    family, an, comp = cfg["suite"]["name"], cfg["analysis"], cfg["components"]
    ioi = read_dataset(a.study / f"data/tasks/{family}/ioi.parquet")
    print(f"study {cfg['study']}: {an['method']} m = {an['ig_steps']}, batch {an['batch_size']}, "
          f"{len(ioi.frame)} IOI prompts, {a.threads} thread(s)")
    print(f"{'model':8} {'step':>6} {'sets':>4} {'patching s':>10} {'EAP-IG s':>9} {'ratio':>6}")
    total_p = total_s = 0.0
    for model, shape in cfg["suite"]["models"].items():
        if shape["n_layers"] < 3:
            continue
        for path in sorted((a.study / f"results/circuits/{model}/ioi").glob("step*.json"),
                           key=lambda p: int(p.stem[4:])):
            circuit = CircuitRecord.read(path)
            if not circuit.valid:
                continue
            bridge = load_model(model, circuit.step, a.study / "models", device="cpu")
            prompts = Prompts.from_dataset(ioi, bridge.tokenizer.pad_token_id)
            scores = ComponentsRecord.read(a.study / f"results/components/{model}/step{circuit.step}.parquet").scores
            heads = {n for n in circuit.nodes if n.startswith("a")}
            t_p, (frame, _) = timed(checkpoint_effects, bridge, prompts, scores, heads, comp["thresholds"]["copy"],
                                    comp["thresholds"]["negative_copy"], comp["candidate_effect"])
            t_s, _ = timed(score_edges, bridge, Graph.from_config(bridge.cfg), prompts, an["method"], an["ig_steps"],
                           an["ig_convention"], an["batch_size"])
            total_p, total_s = total_p + t_p, total_s + t_s
            print(f"{model:8} {circuit.step:>6} {frame['receivers'].nunique():>4} {t_p:>10.2f} {t_s:>9.2f} "
                  f"{t_p / t_s:>6.2f}")
    if total_s == 0:
        raise SystemExit("no qualifying checkpoint (valid IOI circuit on a model with >= 3 layers)")
    print(f"total: path patching {total_p:.2f} s, EAP-IG scoring {total_s:.2f} s, ratio {total_p / total_s:.2f} "
          f"(goal <= 1)")


if __name__ == "__main__":
    main()
