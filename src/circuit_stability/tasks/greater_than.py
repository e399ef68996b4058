"""Greater-Than (Hanna et al. 2023; Tigges et al. 2024 §2.4; reference.md §2.3).

"The war lasted from the year 1732 to the year 17" → a two-digit token greater than 32. Corruption: the start
year becomes XX01, so every continuation but 00 and 01 is "greater". Metric: probability difference
Σ_{y > YY} p(y) − Σ_{y ≤ YY} p(y) over the 100 two-digit tokens "00" … "99" at the last token.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuit_stability.suite import lexicon as lx
from circuit_stability.tasks.base import TaskDataset, TokenizationError, pair_row, token_ids



def valid_years(tokenizer, centuries=lx.GT_CENTURIES, yys=lx.GT_YY) -> list[tuple[int, int]]:
    """(XX, YY) whose " XXYY" tokenizes to exactly [" XX", "YY"] (reference.md §2.3 ``get_valid_years``)."""
    out = []
    for xx in centuries:
        for yy in yys:
            pieces = tokenizer.convert_ids_to_tokens(tokenizer(f" {xx}{yy:02d}", add_special_tokens=False)["input_ids"])
            if len(pieces) == 2 and pieces[1] == f"{yy:02d}":
                out.append((xx, yy))
    return out


def greater_than_dataset(tokenizer, n_examples: int, seed: int) -> TaskDataset:
    """Generate ``n_examples`` Greater-Than pairs, YY cycling through 02 … 98 (balanced, as the paper).

    Half the examples (``split = "held_out"``) use nouns of :data:`lexicon.GT_HELD_OUT`, never seen in the
    frame in training; the other half use (noun, century, year) combinations reserved by
    :func:`lexicon.is_reserved`.

    Returns:
        A :class:`TaskDataset` with the 100 two-digit answer tokens, flags +1 above YY and −1 otherwise,
        metric ``prob_diff``.

    Raises:
        TokenizationError: if a two-digit token is not a single token, or no year splits as " XX" + "YY".
    """
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1; got {n_examples}")
    two_digit = token_ids(tokenizer, [f"{y:02d}" for y in range(100)], "greater_than")
    years = valid_years(tokenizer)
    if not years:
        raise TokenizationError(f"greater_than: no year 1102-1898 tokenizes as [' XX', 'YY'] in tokenizer "
                                f"{getattr(tokenizer, 'name_or_path', '?')!r}")
    by_yy: dict[int, list[int]] = {}
    for xx, yy in years:
        by_yy.setdefault(yy, []).append(xx)
    yy_cycle = sorted(by_yy)
    seen = [n for n in lx.GT_NOUNS if n not in lx.GT_HELD_OUT]
    held = sorted(lx.GT_HELD_OUT)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_examples):
        yy = yy_cycle[i % len(yy_cycle)]
        split = "held_out" if i % 2 else "seen"
        while True:
            noun = str(rng.choice(held if split == "held_out" else seen))
            xx = int(rng.choice(by_yy[yy]))
            if split == "held_out" or lx.is_reserved("gt", noun, xx, yy):
                break
        flags = [1 if y > yy else -1 for y in range(100)]
        rows.append(pair_row(tokenizer, f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}",
                             f"The {noun} lasted from the year {xx}01 to the year {xx}", two_digit, flags, split,
                             yy=yy))
    return TaskDataset("greater_than", "prob_diff", pd.DataFrame(rows), getattr(tokenizer, "name_or_path", "?"),
                       seed)
