"""The emergence table on a hand-made behaviour table."""

import numpy as np
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
