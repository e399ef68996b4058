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
    return bridge
