"""Try a corpus mixture on one suite shape: build the corpus, train, and measure every checkpoint (README, "How the
mixture was chosen").

Trains one model alone (no workflow, no EAP-IG), then prints per checkpoint each task's metric (overall,
held-out, seen) and the best induction and previous-token scores on the standard test
(:mod:`circuit_stability.components`), and per task its final metric, onset (first checkpoint at half the final
metric) and held-out / seen ratio. Everything goes under ``--out`` (default ``trials/NAME``, ignored by git).

Usage: ``python scripts/suite_trial.py H --weights '{"ioi": 8, "repeat": 8, "narrative": 1}'`` (weights given are
merged into the schema's default mixture; ``--steps``, ``--every``, ``--lr``, ``--batch``, ``--shape L,D,H``,
``--rotary``). About 10 minutes for mini-l's shape and 2,000 steps on one core.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from circuit_stability.attribution import Prompts
from circuit_stability.behavior import example_metrics, summarize_behavior
from circuit_stability.components import content_token_ids, head_scores, repeated_random_tokens
from circuit_stability.config import schema_default
from circuit_stability.models import load_model
from circuit_stability.suite.build import build_corpus, build_model
from circuit_stability.tasks import make_dataset

TASKS = {"ioi": 70, "gp": 70, "greater_than": 200, "sva": 200}


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
    ap.add_argument("--shape", default="4,128,8", help="n_layers,d_model,n_heads (default mini-l's)")
    ap.add_argument("--rotary", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="corpus and weight seed")
    a = ap.parse_args()
    out = a.out or Path("trials") / a.name
    weights = {**schema_default("suite.corpus.weights"), **json.loads(a.weights)}
    torch.set_num_threads(1)
    build_corpus(out / "corpus", a.seed, weights, a.batch, 64, a.steps)
    n_layers, d_model, n_heads = map(int, a.shape.split(","))
    training = dict(batch_size=a.batch, context=64, max_steps=a.steps, lr=a.lr, warmup_steps=a.warmup,
                    checkpoint_every=a.every, **{k: schema_default(f"suite.training.{k}")
                                                 for k in ("min_lr_ratio", "weight_decay", "log_until")})
    shape = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=None, rotary_pct=a.rotary)
    steps = build_model(out / "corpus", out / "models" / "m", shape, training, seed=a.seed, threads=1)["checkpoints"]
    rows, datasets = [], None
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
            row[f"{task}_held_out"] = summary["splits"]["held_out"]["metric"]
            row[f"{task}_seen"] = summary["splits"]["seen"]["metric"]
        scores = head_scores(bridge, test)
        row["induction"] = float(scores["induction"].max())
        row["previous_token"] = float(scores["previous_token"].max())
        rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "trial.csv", index=False)
    pd.set_option("display.width", 200)
    print(df.round(3).to_string(index=False))
    final = df.iloc[-1]
    for task in TASKS:
        onset = df.loc[df[task] >= 0.5 * final[task], "step"].min() if final[task] > 0 else "none (final <= 0)"
        print(f"{task}: final {final[task]:.3f}, onset step {onset}, held-out / seen "
              f"{final[f'{task}_held_out'] / final[f'{task}_seen']:.2f}")
    for name in ("induction", "previous_token"):
        first = df.loc[df[name] >= 0.3, "step"]
        print(f"{name}: {final[name]:.3f} at the last step; first >= 0.3 at step "
              f"{int(first.min()) if len(first) else None}")


if __name__ == "__main__":
    main()
