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
DEFAULT_EXAMPLES = {"ioi": 70, "gp": 70, "greater_than": 200, "sva": 200}


def make_dataset(task: str, tokenizer, n_examples: int | None = None, seed: int = 42) -> TaskDataset:
    """Build the dataset of a registered task.

    Raises:
        ValueError: naming the task and the registered ones, if ``task`` is unknown.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; registered tasks: {sorted(TASKS)}")
    return TASKS[task](tokenizer, n_examples or DEFAULT_EXAMPLES[task], seed)


__all__ = ["TASKS", "TaskDataset", "TokenizationError", "example_metric", "make_dataset", "single_token_id"]
