"""Benchmark of the bootstrap noise floor (the similarity issue): its cost against the EAP-IG scoring of the same
study, measured in this one run, and the cost of keeping per-example scores.

For every model of a built study (``snakemake --cores all`` first):

  a. the similarity stage's work (``similarity.model_similarity``: sizes, Jaccards, B bootstrap resamples of every
     valid circuit by re-weighting the stored per-example scores, and the faithfulness of a few resampled circuits
     at each task's last valid checkpoint, reading every file it needs), timed as a whole;
  b. EAP-IG scoring of every scored (task, step) of the model, at the study's settings: one checkpoint per task is
     scored here (the last) and multiplied by the number of scored steps (every checkpoint of a model has the same
     shapes, so the same cost);

and prints a, b and a/b per model and in total (goal: ≤ 0.20), then the cost of per-example scores: EAP-IG with
and without them at the largest model's last checkpoint (ratio − 1 is what the scores stage pays for the bootstrap).
Imports are outside every timing.

Usage: ``python benchmarks/similarity.py --study <built study folder> [--threads 1]``.
"""

from __future__ import annotations


import torch
from common import suite_study, timed

from circuit_stability.attribution import Prompts, edge_attribution, interpolation_points, patched_metric
from circuit_stability.graph import Graph
from circuit_stability.models import load_model
from circuit_stability.records import CircuitRecord, ExampleScoresRecord, ScoresRecord, example_scores_path, read_dataset
from circuit_stability.similarity import model_similarity


def main() -> None:
    a, cfg = suite_study(__doc__)
    family, an, sim = cfg["suite"]["name"], cfg["analysis"], cfg["similarity"]
    if not sim["resamples"]:
        raise SystemExit("similarity.resamples is 0 in this study: no bootstrap to time")
    tasks = sorted(cfg["tasks"])
    data = {t: read_dataset(a.study / f"data/tasks/{family}/{t}.parquet") for t in tasks}
    alphas = interpolation_points(an["method"], an["ig_steps"], an["ig_convention"])
    res = a.study / "results"
    print(f"study {cfg['study']}: {an['method']} m = {an['ig_steps']}, B = {sim['resamples']} resamples, "
          f"{sim['faithfulness_resamples']} faithfulness resamples, {a.threads} thread(s)")
    print(f"{'model':12} {'scored':>6} {'valid':>5} {'bootstrap s':>11} {'EAP-IG s':>9} {'ratio':>6}")
    total_b = total_s = 0.0
    last = None
    for model in cfg["suite"]["models"]:
        steps = sorted(int(p.stem[4:]) for p in (res / f"circuits/{model}/{tasks[0]}").glob("step*.json"))
        circuits = {t: [CircuitRecord.read(res / f"circuits/{model}/{t}/step{s}.json") for s in steps] for t in tasks}
        scores = {(t, s): ScoresRecord.read(res / f"scores/{model}/{t}/step{s}.parquet").scores
                  for t in tasks for s in steps}
        graph = ScoresRecord.read(res / f"scores/{model}/{tasks[0]}/step{steps[0]}.parquet").graph

        def examples(task, step, model=model):
            return ExampleScoresRecord.read(example_scores_path(res / f"scores/{model}/{task}/step{step}.parquet"))

        def faithfulness(task, step, masks, model=model, circuits=circuits):
            bridge = load_model(model, step, a.study / "models", device="cpu")
            prompts = Prompts.from_dataset(data[task], bridge.tokenizer.pad_token_id)
            m = patched_metric(bridge, Graph.from_config(bridge.cfg), prompts, torch.as_tensor(masks),
                               an["batch_size"]).numpy()
            return m / next(c for c in circuits[task] if c.step == step).metric_model

        t_b, frame = timed(model_similarity, graph, circuits, scores, examples, sim["resamples"], sim["seed"],
                           faithfulness, sim["faithfulness_resamples"])
        bridge = load_model(model, steps[-1], a.study / "models", device="cpu")
        g = Graph.from_config(bridge.cfg)
        t_s = 0.0
        for t in tasks:
            prompts = Prompts.from_dataset(data[t], bridge.tokenizer.pad_token_id)
            t_one, _ = timed(edge_attribution, bridge, g, prompts, alphas, an["batch_size"])
            t_s += t_one * len(steps)
        last = (bridge, g, Prompts.from_dataset(data[tasks[0]], bridge.tokenizer.pad_token_id), model, tasks[0])
        total_b, total_s = total_b + t_b, total_s + t_s
        print(f"{model:12} {len(steps) * len(tasks):>6} {int(frame['valid'].sum()):>5} {t_b:>11.2f} {t_s:>9.1f} "
              f"{t_b / t_s:>6.3f}")
    print(f"total: bootstrap {total_b:.2f} s, EAP-IG scoring {total_s:.1f} s, ratio {total_b / total_s:.3f} "
          f"(goal <= 0.20)")
    bridge, g, prompts, model, task = last
    plain = min(timed(edge_attribution, bridge, g, prompts, alphas, an["batch_size"])[0] for _ in range(3))
    both = min(timed(edge_attribution, bridge, g, prompts, alphas, an["batch_size"], per_example=True)[0]
               for _ in range(3))
    print(f"per-example scores ({model}, {task}, best of 3): EAP-IG {plain:.2f} s without, {both:.2f} s with, "
          f"ratio {both / plain:.2f}")


if __name__ == "__main__":
    main()
