"""Try a corpus mixture on one suite shape: build the corpus, train, and measure every checkpoint (README, "How the
mixture was chosen").

Trains one model alone (no workflow, no EAP-IG), then prints per checkpoint each task's metric (overall,
held-out, seen) and the best induction and previous-token scores on the standard test
(:mod:`circuit_stability.components`), and per task its final metric, onset (the workflow's emergence table: the
first learnt checkpoint at ``analysis.emergence_fraction`` of the final metric) and held-out / seen ratio.
Everything goes under ``--out`` (default ``trials/NAME``, ignored by git).

Usage: ``python scripts/suite_trial.py H --weights '{"ioi": 8, "repeat": 8, "narrative": 1}'`` (weights given are
merged into the schema's default mixture; ``--steps``, ``--every``, ``--lr``, ``--batch``, ``--shape L,D,H``,
``--rotary``, ``--context``; ``--min-lr`` and ``--decay-steps`` also with ``--config``), or
``python scripts/suite_trial.py S3 --config config/config.yaml --model mini-l-seed3``: one member of a study
config (a listed one, or one with ``-seed{k}`` added to a listed name), trained exactly as the workflow's corpus
and train rules train it, then measured. The summary applies the study's learnt criterion (``analysis.learnt``)
and onset rule. About 10 minutes for mini-l's shape and 2,000 steps on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import torch

from circuit_stability.attribution import Prompts
from circuit_stability.behavior import example_metrics, summarize_behavior
from circuit_stability.checkpoints import tokens_seen
from circuit_stability.components import content_token_ids, head_scores, repeated_random_tokens
from circuit_stability.config import load_config, schema_default, validate_config
from circuit_stability.learnt import LearntCriterion
from circuit_stability.models import load_model
from circuit_stability.suite.build import build_corpus, build_model
from circuit_stability.suite.seeds import NAME, member_seeds
from circuit_stability.tables import emergence_table
from circuit_stability.tasks import make_dataset

TASKS = {"ioi": 70, "gp": 70, "greater_than": 200, "sva": 200}


def seeds_from_name_base(name: str | None) -> str | None:
    """``mini-l`` for ``mini-l-seed3`` (the member whose shape a seeded name takes), else None."""
    m = NAME.match(name or "")
    return m["base"] if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default trials/NAME)")
    ap.add_argument("--weights", default="{}", help="JSON mixture weights merged into the default mixture")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100, help="checkpoint spacing after the log-spaced steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-lr", type=float, default=None, help="cosine decay to this x peak (default: the schema's)")
    ap.add_argument("--decay-steps", type=int, default=None,
                    help="warm-up-stable-decay: hold the peak, then the cosine over the last N steps (default: the "
                         "config's, or the cosine over every step)")
    ap.add_argument("--shape", default="4,128,8", help="n_layers,d_model,n_heads (default mini-l's)")
    ap.add_argument("--rotary", type=float, default=1.0)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="corpus and weight seed")
    ap.add_argument("--config", type=Path, default=None,
                    help="take the corpus, training settings and shape from this study config instead (with --model)")
    ap.add_argument("--model", default=None,
                    help="with --config: a suite member, or a member's name with -seed{k} (its shape, seeds k)")
    a = ap.parse_args()
    out = a.out or Path("trials") / a.name
    torch.set_num_threads(1)
    analysis = {"learnt": schema_default("analysis.learnt"),
                "emergence_fraction": schema_default("analysis.emergence_fraction")}
    if a.config:  # exactly what the workflow's corpus and train rules do for this member
        config = validate_config(load_config(a.config))
        suite = config["suite"]
        base = a.model if a.model in suite["models"] else seeds_from_name_base(a.model)
        if base not in suite["models"]:
            raise SystemExit(f"--model {a.model}: not a member of {a.config} ({sorted(suite['models'])}) nor one "
                             "with -seed{k} added")
        entry = suite["models"][base]
        seeds = member_seeds(a.model, entry, config["seed"], suite["corpus"]["seed"])
        weights, training = suite["corpus"]["weights"], dict(suite["training"])
        shape = {k: v for k, v in entry.items() if not k.endswith("_seed")}
        data_seed, weight_seed = seeds.data, seeds.weight
        analysis = config["analysis"]
    else:
        weights = {**schema_default("suite.corpus.weights"), **json.loads(a.weights)}
        n_layers, d_model, n_heads = map(int, a.shape.split(","))
        training = dict(batch_size=a.batch, context=a.context, max_steps=a.steps, lr=a.lr, warmup_steps=a.warmup,
                        checkpoint_every=a.every, **{k: schema_default(f"suite.training.{k}")
                                                     for k in ("min_lr_ratio", "weight_decay", "log_until")})
        shape = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=None, rotary_pct=a.rotary)
        data_seed = weight_seed = a.seed
    if a.min_lr is not None:
        training["min_lr_ratio"] = a.min_lr
    if a.decay_steps is not None:
        training["decay_steps"] = a.decay_steps
    build_corpus(out / "corpus", data_seed, weights, training["batch_size"], training["context"],
                 training["max_steps"])
    steps = build_model(out / "corpus", out / "models" / "m", shape, training, seed=weight_seed,
                        threads=1)["checkpoints"]
    learnt = LearntCriterion.from_config(analysis["learnt"])
    rows, datasets, long = [], None, []
    for step in steps:
        bridge = load_model("m", step, out / "models", device="cpu")
        tok = bridge.tokenizer
        if datasets is None:
            datasets = {t: make_dataset(t, tok, n, 42) for t, n in TASKS.items()}
            test = repeated_random_tokens(content_token_ids(tok), 20, 16, 0)
        row = {"step": step}
        for task, ds in datasets.items():
            clean, corrupted = example_metrics(bridge, Prompts.from_dataset(ds, tok.pad_token_id, "cpu"), 100)
            summary = summarize_behavior(clean, corrupted, ds.frame["split"].to_numpy())
            row[task] = summary["metric"]
            row[f"{task}_accuracy"] = summary["accuracy"]
            row[f"{task}_learnt"] = learnt.reason(summary["metric"], summary["accuracy"], len(ds.frame),
                                                  ds.metric) is None
            long.append({"model": "m", "task": task, "step": step, "split": "all",
                         "tokens_seen": tokens_seen(step, training["batch_size"], training["context"]),
                         "metric_name": ds.metric, "metric": summary["metric"], "learnt": row[f"{task}_learnt"]})
            row[f"{task}_held_out"] = summary["splits"]["held_out"]["metric"]
            row[f"{task}_seen"] = summary["splits"]["seen"]["metric"]
        scores = head_scores(bridge, test)
        row["induction"] = float(scores["induction"].max())
        row["previous_token"] = float(scores["previous_token"].max())
        rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "trial.csv", index=False)
    pd.set_option("display.width", 200)
    print(df[[c for c in df.columns if not c.endswith(("_learnt", "_held_out", "_seen"))]].round(3).to_string(index=False))
    final = df.iloc[-1]
    onsets = emergence_table(pd.DataFrame(long), analysis["emergence_fraction"]).set_index("task")["emergence_step"]
    for task in TASKS:  # the workflow's emergence table: learnt, and at the fraction of the final metric
        onset = "none (not learnt at the last step)" if pd.isna(onsets[task]) else int(onsets[task])
        print(f"{task}: final {final[task]:.3f} (accuracy {final[f'{task}_accuracy']:.2f}), onset step {onset}, "
              f"held-out / seen {final[f'{task}_held_out'] / final[f'{task}_seen']:.2f}")
    for name in ("induction", "previous_token"):
        first = df.loc[df[name] >= 0.3, "step"]
        print(f"{name}: {final[name]:.3f} at the last step; first >= 0.3 at step "
              f"{int(first.min()) if len(first) else None}")
    weights = out / "models" / "m" / f"step{steps[-1]}" / "model.safetensors"
    print(f"last checkpoint: SHA-256 {hashlib.sha256(weights.read_bytes()).hexdigest()[:16]} (another kernel path "
          f"that rounds differently gives other weights); ATEN_CPU_CAPABILITY="
          f"{os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}, torch kernels {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
