"""Head-function scores from attention patterns: induction, duplicate-token and previous-token heads (a first cut;
the components stage generalises it).

The standard test (Olsson et al. 2022, "In-context Learning and Induction Heads", §2; Tigges et al. 2024 §3.2
and App. E, whose ``get_induction_scores`` this follows): a sequence of ``L`` random tokens, no token repeated
within it, followed by the same ``L`` tokens again (length ``2L``, no BOS). With ``A[q, k]`` a head's attention
pattern averaged over the batch:

- induction score = mean of the diagonal ``A[q, q - (L - 1)]``: attention to the token *after* the earlier copy
  of the current token (offset ``L - 1``, as the paper's code: the diagonal's first entry is ``q = L - 1``,
  ``k = 0``);
- duplicate-token score = mean of the diagonal ``A[q, q - L]``: attention to the earlier copy itself;
- previous-token score = mean of the diagonal ``A[q, q - 1]``.

Each is in [0, 1]; a head that spreads its attention uniformly over the causal prefix scores about ``1/q``.
"""

from __future__ import annotations

import torch


def content_token_ids(tokenizer) -> torch.Tensor:
    """Ids of the tokenizer's content words (1-D, sorted): every token that is a leading-space marker ``Ġ`` followed
    by ASCII letters or digits, i.e. a word or number as it occurs inside running text. No special tokens, punctuation,
    whitespace, and no words without the space (in the embedded suite's word-level vocabulary those occur only at a
    document's start, and digit pairs without it only inside years). The vocabulary the standard induction test
    draws from (Olsson et al. 2022 use random tokens of the whole vocabulary; the paper's code a range of ids).

    Raises:
        ValueError: if the vocabulary has no such token.
    """
    ids = sorted(i for tok, i in tokenizer.get_vocab().items() if i not in tokenizer.all_special_ids
                 and tok.startswith("Ġ") and tok[1:].isascii() and tok[1:].isalnum())
    if not ids:
        raise ValueError("the tokenizer has no content-word tokens (a leading-space marker Ġ then letters or digits)")
    return torch.tensor(ids)


def repeated_random_tokens(vocab_ids: torch.Tensor, length: int, batch: int, seed: int) -> torch.Tensor:
    """``[batch, 2 * length]`` token ids: per row, ``length`` distinct ids drawn from ``vocab_ids`` (1-D, the
    allowed ids, e.g. the content words of the vocabulary), then the same ids again.

    Raises:
        ValueError: if ``length < 2`` or ``vocab_ids`` holds fewer than ``length`` distinct ids.
    """
    vocab_ids = torch.unique(vocab_ids)
    if length < 2 or len(vocab_ids) < length:
        raise ValueError(f"need 2 <= length <= {len(vocab_ids)} distinct ids; got length {length}")
    gen = torch.Generator().manual_seed(seed)
    first = torch.stack([vocab_ids[torch.randperm(len(vocab_ids), generator=gen)[:length]] for _ in range(batch)])
    return torch.cat([first, first], dim=1)


def pattern_scores(patterns: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
    """Induction, duplicate-token and previous-token scores from attention patterns (module docstring).

    Args:
        patterns: ``[..., q, k]`` attention probabilities on a repeated sequence of ``2 * length`` tokens (e.g.
            ``[n_layers, n_heads, 2L, 2L]``, already averaged over the batch).
        length: ``L``, the length of the repeated block.

    Returns:
        ``{"induction", "duplicate_token", "previous_token"}``, each ``patterns.shape[:-2]`` (e.g.
        ``[n_layers, n_heads]``).

    Raises:
        ValueError: if the last two dimensions are not ``2 * length``.
    """
    if patterns.shape[-2:] != (2 * length, 2 * length):
        raise ValueError(f"patterns end in {tuple(patterns.shape[-2:])}; a repeated block of {length} tokens "
                         f"gives ({2 * length}, {2 * length})")
    diag = lambda offset: torch.diagonal(patterns, offset=-offset, dim1=-2, dim2=-1).mean(-1)  # noqa: E731
    return {"induction": diag(length - 1), "duplicate_token": diag(length), "previous_token": diag(1)}


def head_scores(bridge, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of every head of ``bridge`` (a TransformerLens 4 ``TransformerBridge``) on ``tokens`` (``[batch,
    2L]`` from :func:`repeated_random_tokens`), from the raw attention patterns its ``blocks.{l}.attn.hook_pattern``
    hooks see (``[batch, n_heads, 2L, 2L]``), averaged over the batch.

    Returns:
        :func:`pattern_scores`' dict, each ``[n_layers, n_heads]``.
    """
    n_layers = bridge.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    seen: dict[str, torch.Tensor] = {}

    def keep(x, hook):
        seen[hook.name] = x.detach().float().mean(0)

    with torch.no_grad(), bridge.hooks(fwd_hooks=[(n, keep) for n in names]):
        bridge(tokens.to(next(bridge.parameters()).device))
    missing = [n for n in names if n not in seen]
    if missing:
        raise RuntimeError(f"hook point(s) {missing} did not fire: this bridge does not expose attention patterns")
    return pattern_scores(torch.stack([seen[n] for n in names]).cpu(), tokens.shape[1] // 2)
