"""Subject-Verb Agreement (Linzen et al. 2016 style; Tigges et al. 2024 §2.4; reference.md §2.4).

"The dog near the cats" → " is" (not " are"). The subject is followed by a distractor (a prepositional phrase
or a relative clause) whose noun has either number. Corruption: the subject's other number ("The dogs near the
cats"). Metric: probability difference Σ p(agreeing verbs) − Σ p(disagreeing verbs) over is/was/has and
are/were/have at the last token.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuit_stability.suite import lexicon as lx
from circuit_stability.tasks.base import TaskDataset, pair_row, token_ids



def sva_dataset(tokenizer, n_examples: int, seed: int) -> TaskDataset:
    """Generate ``n_examples`` agreement pairs, half singular and half plural subjects.

    Half the examples (``split = "held_out"``) have subjects of :data:`lexicon.SVA_HELD_OUT`, never the subject
    of a sentence with a distractor in training; the other half use combinations reserved by
    :func:`lexicon.is_reserved`.

    Returns:
        A :class:`TaskDataset` with answers ``singular verbs + plural verbs`` and flags +1 for the verbs that
        agree with the clean subject, −1 for the others; metric ``prob_diff``.

    Raises:
        TokenizationError: if a verb or noun is not a single token.
    """
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1; got {n_examples}")
    verbs = token_ids(tokenizer, [" " + v for v in lx.SVA_VERBS["singular"] + lx.SVA_VERBS["plural"]], "sva")
    token_ids(tokenizer, [" " + w for pair in lx.SVA_NOUNS for w in pair], "sva")
    k = len(lx.SVA_VERBS["singular"])
    seen = [i for i, (sg, _) in enumerate(lx.SVA_NOUNS) if sg not in lx.SVA_HELD_OUT]
    held = [i for i, (sg, _) in enumerate(lx.SVA_NOUNS) if sg in lx.SVA_HELD_OUT]
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_examples):
        num, split = e % 2, ("held_out" if (e // 2) % 2 else "seen")
        while True:
            i = int(rng.choice(held if split == "held_out" else seen))
            j, num2 = int(rng.integers(len(lx.SVA_NOUNS))), int(rng.integers(2))
            relative = rng.random() < 0.25
            prep = "that" if relative else str(rng.choice(lx.SVA_PREPS))
            if split == "held_out" or lx.is_reserved("sva", i, num, prep, j, num2):
                break
        obj = lx.SVA_NOUNS[j][num2]
        tail = f"that the {obj} {lx.VERBS_PAST[int(rng.integers(len(lx.VERBS_PAST)))]}" if relative else f"{prep} the {obj}"
        clean = f"The {lx.SVA_NOUNS[i][num]} {tail}"
        corrupted = f"The {lx.SVA_NOUNS[i][1 - num]} {tail}"
        flags = [1] * k + [-1] * k if num == 0 else [-1] * k + [1] * k
        rows.append(pair_row(tokenizer, clean, corrupted, verbs, flags, split,
                             number="plural" if num else "singular", distractor="relative" if relative else "prep"))
    return TaskDataset("sva", "prob_diff", pd.DataFrame(rows), getattr(tokenizer, "name_or_path", "?"), seed)
