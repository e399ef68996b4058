"""The emergence table on a hand-made behaviour table."""

import numpy as np
import pytest
import pandas as pd

from circuit_stability.tables import emergence_table


def test_emergence_is_first_step_at_half_the_final_metric():
    rows = []
    curves = {("s", "ioi"): [0.0, 0.1, 2.0, 6.0, 8.0], ("l", "ioi"): [0.0, 5.0, 9.0, 10.0, 10.0],
              ("s", "sva"): [0.0, -0.1, -0.2, -0.1, -0.3]}
    for (model, task), values in curves.items():
        for step, v in zip([0, 10, 20, 30, 40], values):
            rows.append({"model": model, "task": task, "metric_name": "logit_diff", "split": "all", "step": step,
                         "tokens_seen": step * 100, "metric": v})
    rows.append({**rows[-1], "split": "seen", "metric": 99.0})  # other splits are ignored
    e = emergence_table(pd.DataFrame(rows), 0.5).set_index(["model", "task"])
    assert e.loc[("s", "ioi"), "emergence_step"] == 30  # 6.0 >= 0.5 * 8.0, 2.0 < 4.0
    assert e.loc[("l", "ioi"), "emergence_step"] == 10 and e.loc[("l", "ioi"), "emergence_tokens"] == 1000
    assert np.isnan(e.loc[("s", "sva"), "emergence_step"])  # never learnt
    assert e.loc[("s", "ioi"), "spread_ratio"] == 3.0  # 3000 / 1000 tokens across sizes


def test_component_emergence_is_the_first_step_some_head_reaches_its_threshold():
    """Two heads of one model at steps 0, 10, 20. Induction appears at step 20, where the best head a1.h1 (0.35; a1.h0
    has 0.31) passes 0.3, not at step 10 where the best head (0.29) falls short; copy reaches exactly 10 % at step 20,
    which counts; previous-token never reaches 0.3."""
    from circuit_stability.tables import component_emergence_table

    rows = []
    scores = {"induction": [(0.03, 0.05), (0.10, 0.29), (0.31, 0.35)], "copy": [(9.0, 0.0), (9.0, 0.0), (10.0, 0.0)],
              "previous_token": [(0.1, 0.1)] * 3}
    for score, values in scores.items():
        for step, pair in zip([0, 10, 20], values):
            rows += [{"model": "m", "step": step, "tokens_seen": step * 64, "head": head, "score": score, "value": v}
                     for head, v in zip(("a1.h0", "a1.h1"), pair)]
    thresholds = {"induction": 0.3, "copy": 10.0, "previous_token": 0.3}
    e = component_emergence_table(pd.DataFrame(rows), thresholds).set_index("score")
    assert e.loc["induction", "emergence_step"] == 20 and e.loc["induction", "emergence_tokens"] == 1280
    assert e.loc["induction", "emergence_head"] == "a1.h1" and e.loc["induction", "final_best"] == 0.35
    assert e.loc["copy", "emergence_step"] == 20 and e.loc["copy", "final_head"] == "a1.h0"
    assert np.isnan(e.loc["previous_token", "emergence_step"]) and pd.isna(e.loc["previous_token", "emergence_head"])
    with pytest.raises(ValueError, match=r"no threshold for component score\(s\) \['copy'\]"):
        component_emergence_table(pd.DataFrame(rows), {"induction": 0.3, "previous_token": 0.3})
