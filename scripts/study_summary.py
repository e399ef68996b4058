"""Summarise a built study's tables as Markdown: what the README's and docs' default-study tables show.

Reads the tables (``behavior``, ``circuits``, ``emergence``, ``findings``) of the study in the current folder (or
``--root``): ``results/tables/``, or ``results/studies/<study>/tables/`` with ``--study`` (a study other than the
default, e.g. ``--study long``), and prints, per model and task: the final checkpoint's metric overall and on the seen /
held-out splits with its accuracy and whether it is learnt, the minimal circuit there (edges, f_paper, f_norm), the
onset (first checkpoint learnt at half the final metric; "not learnt" when the last checkpoint is not), the onset
as a fraction of training and the checkpoints after it; then how many circuits are valid, and the findings table.

Usage: ``python scripts/study_summary.py [--root PATH] [--study NAME]`` after ``snakemake --cores all``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

TASKS = ("ioi", "gp", "greater_than", "sva")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="the study's folder (default: here)")
    ap.add_argument("--study", help="a study other than the default: read results/studies/<study>/tables")
    a = ap.parse_args()
    tables = a.root / "results" / ("tables" if a.study is None else f"studies/{a.study}/tables")
    b = pd.read_parquet(tables / "behavior.parquet")
    c = pd.read_parquet(tables / "circuits.parquet")
    e = pd.read_parquet(tables / "emergence.parquet").set_index(["model", "task"])
    models = sorted(set(b["model"]))
    last = int(b["step"].max())
    steps = sorted(set(b["step"]))
    print(f"final checkpoint: step {last:,}; {len(steps)} checkpoints\n")
    print("| model | task | final metric (seen / held-out) | accuracy | learnt | held-out / seen | circuit: edges, "
          "f_paper (f_norm) | onset | onset / final step | checkpoints after onset |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        for task in [t for t in TASKS if t in set(b["task"])]:
            f = b[(b["model"] == model) & (b["task"] == task) & (b["step"] == last)].set_index("split")
            if f.empty:
                continue
            ratio = f.loc["held_out", "metric"] / f.loc["seen", "metric"] if f.loc["seen", "metric"] else float("nan")
            r = c[(c["model"] == model) & (c["task"] == task) & (c["step"] == last)]
            circ = "—"
            if len(r):
                r = r.iloc[0]
                circ = (f"{int(r['n_edges'])}, {r['f_paper']:.2f} ({r['f_norm']:.2f})" if r["valid"] else "not valid")
                if r["valid"] and not r["reached"]:
                    circ += ", not reached"
            onset = e.loc[(model, task), "emergence_step"]
            if pd.isna(onset):
                onset_s, frac, after = "not learnt", "—", "—"
            else:
                onset_s, frac = f"{int(onset):,}", f"{onset / last:.2f}"
                after = str(sum(s > onset for s in steps))
            print(f"| {model} | {task} | {f.loc['all', 'metric']:.3g} ({f.loc['seen', 'metric']:.3g} / "
                  f"{f.loc['held_out', 'metric']:.3g}) | {f.loc['all', 'accuracy']:.2f} | "
                  f"{'yes' if f.loc['all', 'learnt'] else 'no'} | {ratio:.2f} | {circ} | {onset_s} | {frac} | {after} |")
    valid = int(c["valid"].sum())
    print(f"\ncircuits: {len(c)} checkpoint circuits, {valid} valid, {len(c) - valid} not valid")
    reasons = c.loc[~c["valid"].astype(bool), "invalid_reason"].str.extract(r"^(the task is never learnt|the task is "
                                                                             r"not learnt|the task has not emerged|"
                                                                             r"m\(M\) - m\(empty\)|m\(M\) = )")[0]
    print(reasons.value_counts().rename_axis(None).to_string())
    findings = tables / "findings.parquet"
    if findings.exists():
        f = pd.read_parquet(findings)
        print("\n" + f[["finding", "task", "quantity", "value", "low", "high", "n"]].to_string(index=False))


if __name__ == "__main__":
    main()
