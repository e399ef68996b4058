"""``circuit-stability check``: list every missing, corrupt or stale artefact of a study, changing nothing.

- **missing**: an output of the study's DAG that is not on disk (a deleted checkpoint, scores file, figure …);
- **corrupt**: a file on disk that does not read as its contract says
  (:func:`circuit_stability.records.check_artefact`, full checks: every score finite);
- **stale**: a file Snakemake would rebuild (its inputs, code, params or config changed), with Snakemake's
  reason.

The DAG and the staleness come from ``snakemake --summary`` (which changes no artefact); the contracts from
:mod:`circuit_stability.records`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from circuit_stability.records import RecordError, check_artefact


@dataclass(frozen=True)
class Problem:
    """One artefact that needs attention: ``kind`` is ``missing``, ``corrupt`` or ``stale``."""

    kind: str
    path: str
    detail: str


def summary(snakemake_args: list[str], project: str | Path = ".") -> list[dict[str, str]]:
    """The rows of ``snakemake --summary`` (``output_file``, ``date``, ``rule``, ``status``, ``plan``, …).

    Raises:
        RuntimeError: with Snakemake's message, if it cannot build the study's DAG (a bad config, say).
    """
    env = {**os.environ, "CIRCUIT_STABILITY_SKIP_INPUT_CHECKS": "1"}  # list corrupt files, do not stop at them
    out = subprocess.run(["snakemake", "--summary", *snakemake_args], cwd=project, capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"snakemake --summary failed:\n{out.stderr[-3000:]}")
    lines = out.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("output_file\t")), None)
    if start is None:
        return []
    header = lines[start].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[start + 1:] if "\t" in line]


def check_study(snakemake_args: list[str] = (), project: str | Path = ".") -> list[Problem]:
    """Every missing, corrupt or stale artefact of the study that ``snakemake_args`` (e.g. ``--configfile``)
    select, in DAG order; an empty list when the study is complete and up to date."""
    problems = []
    for row in summary(list(snakemake_args), project):
        path, status = row["output_file"], row.get("status", "")
        full = Path(project) / path
        if status == "missing" or not full.exists():
            problems.append(Problem("missing", path, f"rule {row.get('rule', '?')}"))
            continue
        if full.is_file():
            try:
                check_artefact(full)
            except RecordError as e:
                problems.append(Problem("corrupt", path, f"{e.kind} file {e.problem}"))
                continue
        if status != "ok":
            problems.append(Problem("stale", path, f"{status} (plan: {row.get('plan', '?')})"))
    return problems


def report(problems: list[Problem]) -> str:
    """A table of the problems and what to do about them."""
    if not problems:
        return "every artefact of the study is present, readable and up to date"
    width = max(len(p.path) for p in problems)
    lines = [f"{p.kind:8} {p.path:{width}}  {p.detail}" for p in problems]
    counts = {k: sum(p.kind == k for p in problems) for k in ("missing", "corrupt", "stale")}
    lines.append(f"{counts['missing']} missing, {counts['corrupt']} corrupt, {counts['stale']} stale. Delete the "
                 "corrupt files; `snakemake --cores all` then rebuilds what is missing, corrupt or stale.")
    return "\n".join(lines)
