"""The task dataset contract (design §4) and the metrics every task shares.

A task dataset is a set of clean/corrupted prompt pairs of equal token length, the position whose next-token
logits are read, and signed answer tokens. The per-example metric is

    logit difference:        Σ_i flags_i · logit[position, answer_ids_i]            (Wang et al. 2023)
    probability difference:  Σ_i flags_i · softmax(logits[position])[answer_ids_i]   (Hanna et al. 2023)

with flags ``+1`` for correct and ``−1`` for incorrect answers; the task metric is its mean over examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

METRICS = ("logit_diff", "prob_diff")


class TokenizationError(ValueError):
    """A word that a task needs as one token is not one token in the model's tokenizer."""


@dataclass(frozen=True)
class TaskDataset:
    """Clean/corrupted prompt pairs of one task (design §4 "Task dataset parquet").

    Attributes:
        task: registry name of the task.
        metric: ``"logit_diff"`` or ``"prob_diff"``.
        frame: one row per example with columns ``clean``, ``corrupted`` (list of token ids, equal length within
            a pair), ``clean_text``, ``corrupted_text``, ``position`` (index of the token whose next-token logits
            are read), ``answer_ids``, ``flags`` (+1 correct / −1 incorrect), ``split`` (``seen``/``held_out``).
        tokenizer: name or path of the tokenizer the ids belong to.
        seed: generator seed.
    """

    task: str
    metric: str
    frame: pd.DataFrame
    tokenizer: str
    seed: int

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is not one of {list(METRICS)}")
        bad = [i for i, (c, k) in enumerate(zip(self.frame["clean"], self.frame["corrupted"])) if len(c) != len(k)]
        if bad:
            raise ValueError(f"{self.task}: clean and corrupted prompts differ in length at rows {bad[:10]}")

    def __len__(self) -> int:
        return len(self.frame)

    def tensors(self, pad_id: int) -> dict[str, torch.Tensor]:
        """Right-padded batch tensors.

        Returns:
            ``clean``, ``corrupted``: ``[n, max_len]`` long, right-padded with ``pad_id``;
            ``position``: ``[n]`` long; ``answer_ids``: ``[n, n_answers]`` long (padded with 0);
            ``flags``: ``[n, n_answers]`` float (0 where padded).
            Right padding needs no attention mask: under causal attention a position never sees later tokens,
            and only ``position`` (a real token) is read.
        """
        n = len(self.frame)
        max_len = max(len(c) for c in self.frame["clean"])
        n_ans = max(len(a) for a in self.frame["answer_ids"])
        clean = torch.full((n, max_len), pad_id, dtype=torch.long)
        corrupted = torch.full((n, max_len), pad_id, dtype=torch.long)
        answers = torch.zeros((n, n_ans), dtype=torch.long)
        flags = torch.zeros((n, n_ans), dtype=torch.float32)
        for i, row in enumerate(self.frame.itertuples(index=False)):
            clean[i, : len(row.clean)] = torch.as_tensor(np.asarray(row.clean, dtype=np.int64))
            corrupted[i, : len(row.corrupted)] = torch.as_tensor(np.asarray(row.corrupted, dtype=np.int64))
            answers[i, : len(row.answer_ids)] = torch.as_tensor(np.asarray(row.answer_ids, dtype=np.int64))
            flags[i, : len(row.flags)] = torch.as_tensor(np.asarray(row.flags, dtype=np.float32))
        position = torch.tensor(self.frame["position"].to_numpy(dtype=np.int64))
        return {"clean": clean, "corrupted": corrupted, "position": position, "answer_ids": answers, "flags": flags}


def example_metric(logits: torch.Tensor, position: torch.Tensor, answer_ids: torch.Tensor, flags: torch.Tensor,
                   metric: str) -> torch.Tensor:
    """Per-example task metric (design §4).

    Args:
        logits: ``[batch, pos, d_vocab]``.
        position: ``[batch]`` index of the position whose logits are read.
        answer_ids: ``[batch, n_answers]`` token ids.
        flags: ``[batch, n_answers]``: +1 correct, −1 incorrect, 0 padding.
        metric: ``"logit_diff"`` (units: logits) or ``"prob_diff"`` (units: probability).

    Returns:
        ``[batch]`` float32: Σ_i flags_i · logit[position, answer_i] or Σ_i flags_i · p[position, answer_i].

    Raises:
        ValueError: for an unknown ``metric``.
    """
    last = logits[torch.arange(logits.shape[0], device=logits.device), position].float()  # [batch, d_vocab]
    if metric == "logit_diff":
        values = last
    elif metric == "prob_diff":
        values = torch.softmax(last, dim=-1)
    else:
        raise ValueError(f"metric {metric!r} is not one of {list(METRICS)}")
    return (values.gather(1, answer_ids) * flags).sum(-1)


def single_token_id(tokenizer, word: str) -> int:
    """Token id of ``word`` (including any leading space), which must be exactly one token.

    Raises:
        TokenizationError: naming the word, its tokens and the tokenizer, if it is not one known token.
    """
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise TokenizationError(
            f"{word!r} is not a single token in tokenizer {getattr(tokenizer, 'name_or_path', '?')!r}: "
            f"it tokenizes to {pieces}; every answer word must be exactly one known token"
        )
    return ids[0]


def pair_row(tokenizer, clean_text: str, corrupted_text: str, answer_ids: list[int], flags: list[int],
             split: str, **extra) -> dict:
    """One dataset row: tokenize a clean/corrupted pair (no special tokens) and read the last position.

    Raises:
        ValueError: if the two prompts tokenize to different lengths.
    """
    clean = tokenizer(clean_text, add_special_tokens=False)["input_ids"]
    corrupted = tokenizer(corrupted_text, add_special_tokens=False)["input_ids"]
    if len(clean) != len(corrupted):
        raise ValueError(f"clean {clean_text!r} and corrupted {corrupted_text!r} tokenize to different lengths "
                         f"({len(clean)} vs {len(corrupted)})")
    return {"clean": clean, "corrupted": corrupted, "clean_text": clean_text, "corrupted_text": corrupted_text,
            "position": len(clean) - 1, "answer_ids": list(answer_ids), "flags": list(flags), "split": split,
            **extra}


def token_ids(tokenizer, words: list[str], task: str) -> list[int]:
    """Single-token ids of ``words`` (each with its leading space if it has one).

    Raises:
        TokenizationError: naming every word that is not one token, the task and the tokenizer.
    """
    ids, bad = [], []
    for w in words:
        try:
            ids.append(single_token_id(tokenizer, w))
        except TokenizationError:
            bad.append(w)
    if bad:
        raise TokenizationError(f"{task}: answer words {bad} are not single tokens in tokenizer "
                                f"{getattr(tokenizer, 'name_or_path', '?')!r}; every answer must be one token")
    return ids
