"""Task registry: a task is a dataset generator plus its metric, selectable by name in the config.

Adding a task is one module with a generator ``f(tokenizer, n_examples, seed) -> TaskDataset`` registered
in :data:`TASKS`.
"""

from __future__ import annotations

from typing import Callable

from circuit_stability.tasks.base import TaskDataset, TokenizationError, example_metric, single_token_id
from circuit_stability.tasks.gp import gp_dataset
from circuit_stability.tasks.greater_than import greater_than_dataset
from circuit_stability.tasks.ioi import ioi_dataset
from circuit_stability.tasks.sva import sva_dataset

# Tigges et al. (2024) §2.4: IOI, Gendered-Pronoun, Greater-Than, Subject-Verb Agreement.
TASKS: dict[str, Callable[..., TaskDataset]] = {"ioi": ioi_dataset, "gp": gp_dataset,
                                                "greater_than": greater_than_dataset, "sva": sva_dataset}


def make_dataset(task: str, tokenizer, n_examples: int, seed: int) -> TaskDataset:
    """Build the dataset of a registered task (the study config's schema holds each task's default
    ``n_examples`` and ``seed``: the paper's 70 IOI and Gendered-Pronoun prompts, 200 Greater-Than and SVA).

    Raises:
        ValueError: naming the task and the registered ones, if ``task`` is unknown.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; registered tasks: {sorted(TASKS)}")
    return TASKS[task](tokenizer, n_examples, seed)


__all__ = ["TASKS", "TaskDataset", "TokenizationError", "example_metric", "make_dataset", "single_token_id"]
