"""Load a (model, checkpoint step) as a TransformerLens 4 ``TransformerBridge`` ready for edge patching.

One code path for both sources (design §2):

- a local suite: ``<suite_dir>/<model>/step<step>/`` (a Hugging Face folder written by the embedded suite);
- the hub: a name such as ``EleutherAI/pythia-160m`` with ``checkpoint_value=step`` (Pythia's revision
  ``step<step>``). This needs network access to the hub (or a filled ``HF_HOME`` cache).

The bridge is returned in eval mode, with frozen parameters (no parameter gradients are ever allocated) and
with the hook points edge attribution needs switched on: per-head query/key/value inputs
(``blocks.{l}.hook_{q,k,v}_input``, ``[batch, pos, head, d_model]``), per-head outputs
(``blocks.{l}.attn.hook_result``, ``[batch, pos, head, d_model]``) and ``blocks.{l}.hook_mlp_in``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from circuit_stability.checkpoints import pythia_schedule

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
HUB_PREFIX = "EleutherAI/pythia-"
PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: a local folder, or a hub name and training step."""

    model: str
    step: int
    path: Path | None  # local folder, or None for the hub

    @property
    def is_local(self) -> bool:
        return self.path is not None


def local_steps(suite_dir: str | Path, model: str) -> list[int]:
    """Steps saved for ``model`` in a local suite folder (sorted)."""
    root = Path(suite_dir) / model
    return sorted(int(p.name[4:]) for p in root.glob("step*") if p.name[4:].isdigit() and (p / "config.json").exists())


def resolve_checkpoint(model: str, step: int, suite_dir: str | Path | None = None) -> Checkpoint:
    """Check that ``(model, step)`` exists, before any expensive work.

    Args:
        model: a suite member name (looked up under ``suite_dir``) or a hub name ``EleutherAI/pythia-<size>``
            (optionally with ``-deduped``).
        step: training step.
        suite_dir: folder of the local suite (``models/`` by default).

    Raises:
        ValueError: naming the model or step and listing the valid ones.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if model.startswith(HUB_PREFIX):
        size = model[len(HUB_PREFIX):].removesuffix("-deduped")
        if size not in PYTHIA_SIZES:
            raise ValueError(f"unknown Pythia model {model!r}; valid sizes: {list(PYTHIA_SIZES)}")
        if step not in pythia_schedule():
            raise ValueError(f"{model} has no checkpoint at step {step}; valid steps are 0, 1, 2, 4, …, 512, "
                             f"then every 1000 up to 143000")
        return Checkpoint(model, step, None)
    suite_dir = Path(suite_dir or "models")
    folder = suite_dir / model / f"step{step}"
    if not (folder / "config.json").exists():
        available = sorted(p.name for p in suite_dir.iterdir() if p.is_dir()) if suite_dir.is_dir() else []
        if model not in available:
            raise ValueError(f"unknown model {model!r}: not a hub name ({HUB_PREFIX}<size>) and not in "
                             f"suite folder {str(suite_dir)!r}, which holds {available}")
        raise ValueError(f"model {model!r} has no checkpoint at step {step} in {str(suite_dir)!r}; "
                         f"valid steps: {local_steps(suite_dir, model)}")
    return Checkpoint(model, step, folder)


def load_model(model: str, step: int, suite_dir: str | Path | None = None, device: str | None = None,
               dtype: str = "float32"):
    """Load ``(model, step)`` as a ``TransformerBridge`` with the hooks edge patching needs.

    Args:
        model, step, suite_dir: see :func:`resolve_checkpoint`.
        device: torch device string; default CUDA when available, else CPU.
        dtype: one of :data:`DTYPES`.

    Returns:
        ``transformer_lens.model_bridge.TransformerBridge`` in eval mode with ``requires_grad=False``
        parameters; ``bridge.tokenizer`` is the checkpoint's tokenizer.

    Raises:
        ValueError: unknown model, step or dtype (before any loading).
        OSError: from Hugging Face when a hub checkpoint cannot be downloaded.
        RuntimeError: if the hooked reader inputs are not the pre-LayerNorm residual (:func:`check_reader_inputs`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {list(DTYPES)}")
    ckpt = resolve_checkpoint(model, step, suite_dir)
    from transformer_lens.model_bridge import TransformerBridge  # slow import (~4 s): only when loading

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if ckpt.is_local:
        bridge = TransformerBridge.boot_transformers(str(ckpt.path), device=device, dtype=DTYPES[dtype])
    else:
        bridge = TransformerBridge.boot_transformers(ckpt.model, device=device, dtype=DTYPES[dtype],
                                                     checkpoint_value=ckpt.step)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_attn_result(True)
    bridge.set_use_hook_mlp_in(True)
    check_reader_inputs(bridge)
    return bridge


def check_reader_inputs(bridge, n_positions: int = 6) -> None:
    """Check on a probe that the hooks edge patching reads are what the engine assumes (design §5): block 0's
    query, key and value inputs (``blocks.0.hook_{q,k,v}_input``, ``[batch, pos, head, d_model]``) and MLP input
    (``blocks.0.hook_mlp_in``) equal the ``input`` node's output (``hook_embed``) for every head, i.e. they are
    the residual stream *before* the layer norm, and the embedding is the whole residual stream at layer 0 (no
    learned positional embedding: rotary models only).

    TransformerLens only captures the pre-LayerNorm residual for split q/k/v inputs when its hooks are wired
    as expected; otherwise it silently hands the hook a post-LN tensor, and every score and patch would be wrong.

    Raises:
        RuntimeError: naming the hook and the largest difference, if an input is not the embedding.
    """
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(x, hook):
            seen[name] = x.detach().float()
        return hook

    names = ["hook_embed", "blocks.0.hook_q_input", "blocks.0.hook_k_input", "blocks.0.hook_v_input",
             "blocks.0.hook_mlp_in"]
    device = next(bridge.parameters()).device
    tokens = (torch.arange(n_positions, device=device) % bridge.cfg.d_vocab).unsqueeze(0)
    with torch.no_grad(), bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
        bridge(tokens)
    missing = [n for n in names if n not in seen]
    if missing:
        raise RuntimeError(f"hook point(s) {missing} did not fire on a probe forward: this bridge cannot be patched "
                           "edge by edge")
    embed = seen["hook_embed"]
    tol = 1e-5 * max(1.0, float(embed.abs().max()))
    for name in names[1:]:
        x = seen[name]
        x = x if x.ndim == 4 else x.unsqueeze(2)  # [batch, pos, head or 1, d_model]
        diff = float((x - embed.unsqueeze(2)).abs().max())
        if diff > tol:
            raise RuntimeError(f"{name} is not the pre-LayerNorm residual stream at layer 0 (max |difference| from "
                               f"hook_embed = {diff:.3g} > {tol:.3g}): reader inputs must be the residual stream "
                               "before the layer norm for edge attribution and patching to be correct")
