"""Derived suite members: a planted, function-preserving hand-over that no analysis can fake (issue 28).

A derived member is not trained: its checkpoints are its source member's, and from a given step on the attention
heads of one layer are permuted. Attention heads are interchangeable in a transformer's function (each head's
output is added into the residual stream: Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits", §2), so the permuted model computes exactly the same function as the source, up to float rounding of
a reordered sum. Every analysis therefore has a known answer on it: behaviour equal to the source's, head scores,
EAP-IG scores and path-patching effects equal after relabelling the heads, and from the permutation step on,
every role held by a permuted head "handed over" to the head it moved to, and nothing else.

GPT-NeoX (Hugging Face ``GPTNeoXAttention``) stores one layer's heads in two fused matrices:

- ``attention.query_key_value`` (weight ``[3 · d_model, d_model]``, bias ``[3 · d_model]``): its output is viewed
  as ``[n_heads, 3 · d_head]``, so head ``h`` owns rows ``h · 3 d_head … (h + 1) · 3 d_head`` (its query, key and
  value rows, in that order);
- ``attention.dense`` (weight ``[d_model, d_model]``): it reads the heads' outputs concatenated, so head ``h``
  owns input columns ``h · d_head … (h + 1) · d_head``; its bias is added once, after the sum over heads, and is
  no head's (it stays).

Permuting with ``order`` makes new head ``i`` the old head ``order[i]``: the rows and columns of old head
``order[i]`` move to position ``i``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from circuit_stability.artifacts import atomic_dir

# torch is imported where it is used: the config check imports check_order while the workflow is planned, which
# must not load torch (tests/test_config.py, "planning imports no torch")


def check_order(order: list[int], n_heads: int) -> None:
    """Raise ValueError unless ``order`` is a permutation of ``0 … n_heads − 1`` that moves at least one head."""
    if sorted(order) != list(range(n_heads)):
        raise ValueError(f"permute_heads.order {order} is not a permutation of the {n_heads} heads "
                         f"0..{n_heads - 1} (each index exactly once)")
    if list(order) == list(range(n_heads)):
        raise ValueError(f"permute_heads.order {order} is the identity: it moves no head")


def permute_heads(state: dict[str, torch.Tensor], layer: int, order: list[int], n_heads: int,
                  prefix: str = "gpt_neox.layers") -> dict[str, torch.Tensor]:
    """The state dict of a GPT-NeoX model with the attention heads of ``layer`` permuted (module docstring).

    Args:
        state: parameter name → tensor (Hugging Face ``GPTNeoXForCausalLM`` names); left unchanged.
        layer: 0-based layer index.
        order: new head ``i`` is old head ``order[i]`` (a permutation of ``range(n_heads)``).
        n_heads: heads per layer.
        prefix: the layers' name prefix.

    Returns:
        A new state dict: the layer's ``attention.query_key_value.weight`` ``[3 d_model, d_model]`` and ``.bias``
        ``[3 d_model]`` with their per-head row blocks reordered, ``attention.dense.weight`` ``[d_model, d_model]``
        with its per-head column blocks reordered; every other tensor the same object.

    Raises:
        ValueError: if ``order`` is not a non-identity permutation of the heads, or the layer has no such
            parameters (wrong layer index or prefix).
    """
    import torch

    check_order(order, n_heads)
    qkv_w, qkv_b = f"{prefix}.{layer}.attention.query_key_value.weight", f"{prefix}.{layer}.attention.query_key_value.bias"
    dense_w = f"{prefix}.{layer}.attention.dense.weight"
    if qkv_w not in state or dense_w not in state:
        raise ValueError(f"no attention parameters for layer {layer} ({qkv_w}); the model has "
                         f"{sum(k.endswith('attention.dense.weight') for k in state)} layers")
    d_model = state[dense_w].shape[0]
    d_head = d_model // n_heads
    idx = torch.as_tensor(order)
    rows = (idx[:, None] * 3 * d_head + torch.arange(3 * d_head)).reshape(-1)  # [3 d_model]
    cols = (idx[:, None] * d_head + torch.arange(d_head)).reshape(-1)  # [d_model]
    out = dict(state)
    out[qkv_w] = state[qkv_w][rows].contiguous()
    if qkv_b in state:
        out[qkv_b] = state[qkv_b][rows].contiguous()
    out[dense_w] = state[dense_w][:, cols].contiguous()
    return out


def relabel(head: int, order: list[int]) -> int:
    """The derived model's index of the source model's head ``head`` of the permuted layer (the ``i`` with
    ``order[i] == head``)."""
    return list(order).index(head)


def relabel_node(name: str, layer: int, order: list[int]) -> str:
    """The derived model's name of the source model's graph node ``name`` (``a{l}.h{h}``, or a head's input
    ``a{l}.h{h}<q|k|v>``): a head of ``layer`` takes its new index (:func:`relabel`); every other node (other
    layers, MLPs ``m{l}``, ``input``, ``logits``) keeps its name."""
    m = re.fullmatch(r"a(\d+)\.h(\d+)(<[qkv]>)?", name)
    if not m or int(m.group(1)) != layer:
        return name
    return f"a{layer}.h{relabel(int(m.group(2)), order)}{m.group(3) or ''}"


def derive_model(source: str | Path, out: str | Path, steps: list[int], layer: int, order: list[int],
                 from_step: int) -> None:
    """Write the derived member's checkpoints: ``out/step{s}`` is ``source/step{s}`` for ``s < from_step`` and
    that checkpoint with the heads of ``layer`` permuted (:func:`permute_heads`) from ``from_step`` on. Each
    folder is written atomically; config and tokenizer files are copied.

    Raises:
        ValueError: as :func:`permute_heads`, or if ``from_step`` is not one of ``steps``.
    """
    from safetensors.torch import load_file, save_file

    if from_step not in steps:
        raise ValueError(f"from_step {from_step} is not a checkpoint step; valid: {steps}")
    source, out = Path(source), Path(out)
    n_heads = json.loads((source / f"step{from_step}" / "config.json").read_text())["num_attention_heads"]
    for step in steps:
        with atomic_dir(out / f"step{step}") as tmp:
            for f in (source / f"step{step}").iterdir():
                if f.name != "model.safetensors" or step < from_step:  # before from_step: the source's bytes
                    shutil.copy2(f, tmp / f.name)
            if step >= from_step:
                state = permute_heads(load_file(source / f"step{step}" / "model.safetensors"), layer, order, n_heads)
                save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})


__all__ = ["check_order", "permute_heads", "relabel", "derive_model"]
