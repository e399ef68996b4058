"""Task behaviour at a checkpoint: the task metric and accuracy on clean and corrupted prompts, per split.

Metric per example: logit difference or probability difference (design §4; :func:`tasks.base.example_metric`);
the task metric is its mean over examples (Tigges et al. 2024 §2.4), and accuracy is the fraction of examples
whose metric is > 0 (the correct answer beats the incorrect ones; reference.md §2.5). Whether a task is *learnt*
at a checkpoint (accuracy significantly above chance and the metric above a floor) is
:class:`circuit_stability.learnt.LearntCriterion`.
"""

from __future__ import annotations

import numpy as np
import torch

from circuit_stability.attribution import Prompts


def example_metrics(bridge, prompts: Prompts, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example task metric of the unpatched model on the clean and on the corrupted prompts.

    Args:
        bridge: a model from :func:`circuit_stability.models.load_model`.
        prompts: ``n`` clean/corrupted pairs.
        batch_size: examples per forward pass.

    Returns:
        ``(clean, corrupted)``: ``[n]`` float32 arrays in metric units (logits or probability).
    """
    clean, corrupted = [], []
    with torch.no_grad():
        for batch in prompts.chunks(batch_size):
            clean.append(batch.metric_values(bridge(batch.clean)))
            corrupted.append(batch.metric_values(bridge(batch.corrupted)))
    return torch.cat(clean).cpu().numpy(), torch.cat(corrupted).cpu().numpy()


def summarize_behavior(clean: np.ndarray, corrupted: np.ndarray, split: np.ndarray) -> dict:
    """Task metric and accuracy overall and per split.

    Args:
        clean, corrupted: ``[n]`` per-example metric on clean and corrupted prompts.
        split: ``[n]`` split name of each example (``seen`` / ``held_out``).

    Returns:
        ``{"metric", "accuracy", "metric_corrupted", "n_examples", "splits": {name: {"metric", "accuracy",
        "n"}}}``: metric = mean of ``clean``; accuracy = fraction of ``clean > 0``; splits sorted by name.

    Raises:
        ValueError: if the three arrays differ in length or are empty.
    """
    clean, corrupted, split = np.asarray(clean), np.asarray(corrupted), np.asarray(split)
    if not len(clean) or not (len(clean) == len(corrupted) == len(split)):
        raise ValueError(f"clean, corrupted and split must be non-empty and of one length; got "
                         f"{len(clean)}, {len(corrupted)}, {len(split)}")
    splits = {name: {"metric": float(clean[split == name].mean()), "accuracy": float((clean[split == name] > 0).mean()),
                     "n": int((split == name).sum())} for name in sorted(set(split.tolist()))}
    return {"metric": float(clean.mean()), "accuracy": float((clean > 0).mean()),
            "metric_corrupted": float(corrupted.mean()), "n_examples": len(clean), "splits": splits}
