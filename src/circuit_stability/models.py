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

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from circuit_stability.checkpoints import pythia_schedule

# Model dtypes by name (each the name of a torch dtype). torch is imported where a model is loaded, not here: the
# workflow imports this module to plan, and every Snakefile parse (each `snakemake` command, two per SLURM job)
# would otherwise pay for importing torch (~1 s of CPU).
DTYPES = ("float32", "bfloat16", "float16", "float64")
HUB_PREFIX = "EleutherAI/pythia-"
PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
# PolyPythias (van der Wal et al. 2025, §2; the models' cards on the hub): pythia-{size}-seed{1..9} for five sizes,
# and for 160m only pythia-160m-data-seed{1..3} (data order varied) and -weight-seed{1..3} (initialisation varied);
# the same 154 checkpoints as Pythia, as revisions step{N}.
POLYPYTHIAS_SIZES = ("14m", "31m", "70m", "160m", "410m")
POLYPYTHIAS_SEEDS = range(1, 10)
POLYPYTHIAS_DECOUPLED = {"160m": range(1, 4)}  # -data-seed{k}, -weight-seed{k}
# Checkpoints absent from the hub (no step<N> branch upstream); skipped, with a
# warning naming them, wherever a study lists all checkpoints.
HUB_MISSING = {
    "EleutherAI/pythia-410m-seed9": (40000,),
    "EleutherAI/pythia-410m-seed6": (88000,),
    "EleutherAI/pythia-410m-seed2": (111000,),
}
_HUB_NAME = re.compile(r"^EleutherAI/pythia-(?P<size>[0-9.]+[mb])"
                       r"(?:(?P<deduped>-deduped)|-(?:(?P<kind>data|weight)-)?seed(?P<seed>\d+))?$")


@dataclass(frozen=True)
class HubModel:
    """A parsed hub name: Pythia ``EleutherAI/pythia-<size>[-deduped]`` or PolyPythias
    ``EleutherAI/pythia-<size>-seed<k>``, ``-data-seed<k>``, ``-weight-seed<k>``. ``seed_kind`` is ``None``
    (original Pythia, seed 1234), ``"both"``, ``"data"`` or ``"weight"``."""

    name: str
    size: str
    deduped: bool
    seed_kind: str | None
    seed: int | None


def parse_hub_name(name: str) -> HubModel:
    """Parse and check a Pythia or PolyPythias hub name.

    Raises:
        ValueError: naming the model and what is valid (sizes; PolyPythias seeds 1-9 for 14m-410m, data and
            weight seeds 1-3 for 160m).
    """
    m = _HUB_NAME.match(name)
    if not m:
        raise ValueError(f"unknown hub model {name!r}; valid: {HUB_PREFIX}<size>[-deduped], PolyPythias "
                         f"{HUB_PREFIX}<size>-seed<k>, {HUB_PREFIX}160m-data-seed<k>, {HUB_PREFIX}160m-weight-seed<k>")
    size = m["size"]
    if size not in PYTHIA_SIZES:
        raise ValueError(f"unknown Pythia model {name!r}; valid sizes: {list(PYTHIA_SIZES)}")
    kind = None if m["seed"] is None else (m["kind"] or "both")
    seed = None if m["seed"] is None else int(m["seed"])
    if kind == "both" and (size not in POLYPYTHIAS_SIZES or seed not in POLYPYTHIAS_SEEDS):
        raise ValueError(f"{name!r} is not a PolyPythias model: seeds {POLYPYTHIAS_SEEDS[0]}-{POLYPYTHIAS_SEEDS[-1]} "
                         f"exist for sizes {list(POLYPYTHIAS_SIZES)}")
    if kind in ("data", "weight") and seed not in POLYPYTHIAS_DECOUPLED.get(size, ()):
        raise ValueError(f"{name!r} is not a PolyPythias model: {kind}-seed<k> exists only as "
                         + ", ".join(f"{HUB_PREFIX}{s}-{kind}-seed{r[0]}..{r[-1]}" for s, r in POLYPYTHIAS_DECOUPLED.items()))
    return HubModel(name, size, m["deduped"] is not None, kind, seed)


def hub_revision(name: str, step: int) -> str:
    """The hub revision (git branch) of checkpoint ``step`` of a Pythia or PolyPythias model: ``step<step>``
    (Biderman et al. 2023, App. "Checkpoints"; the PolyPythias cards).

    Raises:
        ValueError: for an unknown name (:func:`parse_hub_name`), a step outside Pythia's 154 checkpoints, or a
            checkpoint known to be missing upstream (:data:`HUB_MISSING`).
    """
    parse_hub_name(name)
    if step not in pythia_schedule():
        raise ValueError(f"{name} has no checkpoint at step {step}; valid steps are 0, 1, 2, 4, …, 512, "
                         f"then every 1000 up to 143000")
    if step in HUB_MISSING.get(name, ()):
        raise ValueError(f"{name} step {step} is missing upstream (known gap in the PolyPythias release); valid "
                         f"steps: Pythia's 154 but {list(HUB_MISSING[name])}")
    from circuit_stability.revisions import SCHEMES

    return SCHEMES["pythia"].template.format(step=step)  # step<N>, the one naming of Pythia's revisions


def hub_family(name: str) -> str:
    """The checkpoint family of hub repository ``name`` (a key of :data:`circuit_stability.revisions.SCHEMES`),
    after checking the name: Pythia and PolyPythias names as :func:`parse_hub_name`, another family's repository by
    its revision scheme (CRFM GPT-2, OLMo, SmolLM2, Amber; docs/architectures.md).

    Raises:
        ValueError: a Pythia name that is not one, or a repository of no known family (naming the families).
        NotImplementedError: an OLMo 2 repository, saying why (:data:`circuit_stability.graph.NOT_ADDITIVE`).
    """
    if name.startswith(HUB_PREFIX):
        parse_hub_name(name)
        return "pythia"
    from circuit_stability.graph import NOT_ADDITIVE
    from circuit_stability.revisions import scheme_of

    family = scheme_of(name).name
    if family in NOT_ADDITIVE:
        raise NotImplementedError(f"{name}: {NOT_ADDITIVE[family]}")
    return family


def checkpoint_revision(name: str, step: int, refs=None) -> str:
    """The hub revision of checkpoint ``step`` of hub repository ``name``, any family: Pythia's
    (:func:`hub_revision`, checked against its 154 steps), else the family's revision scheme
    (:func:`circuit_stability.revisions.revision_of`: formatted from the step, or, for OLMo's names that carry
    the tokens too, found among ``refs`` or the Hugging Face cache).

    Raises:
        ValueError, NotImplementedError: as :func:`hub_family`; ValueError for a step Pythia does not have.
        LookupError: no revision of that step (:func:`circuit_stability.revisions.revision_of`).
    """
    if hub_family(name) == "pythia":
        return hub_revision(name, step)
    from circuit_stability.revisions import revision_of

    return revision_of(name, step, refs)


def checkpoint_revisions(name: str, steps: list[int]) -> dict[int, str]:
    """``{step: revision}`` of hub repository ``name`` (:func:`checkpoint_revision`), listing the repository's
    branches and tags on the hub first (one request) only where the family's names carry more than the step
    (OLMo's tokens seen): what a job that may use the network (download, audit) calls.

    Raises:
        ValueError, NotImplementedError, LookupError: as :func:`checkpoint_revision`.
        ConnectionError: the hub could not be reached to list an OLMo repository's revisions
            (:func:`circuit_stability.revisions.list_refs`).
    """
    from circuit_stability.revisions import list_refs, scheme_of

    refs = None
    if hub_family(name) != "pythia" and scheme_of(name).template is None:
        refs = list_refs(name)
    return {s: checkpoint_revision(name, s, refs) for s in steps}


def hub_steps(name: str, steps: list[int], warn=None) -> list[int]:
    """``steps`` without the checkpoints of ``name`` known to be missing upstream (:data:`HUB_MISSING`); the
    skipped ones are named in one message passed to ``warn`` (default :func:`warnings.warn`, a ``UserWarning``;
    the Snakefile passes Snakemake's logger)."""
    missing = [s for s in steps if s in HUB_MISSING.get(name, ())]
    if missing:
        message = (f"{name}: skipping checkpoint step(s) {missing}, missing upstream (known gap in the PolyPythias "
                   "release)")
        if warn is None:
            warnings.warn(message, stacklevel=2)
        else:
            warn(message)
    return [s for s in steps if s not in missing]


class CorruptCheckpointError(RuntimeError):
    """A local checkpoint folder whose weights cannot be read (a truncated or partly copied file, or none)."""


def check_weights_readable(folder: Path, model: str) -> None:
    """Open the header of every ``*.safetensors`` file in checkpoint ``folder`` (a few KB: no weights are read;
    safetensors checks that the file covers every tensor the header lists).

    Raises:
        CorruptCheckpointError: naming the folder, the file, safetensors' reason and the remedy, if a file is
            truncated or corrupt, or if the folder holds no weights file at all.
    """
    from safetensors import SafetensorError, safe_open

    remedy = (f"delete {folder} and run the workflow again: it rebuilds the checkpoint (a suite model is retrained, "
              f"`models/{model}` being its training job's output; a hub checkpoint is downloaded again)")
    files = sorted(folder.glob("*.safetensors"))
    if not files and not any(folder.glob("pytorch_model*.bin")):
        raise CorruptCheckpointError(f"checkpoint {folder} has a config.json but no weights file (model.safetensors): "
                                     f"{remedy}")
    for f in files:
        try:
            with safe_open(f, "pt"):
                pass
        except SafetensorError as e:
            raise CorruptCheckpointError(f"checkpoint {folder}: {f.name} cannot be read ({e}): the file is truncated "
                                         f"or corrupt; {remedy}") from e


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
        model: a suite member name (looked up under ``suite_dir``), a hub name ``EleutherAI/pythia-<size>``
            (optionally with ``-deduped``) or a PolyPythias name (:func:`parse_hub_name`), or a repository of another
            family with published checkpoints (:func:`hub_family`; its steps are checked when it is downloaded).
        step: training step.
        suite_dir: folder of the local suite (``models/`` by default).

    Raises:
        ValueError: naming the model or step and listing the valid ones.
        NotImplementedError: an OLMo 2 repository (:func:`hub_family`).
        CorruptCheckpointError: if a local checkpoint's weights file is truncated, corrupt or missing
            (:func:`check_weights_readable`).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if "/" in model:  # a hub repository (a suite member's name has no "/")
        if hub_family(model) == "pythia":
            hub_revision(model, step)  # checks the step too: Pythia's checkpoints are known offline
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
    check_weights_readable(folder, model)
    return Checkpoint(model, step, folder)


def load_model(model: str, step: int, suite_dir: str | Path | None = None, device: str | None = None,
               dtype: str = "float32"):
    """Load ``(model, step)`` as a ``TransformerBridge`` with the hooks edge patching needs.

    Args:
        model, step, suite_dir: see :func:`resolve_checkpoint`; a hub repository of another family than Pythia
            (:func:`hub_family`) is read at its revision of ``step`` (:func:`checkpoint_revision`).
        device: torch device string; default CUDA when available, else CPU.
        dtype: one of :data:`DTYPES`.

    Returns:
        ``transformer_lens.model_bridge.TransformerBridge`` in eval mode with ``requires_grad=False``
        parameters; ``bridge.tokenizer`` is the checkpoint's tokenizer.

    Raises:
        ValueError: unknown model, step or dtype (before any loading).
        CorruptCheckpointError: a local checkpoint's weights file is truncated, corrupt or missing.
        OSError: from Hugging Face when a hub checkpoint cannot be downloaded.
        LookupError: an OLMo checkpoint whose revision is neither formatted from the step nor in the cache.
        RuntimeError: if the hooked reader inputs are not the pre-LayerNorm residual or not the sum of their
            upstream writers (:func:`check_reader_inputs`).
        NotImplementedError: for an architecture whose head outputs are not additive (OLMo 2,
            :data:`circuit_stability.graph.NOT_ADDITIVE`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {list(DTYPES)}")
    ckpt = resolve_checkpoint(model, step, suite_dir)
    import torch
    from transformer_lens.model_bridge import TransformerBridge  # slow import (~4 s): only when loading

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if ckpt.is_local:
        bridge = TransformerBridge.boot_transformers(str(ckpt.path), device=device, dtype=getattr(torch, dtype))
    else:
        bridge = TransformerBridge.boot_transformers(ckpt.model, device=device, dtype=getattr(torch, dtype),
                                                     revision=checkpoint_revision(ckpt.model, ckpt.step))
    return prepare_bridge(bridge)


def prepare_bridge(bridge):
    """Make any TransformerLens 4 ``TransformerBridge`` ready for edge attribution and patching, in place: eval mode,
    frozen parameters (no parameter gradients are ever allocated), and the hook points the engine reads switched on
    — per-head query/key/value inputs (``blocks.{l}.hook_{q,k,v}_input``, ``[batch, pos, H or K, d_model]``),
    per-head outputs (``blocks.{l}.attn.hook_result``, ``[batch, pos, H, d_model]``) and ``blocks.{l}.hook_mlp_in``
    — then checked on two probes against the model's graph (:func:`check_reader_inputs`). For a bridge booted from
    any supported architecture (GPT-NeoX, GPT-2, Llama, OLMo), e.g. ``TransformerBridge.boot_transformers(name)``.

    Returns:
        The same bridge.

    Raises:
        NotImplementedError: for an architecture whose head outputs are not additive (OLMo 2).
        RuntimeError: if a hooked reader input is not what the engine assumes (:func:`check_reader_inputs`).
    """
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_attn_result(True)
    bridge.set_use_hook_mlp_in(True)
    check_reader_inputs(bridge)
    return bridge


def check_reader_inputs(bridge, graph=None, n_positions: int = 6) -> None:
    """Check on two probes that the hooks edge patching reads are what the engine assumes (design §5), for the
    model's own graph (:meth:`Graph.from_config` of ``bridge.cfg`` when ``graph`` is None):

    1. block 0's query, key and value inputs (``blocks.0.hook_{q,k,v}_input``, ``[batch, pos, H or K, d_model]``)
       are the residual stream *before* the layer norm (``blocks.0.hook_resid_pre``: the token embedding, plus the
       learned position embedding where the model has one), for every head;
    2. every reader input is the sum of its upstream writers' outputs plus terms that do not depend on the input
       tokens (biases, position embeddings): between the two probes, Δ(input of reader v) = Σ_{u → v} Δa_u for every
       reader hook of every layer, writers as the engine records them (``hook_embed``, ``attn.hook_result``,
       ``hook_mlp_out``), to 1e-4 of the input's scale (8 machine epsilons of the model's dtype where that is
       larger: 0.03 in bfloat16). This is what patching ``in_v ← in_v − a_u + a_u'`` needs, and it fails when the
       graph does not describe the model (sequential blocks taken as parallel: an MLP also reads its own layer's
       heads) or when a sublayer's output is normalised before the residual.

    TransformerLens only captures the pre-LayerNorm residual for split q/k/v inputs when its hooks are wired
    as expected; otherwise it silently hands the hook a post-LN tensor, and every score and patch would be wrong.

    Raises:
        RuntimeError: naming the hook and the largest difference, if a check fails.
        NotImplementedError: for an architecture :meth:`Graph.from_config` refuses (OLMo 2).
    """
    import torch

    from circuit_stability.attribution import _reader_hook_names, _reader_input_hooks, _writer_hooks
    from circuit_stability.graph import Graph

    graph = graph if graph is not None else Graph.from_config(bridge.cfg)
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(x, hook):
            seen[name] = x.detach().float()
        return hook

    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_q_input", "blocks.0.hook_k_input", "blocks.0.hook_v_input",
             "blocks.0.hook_mlp_in"]
    device = next(bridge.parameters()).device
    probes = [(torch.arange(n_positions, device=device) * k % bridge.cfg.d_vocab).unsqueeze(0) for k in (1, 3)]
    writers, readers = [], []
    for tokens in probes:
        buf = torch.empty((graph.n_writers, 1, n_positions, bridge.cfg.d_model), dtype=torch.float32, device=device)
        store: dict[str, torch.Tensor] = {}
        with torch.no_grad(), bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names] + _writer_hooks(graph, buf)
                                           + _reader_input_hooks(graph, store)):
            bridge(tokens)
        writers.append(buf)
        readers.append(store)
        missing = [n for n in names if n not in seen]
        if missing:
            raise RuntimeError(f"hook point(s) {missing} did not fire on a probe forward: this bridge cannot be "
                               "patched edge by edge")
        resid = seen["blocks.0.hook_resid_pre"]
        tol = 1e-5 * max(1.0, float(resid.abs().max()))
        for name in names[1:4]:
            x = seen[name]
            diff = float((x - resid.unsqueeze(2)).abs().max())
            if diff > tol:
                raise RuntimeError(f"{name} is not the pre-LayerNorm residual stream at layer 0 (max |difference| "
                                   f"from blocks.0.hook_resid_pre = {diff:.3g} > {tol:.3g}): reader inputs must be the "
                                   "residual stream before the layer norm for edge attribution and patching to be "
                                   "correct")
    delta = writers[1] - writers[0]  # [W, 1, pos, d]
    # the residual stream is accumulated in the model's dtype: bfloat16 rounds each sum to ~0.4%
    rel = max(1e-4, 8 * torch.finfo(next(bridge.parameters()).dtype).eps)
    for name, n_up, _ in _reader_hook_names(graph):
        got = readers[1][name] - readers[0][name]
        want = delta[:n_up].sum(0)
        tol = rel * max(1.0, float(readers[1][name].abs().max()))
        diff = float((got - want).abs().max())
        if diff > tol:
            raise RuntimeError(f"{name}: the change of this reader input between two probes differs from the summed "
                               f"change of its {n_up} upstream writers by {diff:.3g} (> {tol:.3g}): the graph {graph} "
                               "does not describe this model (e.g. sequential blocks taken as parallel, or a sublayer "
                               "output normalised before the residual), so edge patching would be wrong")
