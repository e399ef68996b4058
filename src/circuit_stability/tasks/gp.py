"""Gendered-Pronoun (Mathwin et al. 2023; Tigges et al. 2024 §2.4; reference.md §2.2).

"So Mary is a really nice person, isn't" → " she". Corruption: the name is replaced by a name of the other
gender, so the corrupted prompt favours the other pronoun. Metric: logit difference
logit[correct pronoun] − logit[other pronoun] at the last token. Balanced: half male, half female names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuit_stability.suite import lexicon as lx
from circuit_stability.tasks.base import TaskDataset, pair_row, token_ids



def gp_dataset(tokenizer, n_examples: int, seed: int) -> TaskDataset:
    """Generate ``n_examples`` Gendered-Pronoun pairs.

    Half the examples (``split = "held_out"``) use the attributes of :data:`lexicon.GP_HELD_OUT`, never seen
    in the "So … isn't" frame in training; the other half use (name, attribute) combinations reserved by
    :func:`lexicon.is_reserved`.

    Returns:
        A :class:`TaskDataset` with answers ``[correct pronoun, other pronoun]``, flags ``[+1, −1]``,
        metric ``logit_diff``.

    Raises:
        TokenizationError: if " he", " she" or a name is not a single token.
    """
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1; got {n_examples}")
    he, she = token_ids(tokenizer, [" he", " she"], "gp")
    token_ids(tokenizer, [" " + n for n in lx.NAMES], "gp")
    pron = {"male": he, "female": she}
    names = {"male": lx.MALE_NAMES, "female": lx.FEMALE_NAMES}
    seen = [a for a in range(len(lx.GP_ATTRIBUTES)) if a not in lx.GP_HELD_OUT]
    held = sorted(lx.GP_HELD_OUT)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_examples):
        g, other = ("male", "female") if i % 2 == 0 else ("female", "male")
        split = "held_out" if (i // 2) % 2 else "seen"
        while True:
            name = names[g][int(rng.integers(len(names[g])))]
            a = int(rng.choice(held if split == "held_out" else seen))
            if split == "held_out" or lx.is_reserved("gp", name, a):
                break
        swap = names[other][int(rng.integers(len(names[other])))]
        attr = lx.GP_ATTRIBUTES[a]
        rows.append(pair_row(tokenizer, f"So {name} is {attr}, isn't", f"So {swap} is {attr}, isn't",
                             [pron[g], pron[other]], [1, -1], split, gender=g, attribute=a))
    return TaskDataset("gp", "logit_diff", pd.DataFrame(rows), getattr(tokenizer, "name_or_path", "?"), seed)
