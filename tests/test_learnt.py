"""When a task counts as learnt (issue 27), by hand: the binomial test against chance and the metric floors."""

import pytest
from scipy.stats import binom

from circuit_stability.circuits import circuit_validity
from circuit_stability.learnt import LearntCriterion

CRITERION = LearntCriterion({"logit_diff": 1.0, "prob_diff": 0.2}, 0.01)


def test_binomial_p_by_hand():
    """P(X >= k) for X ~ Binomial(n, 1/2): 10 of 10 right is 2^-10; 38 of 70 (54.3%) is 0.28."""
    assert CRITERION.binomial_p(1.0, 10) == pytest.approx(2.0 ** -10)
    assert CRITERION.binomial_p(38 / 70, 70) == pytest.approx(binom.sf(37, 70, 0.5))
    assert 0.27 < CRITERION.binomial_p(0.55, 70) < 0.29  # 0.55 * 70 = 38.5 rounds to 38


def test_issue_27_unlearnt_ioi_is_not_learnt_and_its_circuit_not_valid():
    """mini-s's IOI at step 2,000 on the Intel machine: logit difference 0.135 with 55% accuracy on 70 examples was
    marked valid by the old rule (it compared the checkpoint with itself). Now: not learnt (chance accuracy and below
    the floor), so the circuit is invalid whether this is the last checkpoint or not."""
    reason = CRITERION.reason(0.135, 0.55, 70, "logit_diff")
    assert reason is not None and "p = 0.28" in reason and "below the logit_diff floor 1" in reason
    assert circuit_validity(0.135, -0.1, 0.135, 0.5, 0.5)[0]  # the old rule alone: valid
    valid, why = circuit_validity(0.135, -0.1, 0.135, 0.5, 0.5, reason, reason)
    assert not valid and "never learnt" in why


def test_learnt_task_is_learnt_and_valid():
    """mini-l's IOI in the README's run: 3.3 with 90% accuracy (63 of 70, p ~ 1e-12) is learnt; its circuit valid."""
    assert CRITERION.reason(3.3, 0.9, 70, "logit_diff") is None
    assert circuit_validity(3.3, -1.0, 3.3, 0.5, 0.5, None, None) == (True, None)


def test_each_condition_alone_fails():
    """Significant accuracy with a metric under the floor, and a large metric at chance accuracy, are not learnt;
    the probability-difference floor is 0.2."""
    assert "floor" in CRITERION.reason(0.5, 0.95, 200, "logit_diff") and "chance" not in CRITERION.reason(
        0.5, 0.95, 200, "logit_diff")
    assert "chance" in CRITERION.reason(5.0, 0.5, 70, "logit_diff")
    assert CRITERION.reason(0.21, 0.7, 200, "prob_diff") is None  # 140 of 200: p ~ 1e-8
    assert "prob_diff floor 0.2" in CRITERION.reason(0.19, 0.9, 200, "prob_diff")


@pytest.mark.parametrize("floors,p,match", [({"logit_diff": 1.0}, 0.01, "missing"),
                                            ({"logit_diff": 1.0, "prob_diff": 0.2, "acc": 1}, 0.01, "unknown"),
                                            ({"logit_diff": -1.0, "prob_diff": 0.2}, 0.01, ">= 0"),
                                            ({"logit_diff": 1.0, "prob_diff": 0.2}, 1.0, r"\(0, 1\)")])
def test_bad_criterion_is_refused(floors, p, match):
    with pytest.raises(ValueError, match=match):
        LearntCriterion(floors, p)


def test_schema_default_is_the_documented_one():
    from circuit_stability.config import schema_default

    assert LearntCriterion.from_config(schema_default("analysis.learnt")) == CRITERION
