"""Edge attribution on a ``TransformerBridge``: EAP, EAP-IG and exact activation patching (design §4–5).

Notation (shapes as in TransformerLens): ``a_u`` is writer ``u``'s output ``[batch, pos, d_model]``; ``in_v``
is reader ``v``'s input (the residual stream it reads, before its layer norm). With clean inputs ``z`` and
corrupted inputs ``z'``, ``Δa_u = a_u(z') − a_u(z)``.

- **Edge score** (Hanna et al. 2024, "Have faith in faithfulness", §3, EAP-IG equation; Syed et al. 2023 for
  EAP): ``score(u→v) = (1/N) Σ_examples Σ_{pos, d} Δa_u · (1/|α|) Σ_{α} ∂M(e' + α(e − e'))/∂in_v`` where ``e``,
  ``e'`` are the clean and corrupted token embeddings, the model otherwise runs on the clean tokens, and ``M``
  is the per-example task metric. ``α = k/m, k = 1..m`` is EAP-IG as in the paper's equation (the default),
  ``k = 0..m−1`` as hannamw/EAP-IG's code, ``α = 1`` is EAP (gradient at the clean input), ``α = 0`` takes the
  gradient at the corrupted input (TransformerLens' "denoising" EAP, with the opposite sign).
  Sign: ``score ≈ M(model with edge u→v corrupted) − M(model)``; a negative score means the edge supports the task.
- **Patching** an edge: during the clean run ``in_v ← in_v − a_u(current run) + a_u(z')`` (Hanna et al. 2024;
  reference.md §3.3). Exact patching patches one edge per forward; circuit evaluation patches every edge
  outside the circuit. Both go through :func:`patched_metric`, which evaluates many edge masks in one batched
  forward (masks stacked along the batch).

All accumulation is float32 whatever the model dtype; the device is the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from circuit_stability.graph import QKV, Graph
from circuit_stability.progress import Progress
from circuit_stability.tasks.base import TaskDataset, example_metric

METHODS = ("EAP", "EAP-IG", "exact")
IG_CONVENTIONS = ("paper", "code")


def interpolation_points(method: str, ig_steps: int, convention: str) -> list[float]:
    """The α at which gradients are taken (α = 1 is the clean input, α = 0 the corrupted one).

    Args:
        method: ``"EAP"`` (α = 1; Syed et al. 2023) or ``"EAP-IG"`` (Hanna et al. 2024).
        ig_steps: m, the number of EAP-IG points.
        convention: ``"paper"``: k/m for k = 1..m (the paper's equation, right end); ``"code"``: k/m for
            k = 0..m−1 (hannamw/EAP-IG's code, left end).

    Raises:
        ValueError: for an unknown method or convention, or ``ig_steps < 1``.
    """
    if method == "EAP":
        return [1.0]
    if method != "EAP-IG":
        raise ValueError(f"no interpolation points for method {method!r}; gradient methods: ['EAP', 'EAP-IG']")
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1; got {ig_steps}")
    if convention == "paper":
        return [k / ig_steps for k in range(1, ig_steps + 1)]
    if convention == "code":
        return [k / ig_steps for k in range(ig_steps)]
    raise ValueError(f"unknown EAP-IG convention {convention!r}; valid: {list(IG_CONVENTIONS)}")


@dataclass(frozen=True)
class Prompts:
    """Batched task prompts (see :meth:`TaskDataset.tensors`): ``clean``/``corrupted`` ``[n, pos]`` long,
    ``position`` ``[n]``, ``answer_ids``/``flags`` ``[n, n_answers]``, and the metric name."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    position: torch.Tensor
    answer_ids: torch.Tensor
    flags: torch.Tensor
    metric: str

    @classmethod
    def from_dataset(cls, ds: TaskDataset, pad_id: int, device: str | torch.device = "cpu") -> "Prompts":
        t = ds.tensors(pad_id)
        return cls(**{k: v.to(device) for k, v in t.items()}, metric=ds.metric)

    def __len__(self) -> int:
        return self.clean.shape[0]

    def chunks(self, batch_size: int) -> Iterator["Prompts"]:
        """Consecutive batches of at most ``batch_size`` examples, trimmed to their longest prompt."""
        for s in range(0, len(self), batch_size):
            e = min(s + batch_size, len(self))
            width = int(self.position[s:e].max()) + 1  # nothing after the read position matters (causal)
            yield Prompts(self.clean[s:e, :width], self.corrupted[s:e, :width], self.position[s:e],
                          self.answer_ids[s:e], self.flags[s:e], self.metric)

    def metric_values(self, logits: torch.Tensor) -> torch.Tensor:
        """``[n]`` per-example metric from ``[n, pos, d_vocab]`` logits."""
        return example_metric(logits, self.position, self.answer_ids, self.flags, self.metric)


def _device(bridge) -> torch.device:
    return next(bridge.parameters()).device


def _writer_hooks(graph: Graph, buf: torch.Tensor, subtract: bool = False) -> list:
    """Forward hooks writing every writer's output into ``buf[writer, batch, pos, d_model]`` (float32):
    copied, or subtracted from what ``buf`` holds when ``subtract``."""
    H = graph.n_heads

    def put(dst: torch.Tensor, x: torch.Tensor) -> None:
        if subtract:
            dst -= x.detach()
        else:
            dst.copy_(x.detach())

    def embed(x, hook):
        put(buf[0], x)

    def result(layer):
        s = graph.writer_index(layer, 0)

        def f(x, hook):  # [batch, pos, head, d_model]
            put(buf[s : s + H], x.permute(2, 0, 1, 3))
        return f

    def mlp(layer):
        i = graph.writer_index(layer)

        def f(x, hook):
            put(buf[i], x)
        return f

    hooks = [("hook_embed", embed)]
    for l in range(graph.n_layers):
        hooks += [(f"blocks.{l}.attn.hook_result", result(l)), (f"blocks.{l}.hook_mlp_out", mlp(l))]
    return hooks


def _reader_hook_names(graph: Graph) -> list[tuple[str, int, list[int]]]:
    """``(hook name, n_upstream, reader columns)`` for every reader hook point, in forward order."""
    out = []
    for l in range(graph.n_layers):
        for c in QKV:  # q: [batch, pos, H, d_model]; k, v: [batch, pos, K, d_model] (K key/value heads)
            cols = graph.reader_columns(l, c)
            out.append((f"blocks.{l}.hook_{c}_input", int(graph.n_upstream[cols[0]]), cols))
        m = graph.reader_index(l)
        out.append((f"blocks.{l}.hook_mlp_in", int(graph.n_upstream[m]), [m]))
    out.append((f"blocks.{graph.n_layers - 1}.hook_resid_post", graph.n_writers, [graph.logits_index]))
    return out


def writer_outputs(bridge, graph: Graph, tokens: torch.Tensor, out: torch.Tensor | None = None,
                   subtract: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass recording every writer's output.

    Args:
        tokens: ``[batch, pos]`` token ids.
        out: optional buffer to write into (shape below); a new one is allocated if None.
        subtract: subtract the outputs from ``out`` instead of overwriting it (``out − a``, in place).

    Returns:
        ``(acts, logits)``: ``acts`` ``[n_writers, batch, pos, d_model]`` float32 (writer order of
        :class:`Graph`), ``logits`` ``[batch, pos, d_vocab]``.
    """
    d_model = bridge.cfg.d_model
    buf = out if out is not None else torch.empty((graph.n_writers, *tokens.shape, d_model), dtype=torch.float32,
                                                  device=tokens.device)
    with torch.no_grad(), bridge.hooks(fwd_hooks=_writer_hooks(graph, buf, subtract)):
        logits = bridge(tokens)
    return buf, logits


@dataclass(frozen=True)
class Attribution:
    """Edge scores and the baseline metrics measured on the way.

    Attributes:
        scores: ``[n_writers, n_readers]`` float32 numpy, NaN where there is no edge (units: metric units).
        metric_clean: mean task metric on clean prompts, m(M).
        metric_corrupted: mean task metric on corrupted prompts.
        per_example_clean: ``[n]`` clean metric per example.
        per_example: ``[n, n_writers, n_readers]`` float32 numpy, each example's edge scores (the same formula
            without the mean over examples; NaN where there is no edge), or None when not asked for. Their mean
            over examples equals ``scores`` to float32 rounding (the two are accumulated separately, so that
            ``scores`` does not depend on whether per-example scores are kept).
    """

    scores: np.ndarray
    metric_clean: float
    metric_corrupted: float
    per_example_clean: np.ndarray
    per_example: np.ndarray | None = None


def activation_bytes(graph: Graph, n_examples: int, n_positions: int, d_model: int) -> int:
    """Bytes of one float32 activation buffer ``[n_writers, batch, pos, d_model]``: the dominant memory term of
    :func:`edge_attribution`, which fills one buffer with the clean outputs and subtracts the corrupted ones
    from it in place (design §5)."""
    return graph.n_writers * n_examples * n_positions * d_model * 4


def edge_attribution(bridge, graph: Graph, prompts: Prompts, alphas: list[float], batch_size: int,
                     max_bytes: int = 4 << 30, per_example: bool = False) -> Attribution:
    """Gradient-based edge scores (EAP for ``alphas=[1]``, EAP-IG for ``interpolation_points``).

    Costs per batch: 2 forward passes (clean, corrupted) + ``len(alphas)`` forward/backward passes; one
    backward pass scores every edge (the activation differences ``Δa`` are contracted with the gradient at
    every reader input inside the backward hooks). Formula and sign: module docstring.

    Args:
        bridge: from :func:`circuit_stability.models.load_model` (split q/k/v inputs and head results on).
        graph: the model's :class:`Graph`.
        prompts: clean/corrupted pairs.
        alphas: interpolation points (see :func:`interpolation_points`).
        batch_size: examples per forward pass, lowered so that the activation-difference buffer
            (:func:`activation_bytes`, held once, plus the same again for transient copies) fits in ``max_bytes``.
        max_bytes: memory budget of the activation buffers.
        per_example: also keep every example's scores (:attr:`Attribution.per_example`, ``4·n·W·R`` bytes; for
            the bootstrap of the similarity stage): each reader's gradient is summed over the interpolation points
            (a buffer as large as every reader input of the batch, counted in ``max_bytes``), then contracted with
            the activation differences once per batch, batched over examples.

    Returns:
        :class:`Attribution` (scores are means over examples).

    Raises:
        ValueError: if ``alphas`` is empty or has values outside [0, 1].
    """
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of values in [0, 1]; got {alphas}")
    device = _device(bridge)
    dtype = next(bridge.parameters()).dtype
    scores = torch.zeros((graph.n_writers, graph.n_readers), dtype=torch.float32, device=device)
    clean_vals, corr_vals = [], []
    readers = _reader_hook_names(graph)
    width = int(prompts.position.max()) + 1
    bytes_per_example = (3 if per_example else 2) * activation_bytes(graph, 1, width, bridge.cfg.d_model)
    if per_example:  # the gradient at every reader input, summed over the interpolation points
        bytes_per_example += graph.n_readers * width * bridge.cfg.d_model * 4
    batch_size = max(1, min(batch_size, max_bytes // bytes_per_example))
    examples = (torch.zeros((len(prompts), graph.n_writers, graph.n_readers), dtype=torch.float32, device=device)
                if per_example else None)
    first = 0
    n_batches = -(-len(prompts) // batch_size)
    progress = Progress(f"edge attribution ({len(alphas)} interpolation point(s), {graph.n_edges} edges)",
                        n_batches * len(alphas), "backward passes")
    for batch in prompts.chunks(batch_size):
        buf, logits = writer_outputs(bridge, graph, batch.clean)
        clean_vals.append(batch.metric_values(logits))
        e_clean = buf[0].clone()
        _, logits = writer_outputs(bridge, graph, batch.corrupted, out=buf, subtract=True)  # buf = a − a'
        corr_vals.append(batch.metric_values(logits))
        e_corr = e_clean - buf[0]
        delta = buf.neg_().flatten(1)  # Δa = a(corrupted) − a(clean), [W, batch·pos·d], in place
        grad_sum: dict[str, torch.Tensor] = {}  # reader hook -> Σ_α gradient, [batch, pos·d, head] (per_example)

        def bwd(name: str, n_up: int, cols: list[int]):
            def f(grad, hook):
                g = grad.float()
                if g.ndim == 4:  # [batch, pos, head, d] -> [batch·pos·d, head]
                    g = g.permute(0, 1, 3, 2).reshape(-1, g.shape[2])
                else:
                    g = g.reshape(-1, 1)
                scores[:n_up, cols[0] : cols[-1] + 1] += delta[:n_up] @ g
                if per_example:  # the per-example contraction waits for the sum over α (one bmm, not m)
                    g = g.view(len(batch), -1, g.shape[1])
                    if name in grad_sum:
                        grad_sum[name] += g
                    else:
                        grad_sum[name] = g.clone()
            return f

        bwd_hooks = [(name, bwd(name, n_up, cols)) for name, n_up, cols in readers]
        for alpha in alphas:
            emb = (e_corr + alpha * (e_clean - e_corr)).to(dtype).requires_grad_(True)
            with torch.enable_grad(), bridge.hooks(fwd_hooks=[("hook_embed", lambda x, hook: emb)],
                                                   bwd_hooks=bwd_hooks):
                logits = bridge(batch.clean)
                batch.metric_values(logits).sum().backward()
            progress.update()
        if per_example:  # [batch, n_up, pos·d] @ [batch, pos·d, head], per reader hook
            b = len(batch)
            delta_ex = delta.view(graph.n_writers, b, -1).transpose(0, 1).contiguous()  # [batch, W, pos·d]
            for name, n_up, cols in readers:
                examples[first : first + b, :n_up, cols[0] : cols[-1] + 1] += torch.bmm(delta_ex[:, :n_up],
                                                                                         grad_sum.pop(name))
            first += b
    scores /= len(prompts) * len(alphas)
    out = scores.cpu().numpy()
    out[~graph.edge_mask] = np.nan
    if examples is not None:
        examples /= len(alphas)
        examples = examples.cpu().numpy()
        examples[:, ~graph.edge_mask] = np.nan
    clean_all = torch.cat(clean_vals)
    return Attribution(out, float(clean_all.mean()), float(torch.cat(corr_vals).mean()),
                       clean_all.cpu().numpy(), examples)


def _reader_input_hooks(graph: Graph, store: dict) -> list:
    """Forward hooks recording each reader group's input (unpatched run): ``store[name]`` ``[batch, pos, d]``
    (one copy for the q/k/v inputs, which are the same residual stream for every head)."""

    def rec(name):
        def f(x, hook):
            store[name] = (x[:, :, 0] if x.ndim == 4 else x).detach().float()
        return f

    return [(name, rec(name)) for name, _, _ in _reader_hook_names(graph)]


def _patch_hook(name: str, n_up: int, cols: list[int], kept: torch.Tensor, cur: torch.Tensor, a_corr: torch.Tensor,
                in_corr: dict[str, torch.Tensor], form: str | None):
    """Forward hook replacing reader group ``cols`` (one hook point, ``n_up`` upstream writers) by its patched
    input for ``C`` stacked masks (see :func:`patched_metric`).

    Args:
        kept: ``[C, n_writers, n_readers]`` float 0/1 masks.
        cur: ``[n_writers, C·B, pos, d_model]`` writer outputs of the running (patched) forward, filled by the
            writer hooks before a reader reads them.
        a_corr: ``[n_writers, B, pos, d_model]`` writer outputs of the corrupted run.
        in_corr: corrupted-run reader inputs ``[B, pos, d_model]`` by hook name.
        form: ``"keep"``, ``"drop"`` or None (the one touching fewer writers).
    """
    C = kept.shape[0]
    B, P, d_model = a_corr.shape[1:]
    r = len(cols)
    k_sub = kept[:, :n_up, cols[0] : cols[-1] + 1]  # [C, w, r]
    d_sub = 1.0 - k_sub
    uses_keep = k_sub.amax(dim=(0, 2)) > 0
    uses_drop = d_sub.amax(dim=(0, 2)) > 0
    keep_form = int(uses_keep.sum()) <= int(uses_drop.sum()) if form is None else form == "keep"
    w_idx = torch.nonzero(uses_keep if keep_form else uses_drop).flatten()
    coef = (k_sub if keep_form else d_sub)[:, w_idx]  # [C, k, r]

    def correction() -> torch.Tensor:  # Σ_u coef[c,u,r] (a_u(current) − a_u(corrupted)) -> [C, r, B, P, d]
        diff = cur[w_idx].view(len(w_idx), C, -1) - a_corr[w_idx].view(len(w_idx), 1, -1)
        return torch.einsum("cwr,wcx->crx", coef, diff).view(C, r, B, P, d_model)

    def hook(x, hook):
        if keep_form:
            base = in_corr[name].unsqueeze(0).expand(C, B, P, d_model)
            new = base.unsqueeze(1) + correction() if len(w_idx) else base.unsqueeze(1).expand(C, r, B, P, d_model)
        else:
            if not len(w_idx):
                return None
            xs = x.view(C, B, P, r, d_model).permute(0, 3, 1, 2, 4) if x.ndim == 4 else x.view(C, 1, B, P, d_model)
            new = xs.float() - correction()
        if x.ndim == 4:  # [C·B, P, head, d]
            return new.permute(0, 2, 3, 1, 4).reshape(C * B, P, r, d_model).to(x.dtype)
        return new[:, 0].reshape(C * B, P, d_model).to(x.dtype)
    return hook


def patched_metric(bridge, graph: Graph, prompts: Prompts, keep: torch.Tensor, batch_size: int,
                   max_bytes: int = 2 << 30, form: str | None = None, skip_trivial: bool = True) -> torch.Tensor:
    """Mean task metric with every edge *not* in ``keep`` patched to its corrupted value, for many masks.

    For mask ``c`` and each reader ``v``: ``in_v ← in_v − Σ_{u: keep[c,u,v]=0} (a_u(current) − a_u(corrupted))``
    (reference.md §3.3), computed in whichever of two equal forms touches fewer writers: that one, or
    ``in_v ← in_v(corrupted) + Σ_{u: keep[c,u,v]=1} (a_u(current) − a_u(corrupted))`` (the reader input is the
    sum of its upstream writers' outputs plus constant biases), which costs only the circuit's own edges.
    The corrupted forward runs once per batch and is reused for every mask; masks are stacked along the batch,
    as many per forward as ``max_bytes`` allows. With ``skip_trivial`` a mask keeping every edge is the clean
    run and one keeping none the corrupted run, without a patched forward.

    Args:
        keep: ``[n_masks, n_writers, n_readers]`` bool (or 0/1): True keeps the edge clean. Entries that are
            not edges are ignored.
        batch_size: examples per forward pass (before stacking masks).
        max_bytes: budget for the stacked writer buffer ``n_masks·batch·pos·n_writers·d_model·4`` bytes.
        form: force ``"keep"`` or ``"drop"`` (for tests); by default the cheaper one per reader group.
        skip_trivial: take the all-kept and all-dropped masks from the plain clean and corrupted runs (False
            sends them through the patching hooks too, for tests).

    Returns:
        ``[n_masks]`` float32: mean metric over examples for each mask (m(C) of design §5).

    Raises:
        ValueError: if ``keep`` does not have shape ``[n_masks, n_writers, n_readers]``.
    """
    if keep.ndim != 3 or tuple(keep.shape[1:]) != (graph.n_writers, graph.n_readers):
        raise ValueError(f"keep must be [n_masks, {graph.n_writers}, {graph.n_readers}]; got {tuple(keep.shape)}")
    device = _device(bridge)
    edges = torch.as_tensor(graph.edge_mask, device=device)
    keep_all = keep.to(device=device, dtype=torch.bool) & edges  # [C, W, R]
    n_kept = keep_all.flatten(1).sum(1)
    full, empty = n_kept == graph.n_edges, n_kept == 0
    if not skip_trivial:
        full, empty = torch.zeros_like(full), torch.zeros_like(empty)
    patched = torch.nonzero(~full & ~empty).flatten().tolist()
    total = torch.zeros(keep_all.shape[0], dtype=torch.float32, device=device)
    readers = _reader_hook_names(graph)
    d_model = bridge.cfg.d_model
    for batch in prompts.chunks(batch_size):
        in_corr: dict[str, torch.Tensor] = {}
        a_corr = torch.empty((graph.n_writers, *batch.corrupted.shape, d_model), dtype=torch.float32, device=device)
        record = _writer_hooks(graph, a_corr) + _reader_input_hooks(graph, in_corr)
        with torch.no_grad(), bridge.hooks(fwd_hooks=record):
            total[empty] += batch.metric_values(bridge(batch.corrupted)).sum()
        if bool(full.any()):
            with torch.no_grad():
                total[full] += batch.metric_values(bridge(batch.clean)).sum()
        B, P = batch.clean.shape
        per_mask = graph.n_writers * B * P * d_model * 4
        step = max(1, min(len(patched), max_bytes // max(1, per_mask)))
        for c0 in range(0, len(patched), step):
            ids = patched[c0 : c0 + step]
            kept = keep_all[ids].float()  # [C, W, R]
            C = len(ids)
            cur = torch.empty((graph.n_writers, C * B, P, d_model), dtype=torch.float32, device=device)
            hooks = _writer_hooks(graph, cur) + [(name, _patch_hook(name, n_up, cols, kept, cur, a_corr, in_corr, form))
                                                 for name, n_up, cols in readers]
            rep = lambda t: t.repeat(C, *([1] * (t.ndim - 1)))  # noqa: E731
            with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
                logits = bridge(rep(batch.clean))
            vals = example_metric(logits, rep(batch.position), rep(batch.answer_ids), rep(batch.flags), batch.metric)
            total[ids] += vals.view(C, B).sum(1)
    return total / len(prompts)


def exact_scores(bridge, graph: Graph, prompts: Prompts, batch_size: int, max_bytes: int = 2 << 30) -> np.ndarray:
    """Exact activation patching of every edge: ``M(edge u→v corrupted) − M(model)``, one edge at a time.

    The ground truth the gradient methods approximate; costs one forward per edge (batched along the batch).

    Returns:
        ``[n_writers, n_readers]`` float32 numpy, NaN where there is no edge.
    """
    src, dst = graph.edge_index
    base = patched_metric(bridge, graph, prompts, torch.ones((1, graph.n_writers, graph.n_readers), dtype=torch.bool),
                          batch_size, max_bytes)[0]
    out = np.full((graph.n_writers, graph.n_readers), np.nan, dtype=np.float32)
    chunk = 256
    progress = Progress(f"exact patching of {len(src)} edges", len(src), "edges")
    for s in range(0, len(src), chunk):
        e = min(s + chunk, len(src))
        keep = torch.ones((e - s, graph.n_writers, graph.n_readers), dtype=torch.bool)
        keep[torch.arange(e - s), torch.as_tensor(src[s:e]), torch.as_tensor(dst[s:e])] = False
        patched = patched_metric(bridge, graph, prompts, keep, batch_size, max_bytes)
        out[src[s:e], dst[s:e]] = (patched - base).cpu().numpy()
        progress.update(e - s)
    return out


def score_edges(bridge, graph: Graph, prompts: Prompts, method: str, ig_steps: int, convention: str,
                batch_size: int) -> np.ndarray:
    """Every edge's score by ``method`` (one of :data:`METHODS`): :func:`edge_attribution` at
    :func:`interpolation_points` for EAP and EAP-IG, :func:`exact_scores` for exact patching.

    Returns:
        ``[n_writers, n_readers]`` float32, NaN off the edge mask (units and sign: module docstring).

    Raises:
        ValueError: naming the valid methods, for an unknown one (and see :func:`interpolation_points`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {list(METHODS)}")
    if method == "exact":
        return exact_scores(bridge, graph, prompts, batch_size)
    return edge_attribution(bridge, graph, prompts, interpolation_points(method, ig_steps, convention),
                            batch_size).scores
