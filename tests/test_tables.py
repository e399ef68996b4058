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
                         "tokens_seen": step * 100, "metric": v, "learnt": v >= 1.0})
    rows.append({**rows[-1], "split": "seen", "metric": 99.0, "learnt": True})  # other splits are ignored
    e = emergence_table(pd.DataFrame(rows), 0.5).set_index(["model", "task"])
    assert e.loc[("s", "ioi"), "emergence_step"] == 30  # 6.0 >= 0.5 * 8.0, 2.0 < 4.0
    assert e.loc[("l", "ioi"), "emergence_step"] == 10 and e.loc[("l", "ioi"), "emergence_tokens"] == 1000
    assert np.isnan(e.loc[("s", "sva"), "emergence_step"])  # never learnt
    assert e.loc[("s", "ioi"), "spread_ratio"] == 3.0  # 3000 / 1000 tokens across sizes
    with pytest.raises(ValueError, match="no 'learnt' column"):
        emergence_table(pd.DataFrame(rows).drop(columns="learnt"), 0.5)


def _behavior_rows(model, task, curve, n=70):
    """Behaviour-table rows (split 'all') of ``curve``: (step, metric, accuracy) triples."""
    return [{"model": model, "task": task, "metric_name": "logit_diff", "split": "all", "step": step,
             "tokens_seen": step * 100, "metric": m, "accuracy": acc, "n": n} for step, m, acc in curve]


def test_onset_needs_a_learnt_task():
    """Issue 27's case: a task whose last checkpoint has a logit difference of 0.135 at 55% accuracy (70 examples:
    38 right, binomial p = 0.28) is not learnt, so it has no onset, although 0.068 at step 512 is half of 0.135. A
    learnt task's onset is the first checkpoint that is learnt *and* at half the final metric: at step 20 the
    metric 2.5 is half of 4.0 but 52% accuracy is chance, so the onset is step 30."""
    from circuit_stability.learnt import LearntCriterion

    criterion = LearntCriterion({"logit_diff": 1.0, "prob_diff": 0.2}, 0.01)
    frame = pd.DataFrame(_behavior_rows("l", "ioi", [(0, 0.0, 0.5), (512, 0.068, 0.5), (2000, 0.135, 0.55)])
                         + _behavior_rows("l", "gp", [(0, 0.0, 0.5), (10, 0.8, 0.9), (20, 2.5, 0.52),
                                                      (30, 2.2, 0.8), (40, 4.0, 0.95)]))
    frame["learnt"] = criterion.learnt(frame)
    e = emergence_table(frame, 0.5).set_index(["model", "task"])
    assert not e.loc[("l", "ioi"), "learnt"] and np.isnan(e.loc[("l", "ioi"), "emergence_step"])
    assert e.loc[("l", "gp"), "learnt"] and e.loc[("l", "gp"), "emergence_step"] == 30


def test_a_last_checkpoint_that_is_not_learnt_gives_no_onset():
    """A task learnt mid-training and lost by the last checkpoint (final 0.9 < the floor of 1.0, though 80% accurate)
    has no onset, whatever its earlier metric."""
    from circuit_stability.learnt import LearntCriterion

    frame = pd.DataFrame(_behavior_rows("l", "ioi", [(0, 0.0, 0.5), (10, 5.0, 0.95), (20, 0.9, 0.8)]))
    frame["learnt"] = LearntCriterion({"logit_diff": 1.0, "prob_diff": 0.2}, 0.01).learnt(frame)
    assert frame["learnt"].tolist() == [False, True, False]
    e = emergence_table(frame, 0.5)
    assert not e["learnt"].iloc[0] and np.isnan(e["emergence_step"].iloc[0])


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


THRESHOLDS = {"induction": 0.3, "duplicate_token": 0.3, "previous_token": 0.3, "successor": 0.5, "copy": 10.0,
              "negative_copy": 10.0, "name_mover": 1.0, "s_inhibition": 1.0}


def _components(values: dict[tuple[int, str], dict[str, float]]) -> pd.DataFrame:
    """Long components rows from {(step, head): {score: value}} (one model 'm', 64 tokens per step)."""
    return pd.DataFrame([{"model": "m", "step": step, "tokens_seen": step * 64, "head": head,
                          "layer": int(head[1]), "head_index": int(head[4]), "score": score, "value": v}
                         for (step, head), scores in values.items() for score, v in scores.items()])


def test_role_flags_by_hand():
    """Three heads at one step. Induction 0.9, 0.35, 0.05 (mean 0.433): a0.h0 holds it; a0.h1 passes the 0.3 floor
    but not the mean. Copy 20 with direct effect -0.1 is a name mover, copy 20 with +0.1 is not, copy 5 with -0.1 is
    not. S-inhibition is absent at this step: nobody holds it and it is marked undefined."""
    from circuit_stability.tables import role_flags

    comp = _components({(5, "a0.h0"): {"induction": 0.9, "copy": 20.0, "direct_effect": -0.1},
                        (5, "a0.h1"): {"induction": 0.35, "copy": 20.0, "direct_effect": 0.1},
                        (5, "a0.h2"): {"induction": 0.05, "copy": 5.0, "direct_effect": -0.1}})
    f = role_flags(comp, THRESHOLDS).set_index("head")
    assert f["induction"].tolist() == [True, False, False]
    assert f["name_mover"].tolist() == [True, False, False]
    assert not f["s_inhibition"].any() and not f["s_inhibition_defined"].any()
    assert not f["successor"].any()  # no successor scores: nobody holds the role


def test_roles_table_marks_circuit_membership_of_valid_circuits_only():
    from circuit_stability.tables import role_flags, roles_table

    comp = _components({(s, h): {"induction": 0.5 if h == "a0.h0" else 0.0}
                        for s in (0, 10) for h in ("a0.h0", "a0.h1")})
    circuits = pd.DataFrame([{"model": "m", "task": "ioi", "step": 0, "valid": False, "heads": frozenset({"a0.h0"})},
                             {"model": "m", "task": "ioi", "step": 10, "valid": True, "heads": frozenset({"a0.h1"})}])
    r = roles_table(role_flags(comp, THRESHOLDS), circuits).set_index(["step", "head"])
    assert pd.isna(r.loc[(0, "a0.h0"), "in_circuit"]) and pd.isna(r.loc[(0, "a0.h1"), "in_circuit"])  # not valid
    assert r.loc[(10, "a0.h1"), "in_circuit"] and not r.loc[(10, "a0.h0"), "in_circuit"]
    assert r.loc[(10, "a0.h0"), "induction"] and (r["task"] == "ioi").all() and len(r) == 4


def test_handovers_and_component_lag_by_hand():
    """Name movers over steps 0, 10, 20, 30: a2.h0 at 10; a2.h1 takes over at 20 while a2.h0 leaves (IOI performed at
    10 and 20: a hand-over); at 30 a2.h1 leaves and nobody joins (not a hand-over). IOI's onset is step 10 (metric 3 of
    final 4); before it, at 0, a head swap would not count. The name-mover role appears at 10: "with" the task, lag 0;
    induction never appears."""
    from circuit_stability.tables import component_lag_table, handovers, role_flags

    holders = {0: "a2.h2", 10: "a2.h0", 20: "a2.h1", 30: None}
    comp = _components({(s, h): {"copy": 50.0 if h == holders[s] else 0.0, "direct_effect": -0.2, "induction": 0.0}
                        for s in holders for h in ("a2.h0", "a2.h1", "a2.h2")})
    behavior = pd.DataFrame([{"model": "m", "task": "ioi", "split": "all", "step": s, "tokens_seen": s * 64,
                              "metric_name": "logit_diff", "metric": v, "learnt": v > 1}
                             for s, v in zip(holders, [0.0, 3.0, 4.0, 4.0])])
    emergence = emergence_table(behavior, 0.5)
    hand = handovers(role_flags(comp, THRESHOLDS), behavior, emergence, 0.5)
    assert hand[["role", "step_from", "step_to", "left", "joined"]].values.tolist() == [
        ["name_mover", 10, 20, "a2.h0", "a2.h1"]]
    assert not hand["persistent"].any()  # a2.h0 held the role at one checkpoint only before step 20
    component_emergence = pd.DataFrame([
        {"model": "m", "score": "name_mover", "emergence_step": 10.0, "emergence_tokens": 640.0},
        {"model": "m", "score": "induction", "emergence_step": np.nan, "emergence_tokens": np.nan}])
    lag = component_lag_table(component_emergence, emergence, hand).set_index("role")
    assert lag.loc["name_mover", "relation"] == "with" and lag.loc["name_mover", "lag_steps"] == 0
    assert lag.loc["name_mover", "handovers"] == 1 and lag.loc["name_mover", "handovers_persistent"] == 0
    assert lag.loc["induction", "relation"] == "never" and lag.loc["s_inhibition", "relation"] == "never"
    early = component_emergence.assign(emergence_step=[0.0, 20.0], emergence_tokens=[0.0, 1280.0])
    lag = component_lag_table(early, emergence, hand).set_index("role")
    assert (lag.loc["name_mover", "relation"], lag.loc["name_mover", "lag_steps"]) == ("before", -10)
    assert (lag.loc["induction", "relation"], lag.loc["induction", "lag_tokens"]) == ("after", 640)


def test_persistent_handovers_by_hand():
    """Name movers over steps 0 … 70, IOI performed throughout. a2.h0 holds the role at 0, 10, 20 and hands it to
    a2.h1 at 30, who keeps it at 30, 40: persistent (2 checkpoints each side). At 50 a2.h2 flickers in for one
    checkpoint while a2.h1 flickers out (a raw hand-over from 40 to 50, and back from 50 to 60): neither is
    persistent. At 70, the last checkpoint, a2.h0 takes over: raw, but with one checkpoint after it, not
    persistent. With persistence 1 every raw hand-over is persistent."""
    from circuit_stability.tables import handovers, role_flags

    holders = {0: "a2.h0", 10: "a2.h0", 20: "a2.h0", 30: "a2.h1", 40: "a2.h1", 50: "a2.h2", 60: "a2.h1",
               70: "a2.h0"}
    comp = _components({(s, h): {"copy": 50.0 if h == holders[s] else 0.0, "direct_effect": -0.2}
                        for s in holders for h in ("a2.h0", "a2.h1", "a2.h2")})
    behavior = pd.DataFrame([{"model": "m", "task": "ioi", "split": "all", "step": s, "tokens_seen": s * 64,
                              "metric_name": "logit_diff", "metric": 4.0, "learnt": True} for s in holders])
    emergence = emergence_table(behavior, 0.5)
    flags = role_flags(comp, THRESHOLDS)
    hand = handovers(flags, behavior, emergence, 0.5)
    assert hand[["step_from", "step_to", "left", "joined", "persistent", "left_persistent",
                 "joined_persistent"]].values.tolist() == [
        [20, 30, "a2.h0", "a2.h1", True, "a2.h0", "a2.h1"],
        [40, 50, "a2.h1", "a2.h2", False, "", ""],
        [50, 60, "a2.h2", "a2.h1", False, "", ""],
        [60, 70, "a2.h1", "a2.h0", False, "", ""]]
    assert handovers(flags, behavior, emergence, 0.5, persistence=1)["persistent"].all()
    unperformed = behavior.assign(learnt=behavior["step"] != 10)  # not performed inside the first one's window
    assert not handovers(flags, unperformed, emergence, 0.5)["persistent"].any()
    with pytest.raises(ValueError, match="persistence 0"):
        handovers(flags, behavior, emergence, 0.5, persistence=0)
    # a2.h0 leaves for good at 20, but a2.h1 holds the role at 20 only: raw, not persistent
    holders = {0: "a2.h0", 10: "a2.h0", 20: "a2.h1", 30: None, 40: None}
    comp = _components({(s, h): {"copy": 50.0 if h == holders[s] else 0.0, "direct_effect": -0.2}
                        for s in holders for h in ("a2.h0", "a2.h1")})
    behavior = behavior[behavior["step"] <= 40]
    hand = handovers(role_flags(comp, THRESHOLDS), behavior, emergence_table(behavior, 0.5), 0.5)
    assert hand[["step_from", "step_to", "persistent"]].values.tolist() == [[10, 20, False]]


def test_planted_control_rows_by_hand():
    """Source m: a2.h0 is the name mover at steps 0 … 40, IOI performed throughout. Member p permutes layer 2's
    heads with order [1, 2, 0] from step 20 (new head i is m's head order[i]): m's a2.h0 becomes p's a2.h2, so p
    hands the role from a2.h0 to a2.h2 at step 20: one planted hand-over, predicted and found; behaviour equal.
    Reading the flags by head index instead of by holder predicts none (the control then reports one hand-over
    not predicted), as does a wrong permutation (one missing, one not predicted)."""
    from circuit_stability.tables import control_rows, handovers, relabel_flags, role_flags

    steps, order = (0, 10, 20, 30, 40), [1, 2, 0]
    source = _components({(s, h): {"copy": 50.0 if h == "a2.h0" else 0.0, "direct_effect": -0.2}
                          for s in steps for h in ("a2.h0", "a2.h1", "a2.h2")})
    flags_m = role_flags(source.astype({"layer": "int32", "head_index": "int32"}), THRESHOLDS)  # as the records
    flags = pd.concat([flags_m, relabel_flags(flags_m, "m", "p", 2, order, 20)], ignore_index=True)
    held = flags[flags["name_mover"]].groupby(["model", "step"])["head"].first().to_dict()
    assert held[("p", 10)] == "a2.h0" and held[("p", 20)] == "a2.h2" and held[("m", 20)] == "a2.h0"
    behavior = pd.DataFrame([{"model": m, "task": "ioi", "split": "all", "step": s, "tokens_seen": s * 64,
                              "metric_name": "logit_diff", "metric": 4.0, "learnt": True}
                             for m in ("m", "p") for s in steps])
    emergence = emergence_table(behavior, 0.5)
    hand = handovers(flags, behavior, emergence, 0.5)
    assert hand[["model", "step_to", "left", "joined"]].values.tolist() == [["p", 20, "a2.h0", "a2.h2"]]
    derived = {"p": {"source": "m", "layer": 2, "order": order, "from_step": 20}}
    rows = {r["quantity"].split(":")[0].split(" ")[0]: r
            for r in control_rows(derived, behavior, flags, hand, emergence, 0.5, pd.DataFrame())}
    assert rows["behaviour"]["value"] == 0.0 and rows["behaviour"]["n"] == 5
    h = rows["hand-overs"]
    assert (h["value"], h["low"], h["high"], h["n"]) == (1.0, 0.0, 0.0, 1)
    assert h["note"] == "every hand-over as predicted (1 planted at step 20)"
    by_index = {"p": {**derived["p"], "order": [0, 1, 2]}}  # heads compared by index: no relabelling
    h = {r["quantity"].split(" ")[0]: r
         for r in control_rows(by_index, behavior, flags, hand, emergence, 0.5, pd.DataFrame())}["hand-overs"]
    assert (h["value"], h["low"], h["high"], h["n"]) == (0.0, 0.0, 1.0, 0)
    swapped = {"p": {**derived["p"], "order": [2, 0, 1]}}  # predicts a2.h0 -> a2.h1, finds a2.h0 -> a2.h2
    h = {r["quantity"].split(" ")[0]: r
         for r in control_rows(swapped, behavior, flags, hand, emergence, 0.5, pd.DataFrame())}["hand-overs"]
    assert (h["value"], h["low"], h["high"]) == (0.0, 1.0, 1.0)
    assert h["note"] == ("missing name_mover a2.h0->a2.h1 at 20; not predicted name_mover a2.h0->a2.h2 at 20")

    # the circuits: m keeps {input -> a2.h0<q>, a2.h0 -> logits} at steps 10 and 20; p's is the same at 10 and has
    # a2.h0 renamed a2.h2 at 20, so p's edge Jaccard 20 vs 10 is 0 (predicted 0, m's own 1), flagged beyond the
    # noise floor; the role-pair compositions are equal (Jaccard 1)
    def circuit(model, step, head):
        return [{"model": model, "task": "ioi", "step": step, "src": u, "dst": v}
                for u, v in (("input", f"{head}<q>"), (head, "logits"))]

    edges = pd.DataFrame([*circuit("m", 10, "a2.h0"), *circuit("m", 20, "a2.h0"), *circuit("p", 10, "a2.h0"),
                          *circuit("p", 20, "a2.h2")])
    sim = pd.DataFrame([{"model": m, "task": "ioi", "step": 20, "prev_step": 10, "jaccard_prev": j, "real_change": c}
                        for m, j, c in (("m", 1.0, False), ("p", 0.0, True))])
    cross = pd.DataFrame([{"task": "ioi", "step": s, "model_a": "m", "model_b": "p", "composition_jaccard": 1.0}
                          for s in (10, 20)])
    rows = control_rows(derived, behavior, flags, hand, emergence, 0.5, pd.DataFrame(), edges, sim, cross)
    j = next(r for r in rows if r["quantity"].startswith("edge Jaccard"))
    assert (j["task"], j["value"], j["low"], j["high"], j["note"]) == ("ioi", 0.0, 0.0, 1.0,
                                                                       "beyond the noise floor: yes")
    c = next(r for r in rows if r["quantity"].startswith("role-pair composition"))
    assert (c["value"], c["high"], c["n"]) == (1.0, 1.0, 2)


def test_algorithm_findings_give_both_forms_and_what_never_forms():
    """Fig. 4 rows per path-patching form (the paper's first); where no checkpoint is formed the note counts the
    checkpoints holding each class and the effect share it carries: here a name mover carrying 60% and 80% of
    the logits' effect at both checkpoints, no S-inhibition head, an induction head at one checkpoint."""
    from circuit_stability.tables import findings_table

    rows = []
    for form in ("paper", "direct"):
        for step, b in ((10, 60.0), (20, 80.0)):
            for panel, n, value in (("B", 1, b), ("C", 0, np.nan), ("D", int(step == 20), 30.0 if step == 20 else
                                                                   np.nan)):
                rows.append({"model": "m", "step": step, "panel": panel, "form": form, "denominator": "all",
                             "value": value, "n_class": n, "formed": False,
                             "reason": None if np.isfinite(value) else "no head of the class"})
    algorithm = pd.DataFrame(rows)
    empty = pd.DataFrame(columns=["model", "task", "step", "emergence_tokens", "lag_steps", "relation", "role",
                                  "persistent", "jaccard_prev", "real_change", "boot_main_median"])
    out = findings_table(empty, empty, empty, algorithm, empty, pd.DataFrame(), empty)
    iv = out[out["finding"] == "iv algorithm"]
    assert iv["quantity"].tolist() == [f"Fig. 4 {p} after formation (%, form {f})" for f in ("paper", "direct")
                                       for p in "BCD"]
    assert iv["value"].isna().all() and (iv["n"] == 0).all()
    assert iv["note"].iloc[0].endswith(
        "B: name-mover class at 2 of 2 checkpoints, carrying 70% of the effect on average (min 60%, max 80%); "
        "C: S-inhibition heads at 0 of 2 checkpoints; D: induction or duplicate-token heads at 1 of 2 checkpoints, "
        "carrying 30% of the effect on average (min 30%, max 30%)")
