"""The rehearsal at Pythia's real sizes (benchmarks/rehearsal.py): random pythia-70m and pythia-160m, two
checkpoints each, every stage but the download, on the CPU."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_rehearsal_at_pythia_sizes(_rehearsal):
    """4 IOI examples instead of the paper's 70 (the README's figures are from a run with more): the graphs, and
    so every buffer and loop over edges, are the real ones. The run starts in the background (conftest's
    `_rehearsal`) once the quick study's local build has finished."""
    run, out = _rehearsal
    code = run.wait(timeout=2400)
    assert code == 0, run.log.read_text()[-4000:]
    results = {r["model"]: r for r in json.loads(out.read_text())}
    assert {m: r["n_edges"] for m, r in results.items()} == {"pythia-70m": 3_580, "pythia-160m": 32_347}
    for r in results.values():
        assert r["scored_edges"] == r["n_edges"]  # the scores stage scored every edge of the real graph
        assert set(r["stages"]) == {"behavior", "scores", "circuit", "heads", "stability"}
        assert all(v == True for v in r["circuit_valid"])  # noqa: E712  the searches ran (not stopped as invalid)
        assert all(n > 2 for n in r["search_sizes"])  # grid and refinement sizes evaluated
        # path patching: every head into the logits, both forms, at both checkpoints
        layers, heads = {"pythia-70m": (6, 8), "pythia-160m": (12, 12)}[r["model"]]
        assert r["path_patching_rows"] == [2 * layers * heads] * 2
