"""The checkpoint schedule: the single source of truth for which training steps are saved.

Pythia (Biderman et al. 2023, §2 and App. "Checkpoints") saves step 0, the log-spaced steps
1, 2, 4, …, 512, then every 1,000 steps up to 143,000: 154 checkpoints. The embedded suite uses the same
shape with a shorter run: 0, 1, 2, 4, …, ``log_until``, then every ``every`` steps up to ``max_steps``.
"""

from __future__ import annotations

PYTHIA_MAX_STEP = 143_000
PYTHIA_EVERY = 1_000
PYTHIA_LOG_UNTIL = 512


def checkpoint_schedule(max_steps: int, every: int, log_until: int) -> list[int]:
    """Training steps at which a checkpoint is saved, Pythia-style.

    Args:
        max_steps: last training step (inclusive; always in the schedule).
        every: spacing of the evenly spaced part, in steps (the multiples of ``every`` above ``log_until``).
        log_until: largest power-of-two step of the log-spaced part (Pythia: 512).

    Returns:
        Sorted, unique steps: ``[0, 1, 2, 4, …, ≤log_until] ∪ {k·every > log_until} ∪ {max_steps}``,
        all ``≤ max_steps``.

    Raises:
        ValueError: if ``max_steps < 1``, ``every < 1`` or ``log_until < 1``.

    >>> checkpoint_schedule(143_000, 1_000, 512) == pythia_schedule()
    True
    """
    if max_steps < 1 or every < 1 or log_until < 1:
        raise ValueError(
            f"checkpoint_schedule needs max_steps, every, log_until >= 1; got {max_steps}, {every}, {log_until}"
        )
    steps = {0, max_steps}
    p = 1
    while p <= min(log_until, max_steps):
        steps.add(p)
        p *= 2
    k = every
    while k <= max_steps:
        if k > log_until:
            steps.add(k)
        k += every
    return sorted(steps)


def pythia_schedule() -> list[int]:
    """The 154 checkpoint steps of every Pythia model (Biderman et al. 2023)."""
    return checkpoint_schedule(PYTHIA_MAX_STEP, PYTHIA_EVERY, PYTHIA_LOG_UNTIL)


def tokens_seen(step: int, batch_size: int, context: int) -> int:
    """Tokens seen after ``step`` optimizer steps: step × batch × context (design §6)."""
    return int(step) * int(batch_size) * int(context)
