"""Head-function scores of every head (the components stage; Tigges et al. 2024 §3.2, App. E): induction,
duplicate-token and previous-token scores from attention patterns (below), and successor, copy and negative copy
scores from each head's OV circuit (further down).

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

from dataclasses import dataclass

import torch

from circuit_stability.tasks.base import example_metric


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


# ---------------------------------------------------------------------------------------------------------------
# OV-circuit scores: successor heads (Gould et al. 2023) and name-mover / copy-suppression heads (Wang et al. 2023;
# McDougall et al. 2023). Each head's OV circuit maps a head input x (the residual stream after the head's own
# attention LayerNorm) to the logits it writes directly:
#
#     logits_h(x) = C((x W_V^h + b_V^h) W_O^h) (diag(γ_f) W_U),     C(y) = y − mean_d(y)
#
# with C the final LayerNorm's centring (linear, so it applies to each head's output on its own) and γ_f its scale
# folded into the unembedding W_U (untied). The LayerNorm's division by the stream's norm (a positive scale per
# position) and its bias (the same for every head) change no ranking below and are left out. The paper's code reads
# the same product from TransformerLens-folded weights, whose writing weights are centred (reference.md §4.2,
# §4.4); the bridge is unfolded, so the centring and the heads' own LayerNorms (:func:`head_inputs`) are applied
# here explicitly. With RMSNorm (Llama, OLMo 2) the final norm does not centre: C is the identity there. Bias-free
# value projections (Llama, OLMo) have b_V = 0; a norm without a scale (OLMo 1's non-parametric LayerNorm) has
# γ = 1; with grouped-query attention each query head's W_V^h is its key/value group's (:func:`ov_weights`).


def ov_logits(x: torch.Tensor, W_V: torch.Tensor, b_V: torch.Tensor, W_O: torch.Tensor,
              W_U: torch.Tensor, centre: bool = True) -> torch.Tensor:
    """Direct logits each head of one layer writes when its OV circuit reads ``x``.

    Args:
        x: ``[n, d_model]`` head inputs (after the layer's attention LayerNorm).
        W_V: ``[n_heads, d_model, d_head]``; b_V: ``[n_heads, d_head]``; W_O: ``[n_heads, d_head, d_model]``.
        W_U: ``[d_model, d_vocab]`` unembedding, the final LayerNorm's scale folded in (or a subset of its columns).
        centre: apply C (a final LayerNorm); False for a final RMSNorm, which does not centre.

    Returns:
        ``[n_heads, n, d_vocab]``: ``C((x W_V^h + b_V^h) W_O^h) W_U`` (module comment above: C removes the mean over
        d_model, as the final LayerNorm does), in logits.
    """
    v = torch.einsum("nd,hde->hne", x, W_V) + b_V[:, None, :]
    out = torch.einsum("hne,hed->hnd", v, W_O)
    return ((out - out.mean(-1, keepdim=True)) if centre else out) @ W_U


def copy_scores(x: torch.Tensor, names: torch.Tensor, W_V: torch.Tensor, b_V: torch.Tensor, W_O: torch.Tensor,
                W_U: torch.Tensor, k: int = 5, negative: bool = False, centre: bool = True) -> torch.Tensor:
    """Name-mover copy score (Wang et al. 2023 §3.3; reference.md §4.4) of every head: the percentage of name
    positions whose name token is among the top ``k`` of the head's OV logits; ``negative`` flips their sign (the
    negative copy score of negative name-mover and copy-suppression heads, McDougall et al. 2023).

    Args:
        x: ``[n_layers, n, d_model]``: at each layer, the head input (:func:`head_inputs`) of the residual stream
            after layer 0 at the IO, S1 and S2 positions of the IOI prompts (``n`` = 3 × prompts).
        names: ``[n]`` token id of the name at each of those positions (compared as ids, not strings).
        W_V, b_V, W_O: ``[n_layers, n_heads, …]`` as in :func:`ov_logits`; W_U: ``[d_model, d_vocab]``.
        k: top-k (the paper: 5).
        centre: as in :func:`ov_logits`.

    Returns:
        ``[n_layers, n_heads]`` in percent (0–100): ``100 · #{name in top k} / n``.

    Raises:
        ValueError: if ``x`` and ``names`` disagree in length or ``k`` is not in [1, d_vocab].
    """
    if x.shape[1] != names.shape[0]:
        raise ValueError(f"x has {x.shape[1]} positions but names has {names.shape[0]}")
    if not 1 <= k <= W_U.shape[1]:
        raise ValueError(f"k must lie in [1, {W_U.shape[1]}] (the vocabulary); got {k}")
    out = []
    for layer in range(x.shape[0]):
        logits = ov_logits(x[layer], W_V[layer], b_V[layer], W_O[layer], W_U, centre)  # [H, n, V]
        top = torch.topk(-logits if negative else logits, k, dim=-1).indices  # [H, n, k]
        out.append(100.0 * (top == names[None, :, None]).any(-1).float().mean(-1))
    return torch.stack(out)


def successor_scores(x: torch.Tensor, tokens: torch.Tensor, sequences: list[list[int]], W_V: torch.Tensor,
                     b_V: torch.Tensor, W_O: torch.Tensor, W_U: torch.Tensor, centre: bool = True) -> torch.Tensor:
    """Successor score (Gould et al. 2023, "Successor Heads", §2; reference.md §4.2) of every head: the fraction of
    (element, successor) pairs of ordinal sequences for which the head's OV logits, read over that sequence's own
    tokens, are highest at the successor alone. Departure: the paper's code counts a tie for the maximum as a
    success ("equals the max"), so a head that writes nothing would score 1; here a tie is a failure.

    Args:
        x: ``[n_layers, n, d_model]``: at each layer, the head input (:func:`head_inputs`) of the effective
            embedding (:func:`effective_embedding`) of each token of ``tokens``.
        tokens: ``[n]`` distinct token ids, the rows of ``x``.
        sequences: ordinal sequences as token ids, each element in ``tokens``; a cyclic sequence (days, months)
            ends with its first element again (the pair Sunday → Monday).
        W_V, b_V, W_O: ``[n_layers, n_heads, …]`` as in :func:`ov_logits`; W_U: ``[d_model, d_vocab]``.

    Returns:
        ``[n_layers, n_heads]`` in [0, 1]: successes / Σ_s (len(s) − 1).

    Raises:
        ValueError: if a sequence has fewer than two elements or an element is not in ``tokens``.
    """
    row = {int(t): i for i, t in enumerate(tokens.tolist())}
    missing = sorted({t for s in sequences for t in s} - set(row))
    if missing or any(len(s) < 2 for s in sequences):
        raise ValueError(f"every sequence needs >= 2 elements, all in tokens; missing ids {missing[:10]}")
    hits, pairs = torch.zeros(x.shape[0], W_V.shape[1]), 0
    for seq in sequences:
        targets = list(dict.fromkeys(seq))  # the sequence's own tokens (a cyclic one lists its first twice)
        col = {t: j for j, t in enumerate(targets)}
        src = torch.tensor([row[t] for t in seq[:-1]])
        succ = torch.tensor([col[t] for t in seq[1:]])
        for layer in range(x.shape[0]):
            logits = ov_logits(x[layer, src], W_V[layer], b_V[layer], W_O[layer], W_U[:, targets], centre)
            at_succ = logits.gather(-1, succ.expand(logits.shape[0], -1).unsqueeze(-1))  # [H, n-1, 1]
            others = logits.scatter(-1, succ.expand(logits.shape[0], -1).unsqueeze(-1), float("-inf"))
            hits[layer] += (at_succ.squeeze(-1) > others.max(-1).values).float().sum(-1)
        pairs += len(seq) - 1
    return hits / pairs


# --------------------------------------------------------------------------------- the bridge's weights and inputs
def _weight(norm, d_model: int) -> torch.Tensor:
    """The scale γ (``[d_model]``) of a norm component of the bridge; ones for a norm without one (OLMo 1's
    non-parametric LayerNorm)."""
    found = [p for name, p in norm.named_parameters() if name.endswith("weight")]
    return found[0] if found else torch.ones(d_model)


def centres(bridge) -> bool:
    """Whether the final norm centres the residual stream (LayerNorm: yes; RMSNorm: no), i.e. the ``centre``
    argument of :func:`ov_logits` for this model."""
    return bridge.cfg.normalization_type not in ("RMS", "RMSPre")


def ov_weights(bridge) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_V [L, H, d_model, d_head], b_V [L, H, d_head], W_O [L, H, d_head, d_model], W_U [d_model, d_vocab])`` of
    a TransformerLens 4 ``TransformerBridge``, W_U with the final norm's scale folded in (module comment), all
    float32 on the CPU. With grouped-query attention (``K`` key/value heads) the bridge's ``[L, K, …]`` value
    weights are repeated for the ``H/K`` query heads of each group (query head h reads group h // (H/K)); a
    bias-free value projection gives b_V = 0."""
    H = bridge.cfg.n_heads
    W_U = _weight(bridge.ln_final, bridge.cfg.d_model).detach().float()[:, None] * bridge.W_U.detach().float()
    W_V = bridge.W_V.detach().float().cpu()
    try:
        b_V = bridge.b_V.detach().float().cpu()
    except AttributeError:  # TransformerLens 4 exposes no stacked b_V for a bias-free projection
        b_V = torch.zeros(W_V.shape[:2] + W_V.shape[3:])
    if W_V.shape[1] != H:
        W_V, b_V = W_V.repeat_interleave(H // W_V.shape[1], dim=1), b_V.repeat_interleave(H // b_V.shape[1], dim=1)
    return W_V, b_V, bridge.W_O.detach().float().cpu(), W_U.cpu()


def head_inputs(bridge, resid: torch.Tensor) -> torch.Tensor:
    """Each layer's attention LayerNorm (``blocks.{l}.ln1``: normalisation, scale and bias, as the heads read it)
    applied to residual-stream vectors.

    Args:
        resid: ``[n, d_model]`` residual-stream vectors.

    Returns:
        ``[n_layers, n, d_model]`` float32 on the CPU.
    """
    param = next(bridge.parameters())  # the model's device and dtype (bfloat16 for large models)
    with torch.no_grad():
        return torch.stack([block.ln1(resid.to(param.device, param.dtype)).float().cpu() for block in bridge.blocks])


def effective_embedding(bridge, token_ids: torch.Tensor) -> torch.Tensor:
    """MLP0 applied to the token embeddings, ``MLP0(LN2_0(W_E[t]))`` (``[n, d_model]``), the input of the successor
    score (Gould et al. 2023 §2; reference.md §4.2: MLP0 on W_E, no attention). GPT-NeoX's MLP reads its own
    LayerNorm (``post_attention_layernorm``, the bridge's ``blocks.0.ln2``), applied here; the paper's folded
    weights skip the normalisation. With rotary positions, this is exactly MLP0's output for token ``t`` at any
    position (tested against ``blocks.0.mlp.hook_out``)."""
    block = bridge.blocks[0]
    with torch.no_grad():
        embed = bridge.W_E[token_ids.to(bridge.W_E.device)]
        return block.mlp(block.ln2(embed)).float().cpu()


def successor_sequences(tokenizer) -> list[list[int]]:
    """Token-id sequences of the embedded lexicon's ordinal sequences (:data:`lexicon.ORDINAL_SEQUENCES`: days,
    months, number words, ordinal words), each written without and with a leading space; days and months are
    cyclic (their first element appended). Words that are not one token split a sequence into runs (reference.md
    §4.2 keeps single-token pairs only); runs shorter than two are dropped. The paper's list is longer (numbers
    1–200, letters, Roman numerals, short day and month names), most of which the embedded vocabulary lacks.

    Raises:
        ValueError: if no sequence has two consecutive single-token elements.
    """
    from circuit_stability.suite import lexicon as lx

    cyclic = {0, 1}  # days, months (lx.ORDINAL_SEQUENCES order)
    out = []
    for i, words in enumerate(lx.ORDINAL_SEQUENCES):
        words = list(words) + ([words[0]] if i in cyclic else [])
        for prefix in ("", " "):
            ids = [tokenizer(prefix + w, add_special_tokens=False)["input_ids"] for w in words]
            run: list[int] = []
            for t in ids + [[]]:
                if len(t) == 1:
                    run.append(t[0])
                    continue
                if len(run) >= 2:
                    out.append(run)
                run = []
    if not out:
        raise ValueError("no ordinal sequence has two consecutive single-token words in this tokenizer")
    return out


def ioi_name_positions(frame) -> tuple[torch.Tensor, torch.Tensor]:
    """Token positions and ids of the IO, S1 and S2 names of IOI prompts, derived from the clean token ids: IO is
    the first occurrence of ``answer_ids[0]``, S1 and S2 the first and second of ``answer_ids[1]`` (ABBA and BABA
    orders alike).

    Args:
        frame: an IOI dataset frame (design §4: ``clean``, ``answer_ids`` = [IO, S]).

    Returns:
        ``(positions [N, 3], ids [N, 3])`` int64, columns IO, S1, S2.

    Raises:
        ValueError: naming the first row where IO does not occur once before S1 … S2 twice.
    """
    positions, ids = [], []
    for row, (clean, answers) in enumerate(zip(frame["clean"], frame["answer_ids"])):
        clean, (io, s) = list(clean), (int(answers[0]), int(answers[1]))
        at_io = [i for i, t in enumerate(clean) if t == io]
        at_s = [i for i, t in enumerate(clean) if t == s]
        if len(at_io) != 1 or len(at_s) != 2:
            raise ValueError(f"IOI row {row}: the IO name occurs {len(at_io)} times (need 1) and S {len(at_s)} "
                             "times (need 2) in the clean prompt")
        positions.append([at_io[0], at_s[0], at_s[1]])
        ids.append([io, s, s])
    return torch.tensor(positions), torch.tensor(ids)


def residual_after_layer0(bridge, tokens: list, positions: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The residual stream after layer 0 (``blocks.0.hook_out``: embedding + attention 0 + MLP 0) at given positions.

    Args:
        tokens: list of ``N`` prompts (token-id sequences, any lengths; right-padded with ``pad_id`` here).
        positions: ``[N, P]`` positions to read in each prompt.

    Returns:
        ``[N, P, d_model]`` float32 on the CPU.
    """
    width = max(len(t) for t in tokens)
    batch = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    for i, t in enumerate(tokens):
        batch[i, : len(t)] = torch.as_tensor(list(t))
    seen = {}

    def keep(x, hook):
        seen["resid"] = x.detach().float().cpu()

    with torch.no_grad(), bridge.hooks(fwd_hooks=[("blocks.0.hook_out", keep)]):
        bridge(batch.to(next(bridge.parameters()).device))
    return seen["resid"].gather(1, positions[..., None].expand(-1, -1, seen["resid"].shape[-1]))


def ov_head_scores(bridge, ioi_frame=None, k: int = 5, resid0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Successor (on :func:`successor_sequences`) and, given IOI prompts, copy and negative copy scores of every head
    of ``bridge``.

    Args:
        ioi_frame: an IOI dataset frame (design §4), or None for the successor score alone.
        k: top-k of the copy scores.
        resid0: ``[N, 3, d_model]`` the residual after layer 0 at the IO, S1 and S2 names (:attr:`IOIRecord.resid0`),
            or None to run the IOI prompts here (:func:`residual_after_layer0`).

    Returns:
        ``"successor"`` (fraction) and, with ``ioi_frame``, ``"copy"`` and ``"negative_copy"`` (percent), each
        ``[n_layers, n_heads]``.
    """
    W_V, b_V, W_O, W_U = ov_weights(bridge)
    sequences = successor_sequences(bridge.tokenizer)
    tokens = torch.tensor(sorted({t for s in sequences for t in s}))
    x_succ = head_inputs(bridge, effective_embedding(bridge, tokens))
    centre = centres(bridge)
    out = {"successor": successor_scores(x_succ, tokens, sequences, W_V, b_V, W_O, W_U, centre)}
    if ioi_frame is not None:
        positions, names = ioi_name_positions(ioi_frame)
        resid = resid0 if resid0 is not None else residual_after_layer0(
            bridge, list(ioi_frame["clean"]), positions, bridge.tokenizer.pad_token_id)
        x = head_inputs(bridge, resid.flatten(0, 1))
        names = names.flatten()
        out["copy"] = copy_scores(x, names, W_V, b_V, W_O, W_U, k, centre=centre)
        out["negative_copy"] = copy_scores(x, names, W_V, b_V, W_O, W_U, k, negative=True, centre=centre)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Direct-path patching of single heads at the read position (Wang et al. 2023 §3; Goldowsky-Dill et al. 2023), the
# measurement behind name movers' direct effects and the S-inhibition test (reference.md §4.5, §5). Form (b) of
# the path-patching issue: only the sender -> receiver path carries the sender's output from the alternative
# prompt; every other path (through later heads and MLPs) sees the clean sender.


def ioi_position_swap(clean: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The token-same / position-opposite variant of IOI prompts (McDougall et al.'s "ABB->BAB, BAB->ABB"): the IO
    and S1 tokens trade places, so the same names occur with the first clause's order flipped ("Then, John and
    Mary ..., John gave a drink to" for "Then, Mary and John ..., John gave a drink to").

    Args:
        clean: ``[N, pos]`` token ids of clean IOI prompts.
        positions: ``[N, 3]`` IO, S1, S2 positions (:func:`ioi_name_positions`).

    Returns:
        ``[N, pos]`` token ids (a new tensor).
    """
    out = clean.clone()
    rows = torch.arange(clean.shape[0])
    io, s1 = positions[:, 0].to(clean.device), positions[:, 1].to(clean.device)
    out[rows, io], out[rows, s1] = clean[rows, s1], clean[rows, io]
    return out


@dataclass(frozen=True)
class IOIRecord:
    """What one forward pass over IOI prompts leaves for the component tests, so that the direct effects, the
    query paths, the S-inhibition test, the name attention and the copy scores share it instead of rerunning it.

    Attributes:
        metric: ``[N]`` float32 per-example task metric (the logit difference for IOI).
        heads: ``[N, n_layers, n_heads, d_model]`` float32 every head's output (``attn.hook_result``) at each
            prompt's read position.
        final: ``[N, d_model]`` float32 the final residual stream (``blocks.{L-1}.hook_resid_post``) at the read
            position.
        pattern: ``[n_layers, n_heads, N, pos]`` float32 attention from the read position, or None if not asked.
        resid0: ``[N, 3, d_model]`` float32 residual stream after layer 0 (``blocks.0.hook_out``) at the IO, S1 and
            S2 positions, or None if not asked.
    """

    metric: torch.Tensor
    heads: torch.Tensor
    final: torch.Tensor
    pattern: torch.Tensor | None = None
    resid0: torch.Tensor | None = None


def record_ioi(bridge, prompts, tokens: torch.Tensor | None = None, positions: torch.Tensor | None = None,
               patterns: bool = False) -> IOIRecord:
    """One forward pass over ``tokens`` (default ``prompts.clean``) read at ``prompts.position``: the task metric,
    every head's output and the final residual at the read position; with ``patterns`` every head's attention from
    the read position; with ``positions`` the residual after layer 0 at the IO, S1 and S2 names.

    Args:
        prompts: :class:`~circuit_stability.attribution.Prompts` (read positions, answers, metric).
        tokens: ``[N, pos]`` token ids of the same shape as ``prompts.clean``, or None for the clean prompts.
        positions: ``[N, 3]`` IO, S1, S2 positions (:func:`ioi_name_positions`), or None.

    Returns:
        :class:`IOIRecord`.

    Raises:
        ValueError: if ``tokens`` and the clean prompts differ in shape.
    """
    clean = prompts.clean
    tokens = clean if tokens is None else tokens.to(clean.device)
    if tuple(tokens.shape) != tuple(clean.shape):
        raise ValueError(f"prompts {tuple(tokens.shape)} must match the clean ones {tuple(clean.shape)}")
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    position = prompts.position
    L = bridge.cfg.n_layers
    seen: dict[str, torch.Tensor] = {}

    def at_read(name):
        def f(x, hook):  # [batch, pos, head, d_model] or [batch, pos, d_model]
            seen[name] = x[rows, position].detach().float()
        return f

    def pattern(name):
        def f(x, hook):  # [batch, head, query, key]
            seen[name] = x[rows, :, position].detach().float().cpu()  # [N, H, P]
        return f

    def resid0(x, hook):  # [batch, pos, d_model]
        at = positions.to(x.device)
        seen["resid0"] = x.detach().float().gather(1, at[..., None].expand(-1, -1, x.shape[-1])).cpu()

    final = f"blocks.{L - 1}.hook_resid_post"
    hooks = [(f"blocks.{l}.attn.hook_result", at_read(f"result{l}")) for l in range(L)]
    hooks.append((final, at_read(final)))
    if patterns:
        hooks += [(f"blocks.{l}.attn.hook_pattern", pattern(f"pattern{l}")) for l in range(L)]
    if positions is not None:
        hooks.append(("blocks.0.hook_out", resid0))
    with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
        metric = prompts.metric_values(bridge(tokens)).float().cpu()
    return IOIRecord(
        metric=metric,
        heads=torch.stack([seen[f"result{l}"] for l in range(L)], dim=1),
        final=seen[final],
        pattern=torch.stack([seen[f"pattern{l}"] for l in range(L)]).permute(0, 2, 1, 3) if patterns else None,
        resid0=seen.get("resid0"))


def head_path_patch(bridge, prompts, alternative: torch.Tensor | IOIRecord, senders: list[tuple[int, int]],
                    receivers: list[tuple[int, int]] | None = None, max_rows: int = 4096,
                    clean_record: IOIRecord | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Patch each sender head's output along one path only, at the read position.

    For sender head ``s = (l, h)`` with output ``o_s`` (``blocks.{l}.attn.hook_result``), the clean prompts run
    with ``Δ_s = o_s(alternative) − o_s(clean)`` added, at each prompt's read position only, to the receivers'
    inputs: the final residual stream (``receivers=None``: the path sender -> logits, the head's direct effect)
    or the query inputs (``blocks.{l'}.hook_q_input``, before the LayerNorm) of the heads ``receivers``. A
    sender has no path to a receiver in its own or an earlier layer: that receiver gets no Δ. Everything else
    runs clean, so the receivers' changed outputs act on the logits through the rest of the model.

    The logits path needs no forward: the final residual at the read position is the clean one plus Δ_s, read
    through the final LayerNorm and the unembedding. Query receivers take one batched forward for all senders
    (prompts repeated along the batch, at most ``max_rows`` rows per pass).

    Args:
        bridge: a model from :func:`circuit_stability.models.load_model` (split q/k/v inputs, per-head results).
        prompts: :class:`~circuit_stability.attribution.Prompts` (the clean prompts, read positions, answers).
        alternative: ``[N, pos]`` token ids whose head outputs are patched in (the same shape as ``clean``), or
            their :func:`record_ioi` (no forward pass for them then).
        senders: ``(layer, head)`` of the ``S`` sending heads.
        receivers: ``(layer, head)`` of the ``R`` receiving heads, or None for the logits.
        max_rows: forward batch rows (senders x prompts) per pass.
        clean_record: the clean prompts' :func:`record_ioi`, or None to run them here.

    Returns:
        ``(metric, attention)``: ``metric`` ``[S, N]`` float32 per-example task metric with that sender patched;
        ``attention`` (None without receivers) ``[S, R, N, pos]``, the receivers' attention from the read position
        under that patch.

    Raises:
        ValueError: if ``alternative`` and the clean prompts differ in shape, or a sender or receiver is not a head.
    """
    clean = prompts.clean
    if not isinstance(alternative, IOIRecord) and tuple(alternative.shape) != tuple(clean.shape):
        raise ValueError(f"alternative prompts {tuple(alternative.shape)} must match the clean ones "
                         f"{tuple(clean.shape)}")
    L, H = bridge.cfg.n_layers, bridge.cfg.n_heads
    bad = [r for r in [*senders, *(receivers or [])] if not (0 <= r[0] < L and 0 <= r[1] < H)]
    if bad:
        raise ValueError(f"sender or receiver {bad} is not a head of this {L}-layer, {H}-head model")
    N, P = clean.shape
    device = clean.device
    alt = alternative if isinstance(alternative, IOIRecord) else record_ioi(bridge, prompts, alternative)
    clean_record = clean_record or record_ioi(bridge, prompts)
    final = clean_record.final
    delta = torch.stack([alt.heads[:, l, h] - clean_record.heads[:, l, h] for l, h in senders])  # [S, N, d]
    if not receivers:
        with torch.no_grad():
            model_dtype = next(bridge.parameters()).dtype  # the recorded float32 -> the model's (bfloat16)
            logits = bridge.unembed(bridge.ln_final((final + delta).to(model_dtype))).float()  # [S, N, d_vocab]
        rep = lambda t: t.repeat(len(senders), *([1] * (t.ndim - 1)))  # noqa: E731
        zero = torch.zeros(len(senders) * N, dtype=torch.long, device=device)
        metric = example_metric(logits.reshape(-1, 1, logits.shape[-1]), zero, rep(prompts.answer_ids),
                                rep(prompts.flags), prompts.metric)
        return metric.view(len(senders), N).cpu(), None
    per_pass = max(1, max_rows // N)
    metric = torch.empty((len(senders), N), dtype=torch.float32)
    attention = torch.empty((len(senders), len(receivers), N, P), dtype=torch.float32)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for i, (l, h) in enumerate(receivers):
        by_layer.setdefault(l, []).append((i, h))
    for s0 in range(0, len(senders), per_pass):
        group = senders[s0 : s0 + per_pass]
        S = len(group)
        rows = torch.arange(S * N, device=device)
        pos = prompts.position.repeat(S)
        d = delta[s0 : s0 + S]
        layer_of = torch.tensor([l for l, _ in group], device=device)
        seen: dict[int, torch.Tensor] = {}

        def add_query(layer):
            heads = torch.tensor([h for _, h in by_layer[layer]], device=device)
            upstream = (layer_of < layer).float()[:, None, None]  # no path from the receiver's layer or later
            dq = (d * upstream).reshape(S * N, 1, -1)

            def f(x, hook):  # [S·N, P, H, d]
                x = x.clone()
                x[rows[:, None], pos[:, None], heads[None, :]] += dq.to(x.dtype)
                return x
            return f

        def keep_pattern(layer):
            heads = torch.tensor([h for _, h in by_layer[layer]], device=device)

            def f(x, hook):  # [S·N, H, P, P]
                seen[layer] = x[rows[:, None], heads[None, :], pos[:, None]].float()
            return f

        hooks = [(f"blocks.{l}.hook_q_input", add_query(l)) for l in by_layer]
        hooks += [(f"blocks.{l}.attn.hook_pattern", keep_pattern(l)) for l in by_layer]
        rep = lambda t: t.repeat(S, *([1] * (t.ndim - 1)))  # noqa: E731
        with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
            logits = bridge(rep(clean))
        metric[s0 : s0 + S] = example_metric(logits, pos, rep(prompts.answer_ids), rep(prompts.flags),
                                             prompts.metric).view(S, N).cpu()
        for l, members in by_layer.items():
            pattern = seen[l].view(S, N, len(members), P).permute(0, 2, 1, 3).cpu()
            for j, (i, _) in enumerate(members):
                attention[s0 : s0 + S, i] = pattern[:, j]
    return metric, attention


def normalised_effect(patched: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """Path-patching effect on the task metric, normalised (Wang et al. 2023; reference.md §5):
    ``(mean m_patched − mean m_clean) / (mean m_clean − mean m_corrupted)``: 0 = no effect, −1 = the whole
    clean-to-corrupted drop.

    Args:
        patched: ``[..., N]`` per-example metric under each patch; ``clean``, ``corrupted``: ``[N]``.

    Returns:
        ``[...]`` float32 (NaN when the clean and corrupted means are equal).
    """
    gap = float(clean.mean() - corrupted.mean())
    if gap == 0.0:
        return torch.full(patched.shape[:-1], float("nan"))
    return (patched.mean(-1) - clean.mean()) / gap


def s_inhibition_test(ld: float, ld_patched: torch.Tensor, attn_io: float, attn_io_patched: torch.Tensor,
                      attn_s1: float, attn_s1_patched: torch.Tensor) -> torch.Tensor:
    """The S-inhibition test (Wang et al. 2023 §3.2; the paper's ``S2I_token_pos``, reference.md §4.5): a head is an
    S-inhibition head when patching its output from the position-swapped prompts (:func:`ioi_position_swap`) into
    the name movers' queries lowers the logit difference, lowers the name movers' attention from the read position
    to IO and raises it to S1. The paper compares relative changes ``(x_patched − x)/x``; the signs of plain
    differences are used here, which agree whenever ``x > 0`` (attention always; the logit difference at every
    checkpoint where IOI is performed) and do not flip meaning when the clean logit difference is negative.

    Args:
        ld, attn_io, attn_s1: unpatched mean logit difference and mean name-mover attention to IO and S1.
        ld_patched, attn_io_patched, attn_s1_patched: ``[...]`` the same under each head's patch.

    Returns:
        ``[...]`` bool.
    """
    return (ld_patched < ld) & (attn_io_patched < attn_io) & (attn_s1_patched > attn_s1)


def ioi_head_effects(bridge, prompts, positions: torch.Tensor, copy: torch.Tensor, copy_threshold: float,
                     candidate_threshold: float, max_rows: int = 4096,
                     clean_record: IOIRecord | None = None) -> dict[str, torch.Tensor]:
    """Direct effects, name movers, effects through the name movers' queries and the S-inhibition test of every
    head, by direct-path patching (:func:`head_path_patch`) on IOI prompts (corruption ABB->ABA).

    - ``direct_effect``: normalised effect (:func:`normalised_effect`) of the head -> logits path;
    - name-mover heads: copy score > ``copy_threshold`` and ``direct_effect`` < 0 (the paper's consistency
      script; reference.md §5 B);
    - ``query_effect``: normalised effect of the head -> name-mover queries path (all name movers jointly);
    - ``s_inhibition``: 1.0 for a head with ``query_effect < −candidate_threshold`` (the paper: −0.001) that passes
      :func:`s_inhibition_test` under the position swap, else 0.0.
    Without name movers, ``query_effect`` and ``s_inhibition`` are NaN for every head.

    Args:
        prompts: IOI :class:`~circuit_stability.attribution.Prompts` (clean, corrupted ABB->ABA, read positions).
        positions: ``[N, 3]`` IO, S1, S2 positions (:func:`ioi_name_positions`).
        copy: ``[n_layers, n_heads]`` copy scores (percent, :func:`copy_scores`).
        copy_threshold: percent (``components.thresholds.copy``; the paper: 10).
        candidate_threshold: ``components.candidate_effect`` (the paper: 0.001).
        clean_record: the clean prompts' :func:`record_ioi` with ``patterns=True``, or None to run it here. Two
            more forwards (corrupted; position-swapped where a name mover exists) and the batched query patches
            are all the passes this function takes.

    Returns:
        ``direct_effect``, ``query_effect``, ``s_inhibition`` and ``name_mover`` (1.0 / 0.0), each
        ``[n_layers, n_heads]`` float32.
    """
    L, H = bridge.cfg.n_layers, bridge.cfg.n_heads
    if clean_record is None or clean_record.pattern is None:
        clean_record = record_ioi(bridge, prompts, patterns=True)
    corrupted = record_ioi(bridge, prompts, prompts.corrupted)
    ld_clean, ld_corr = clean_record.metric, corrupted.metric
    heads = [(l, h) for l in range(L) for h in range(H)]
    patched, _ = head_path_patch(bridge, prompts, corrupted, heads, None, max_rows, clean_record)
    direct = normalised_effect(patched, ld_clean, ld_corr).view(L, H)
    movers = (copy > copy_threshold) & (direct < 0)
    nan = torch.full((L, H), float("nan"))
    out = {"direct_effect": direct, "name_mover": movers.float(), "query_effect": nan, "s_inhibition": nan.clone()}
    receivers = [(int(l), int(h)) for l, h in torch.nonzero(movers)]
    if not receivers:
        return out
    upstream = [(l, h) for l, h in heads if l < max(r[0] for r in receivers)]  # the others have no path: effect 0
    query = torch.zeros(L, H)
    if upstream:
        patched, _ = head_path_patch(bridge, prompts, corrupted, upstream, receivers, max_rows, clean_record)
        query[tuple(torch.tensor(upstream).T)] = normalised_effect(patched, ld_clean, ld_corr)
    out["query_effect"] = query
    out["s_inhibition"] = torch.zeros(L, H)
    candidates = [(l, h) for l, h in upstream if float(query[l, h]) < -candidate_threshold]
    if not candidates:
        return out
    swapped = ioi_position_swap(prompts.clean, positions)
    patched, attention = head_path_patch(bridge, prompts, swapped, candidates, receivers, max_rows,
                                         clean_record)  # [C, R, N, P]
    clean_attention = torch.stack([clean_record.pattern[l, h] for l, h in receivers])  # [R, N, P]
    rows = torch.arange(positions.shape[0])
    io, s1 = positions[:, 0], positions[:, 1]
    passed = s_inhibition_test(float(ld_clean.mean()), patched.mean(-1),
                               float(clean_attention[:, rows, io].mean()), attention[..., rows, io].mean((-1, -2)),
                               float(clean_attention[:, rows, s1].mean()), attention[..., rows, s1].mean((-1, -2)))
    out["s_inhibition"][tuple(torch.tensor(candidates).T)] = passed.float()
    return out


def name_attention(bridge, prompts, positions: torch.Tensor,
                   clean_record: IOIRecord | None = None) -> dict[str, torch.Tensor]:
    """Every head's mean attention from the read position to the IO, S1 and S2 names of clean IOI prompts (the
    attention half of the name-mover and copy-suppression tests: Wang et al. 2023 §3.1, a name mover attends to IO
    more than to S1 and S2; McDougall et al. 2023, a copy-suppression head attends to the name it suppresses).

    Args:
        prompts: IOI :class:`~circuit_stability.attribution.Prompts`; positions: ``[N, 3]`` IO, S1, S2
            (:func:`ioi_name_positions`).
        clean_record: the clean prompts' :func:`record_ioi` with ``patterns=True``, or None to run it here.

    Returns:
        ``attention_io``, ``attention_s1``, ``attention_s2``: ``[n_layers, n_heads]`` float32 fractions in [0, 1].
    """
    if clean_record is None or clean_record.pattern is None:
        clean_record = record_ioi(bridge, prompts, patterns=True)
    pattern = clean_record.pattern  # [L, H, N, P]
    rows = torch.arange(positions.shape[0])
    return {f"attention_{name}": pattern[..., rows, positions[:, i]].mean(-1)
            for i, name in enumerate(("io", "s1", "s2"))}
