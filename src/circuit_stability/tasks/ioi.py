"""Indirect Object Identification (Wang et al. 2023; Tigges et al. 2024 §2.4; reference.md §2.1).

"Then, Mary and John went to the store. John gave a drink to" → " Mary". The indirect object (IO) is the name
mentioned once, the subject (S) the name mentioned twice. Corruption "ABB→ABA": the second mention of S (S2) is
replaced by IO, keeping every position, so the corrupted prompt favours S. Metric: logit difference
logit[IO] − logit[S] at the last prompt token.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuit_stability.suite import lexicon as lx
from circuit_stability.tasks.base import TaskDataset, pair_row, token_ids



def _fill(template: str, io: str, s: str, s2: str, abba: bool, place: str, obj: str) -> str:
    """Fill a BABA template; ``s2`` is written at the second subject mention. ``abba`` swaps the first pair."""
    text = template.replace("[B] and [A]", "[A] and [B]", 1) if abba else template
    first = text.index("[B]")
    second = text.index("[B]", first + 3)
    text = text[:second] + s2 + text[second + 3:]
    return text.replace("[A]", io).replace("[B]", s).replace("[PLACE]", place).replace("[OBJECT]", obj)


def ioi_dataset(tokenizer, n_examples: int, seed: int,
                names: tuple[str, ...] = lx.NAMES) -> TaskDataset:
    """Generate ``n_examples`` IOI pairs, half ABBA and half BABA, over Wang et al.'s 15 templates.

    Half the examples (``split = "held_out"``) use the templates of :data:`lexicon.IOI_HELD_OUT`, which never
    occur in the embedded suite's corpus; the other half (``"seen"``) use the other templates with name pairs
    that :func:`lexicon.is_reserved` keeps out of the corpus, so no prompt occurs verbatim in training.

    Args:
        tokenizer: a Hugging Face tokenizer; every ``" " + name`` must be one token.
        n_examples: number of pairs (the paper: 70).
        seed: numpy seed; the same seed gives the same dataset.
        names: candidate names (two distinct ones per prompt).

    Returns:
        A :class:`TaskDataset` with answers ``[IO, S]``, flags ``[+1, −1]`` and metric ``logit_diff``.

    Raises:
        TokenizationError: naming every name that is not a single token (with a leading space).
        ValueError: if ``n_examples < 1`` or fewer than two names are given.
    """
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1; got {n_examples}")
    if len(names) < 2:
        raise ValueError(f"IOI needs at least two names; got {list(names)}")
    name_ids = dict(zip(names, token_ids(tokenizer, [" " + n for n in names], "ioi")))
    seen = [t for t in range(len(lx.IOI_TEMPLATES_BABA)) if t not in lx.IOI_HELD_OUT]
    held = sorted(lx.IOI_HELD_OUT)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_examples):
        abba, split = i % 2 == 0, ("held_out" if (i // 2) % 2 else "seen")
        while True:
            t = int(rng.choice(held if split == "held_out" else seen))
            io, s = (names[j] for j in rng.choice(len(names), size=2, replace=False))
            if split == "held_out" or lx.is_reserved("ioi", t, io, s, abba):
                break
        place, obj = lx.PLACES[int(rng.integers(len(lx.PLACES)))], lx.OBJECTS[int(rng.integers(len(lx.OBJECTS)))]
        prompt = lx.IOI_TEMPLATES_BABA[t][: -len(" [A]")]
        rows.append(pair_row(tokenizer, _fill(prompt, io, s, s, abba, place, obj), _fill(prompt, io, s, io, abba, place, obj),
                             [name_ids[io], name_ids[s]], [1, -1], split, template=t,
                             order="ABBA" if abba else "BABA"))
    frame = pd.DataFrame(rows)
    return TaskDataset("ioi", "logit_diff", frame, getattr(tokenizer, "name_or_path", "?"), seed)
