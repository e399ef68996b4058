"""When a task counts as learnt at a checkpoint (issue 27): accuracy significantly above chance and the task metric
above a floor of its metric. Validity of circuits (:func:`circuits.circuit_validity`), the emergence table's onsets
and the hand-overs (:mod:`circuit_stability.tables`) all ask it. Imports no torch (the tables job reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANCE_ACCURACY = 0.5
"""Accuracy of a model that knows nothing of the task: accuracy counts examples whose metric (a difference between
the right and the wrong answers) is > 0, and without task knowledge either sign is as likely."""


@dataclass(frozen=True)
class LearntCriterion:
    """When a task counts as learnt at a checkpoint (config ``analysis.learnt``; the schema holds the defaults and
    README "Learnt tasks and valid circuits" their justification).

    A task is learnt at a checkpoint when both

    1. its accuracy is above chance (:data:`CHANCE_ACCURACY`) with significance over the examples: the one-sided
       binomial test of ``k = round(accuracy · n)`` correct examples of ``n`` against ½ has p < ``p_value``;
    2. its task metric reaches the floor of its metric, ``floors[metric_name]`` (units of the metric: logits for
       ``logit_diff``, probability for ``prob_diff``).

    The test alone would call a metric of 0.01 learnt on enough examples; the floor alone would call a few
    examples with huge differences learnt. Both are needed because the rules that follow (validity, onset,
    hand-overs) divide by or compare with the metric.

    Attributes:
        floors: metric name → minimum task metric (every name of :data:`tasks.base.METRICS`).
        p_value: significance level of the binomial test, in (0, 1).

    Raises:
        ValueError: on construction, naming a missing or unknown metric, a negative floor, or a p-value outside
            (0, 1).
    """

    floors: dict
    p_value: float

    def __post_init__(self) -> None:
        from circuit_stability.tasks.base import METRICS

        unknown = sorted(set(self.floors) - set(METRICS))
        missing = sorted(set(METRICS) - set(self.floors))
        if unknown or missing:
            raise ValueError(f"learnt floors must name each metric of {list(METRICS)} once; unknown {unknown}, "
                             f"missing {missing}")
        bad = {k: v for k, v in self.floors.items() if not (isinstance(v, (int, float)) and v >= 0)}
        if bad:
            raise ValueError(f"learnt floors must be numbers >= 0; got {bad}")
        if not 0 < self.p_value < 1:
            raise ValueError(f"learnt p_value must be in (0, 1); got {self.p_value}")

    @classmethod
    def from_config(cls, learnt: dict) -> "LearntCriterion":
        """From the config's ``analysis.learnt`` mapping ``{"floors": {...}, "p_value": ...}``."""
        return cls(dict(learnt["floors"]), float(learnt["p_value"]))

    @staticmethod
    def binomial_p(accuracy: float, n: int) -> float:
        """One-sided binomial p-value of ``round(accuracy · n)`` of ``n`` examples correct under chance ½:
        P(X ≥ k), X ~ Binomial(n, ½) (scipy.stats.binomtest, alternative "greater")."""
        from scipy.stats import binomtest

        return float(binomtest(int(round(accuracy * n)), int(n), CHANCE_ACCURACY, alternative="greater").pvalue)

    def reason(self, metric: float, accuracy: float, n: int, metric_name: str) -> str | None:
        """Why the task is not learnt at a checkpoint, or None when it is.

        Args:
            metric: the task metric (mean over the examples; units of ``metric_name``).
            accuracy: fraction of examples with metric > 0, in [0, 1].
            n: number of examples (≥ 1).
            metric_name: ``logit_diff`` or ``prob_diff``.

        Raises:
            ValueError: for an unknown metric name or ``n`` < 1.
        """
        if metric_name not in self.floors:
            raise ValueError(f"unknown metric {metric_name!r}; valid: {sorted(self.floors)}")
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        if not (np.isfinite(metric) and np.isfinite(accuracy)):
            return f"the metric ({metric}) or the accuracy ({accuracy}) is not finite"
        p = self.binomial_p(accuracy, n)
        floor = self.floors[metric_name]
        why = []
        if p >= self.p_value:
            why.append(f"accuracy {accuracy:.1%} of {n} examples is not above chance (one-sided binomial p = "
                       f"{p:.2g} >= {self.p_value:g})")
        if metric < floor:
            why.append(f"the metric {metric:.4g} is below the {metric_name} floor {floor:g}")
        return "not learnt: " + " and ".join(why) if why else None

    def learnt(self, frame) -> np.ndarray:
        """``[rows]`` bool: whether each row of a behaviour table (columns ``metric``, ``accuracy``, ``n``,
        ``metric_name``; :func:`circuit_stability.tables.behavior_table`) is learnt."""
        return np.array([self.reason(m, a, n, name) is None for m, a, n, name in
                         zip(frame["metric"], frame["accuracy"], frame["n"], frame["metric_name"])], dtype=bool)


__all__ = ["CHANCE_ACCURACY", "LearntCriterion"]
