"""What a job asks of a machine or a scheduler, as a function of the model's size, and which checkpoints it reads.

The rules declare ``gpu``, ``mem_mb``, ``runtime`` and ``batch_size`` through :func:`job_resources`; Snakemake
passes the attempt number (1 on the first try), so a retried job (``analysis.retries``) runs with half the batch
size, twice the host memory and twice the time of the attempt before: the remedy for running out of GPU memory,
host memory or the scheduler's time limit (README "Running on a cluster").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Published Pythia shapes (Biderman et al. 2023, Table 1): layers, d_model, heads; every size has the same
# vocabulary (50,304 rows of the embedding, padded from the tokenizer's 50,277), rotary_pct 0.25, parallel attention.
PYTHIA_SHAPES = {"14m": (6, 128, 4), "31m": (6, 256, 8), "70m": (6, 512, 8), "160m": (12, 768, 12),
                 "410m": (24, 1024, 16), "1b": (16, 2048, 8), "1.4b": (24, 2048, 16), "2.8b": (32, 2560, 32),
                 "6.9b": (32, 4096, 32), "12b": (36, 5120, 40)}
PYTHIA_VOCAB = 50_304

# Time limit per checkpoint for each kind of job, in minutes per billion parameters (models under 100M count as
# 0.1B). Estimates with a wide margin, not measurements: the cost model (benchmarks/cost_model.py) gives a few
# seconds of compute and loading per (checkpoint, task) for pythia-1b at 300 TFLOP/s; these allow 10-50x that,
# since a scheduler's time limit should never be what stops a job.
MINUTES_PER_BILLION = {"behavior": 1.0, "scores": 2.0, "circuit": 3.0, "components": 2.0, "stability": 5.0,
                       "download": 2.0}
MIN_RUNTIME = 10  # minutes: the smallest time limit asked of a scheduler


@dataclass(frozen=True)
class Shape:
    """A decoder's size: layers, residual width, heads per layer, vocabulary rows."""

    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    params: int | None = None  # the parameter count where known (a published shape's); None: the formula below

    @property
    def n_parameters(self) -> int:
        """``params`` where given, else the parameters of a GPT-NeoX decoder with a 4·d_model MLP and untied
        embedding and unembedding: ``12·L·d² + 2·V·d`` (attention 4d², MLP 8d² per layer; Kaplan et al. 2020,
        Table 1), biases and layer norms left out (under 0.1%)."""
        if self.params is not None:
            return self.params
        return 12 * self.n_layers * self.d_model**2 + 2 * self.d_vocab * self.d_model


@dataclass(frozen=True)
class PublishedShape:
    """A published decoder's shape, any family: layers, d_model, query heads, key/value heads, MLP width, gated
    (SwiGLU) MLP or not, vocabulary rows, tied embeddings or not, learned positions (0: rotary)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_mlp: int
    gated: bool
    d_vocab: int
    tied: bool
    positions: int

    @property
    def n_parameters(self) -> int:
        """Per layer ``2d² + 2·d·K·(d/H)`` attention (query and output; key and value at K heads) and
        ``(3 if gated else 2)·d·d_mlp`` MLP; ``V·d`` embedding (twice if untied) and the learned positions; biases
        and norms left out (under 0.1%)."""
        d = self.d_model
        attention = 2 * d * d + 2 * d * self.n_kv_heads * (d // self.n_heads)
        mlp = (3 if self.gated else 2) * d * self.d_mlp
        return (self.n_layers * (attention + mlp) + self.d_vocab * d * (1 if self.tied else 2)
                + self.positions * d)

    def shape(self) -> Shape:
        """The :class:`Shape` a job's resources are computed from, with this shape's parameter count."""
        return Shape(self.n_layers, self.d_model, self.n_heads, self.d_vocab, self.n_parameters)


# Published shapes of the other families (from each model's config.json on the hub; GPT-2: Radford et al. 2019;
# OLMo: Groeneveld et al. 2024, Table 1; SmolLM2: Allal et al. 2025; Amber: LLM360, Liu et al. 2023 (Llama-7B's
# shape); Llama 3: Dubey et al. 2024, Table 3).
PUBLISHED_SHAPES = {
    "gpt2-small": PublishedShape(12, 768, 12, 12, 3072, False, 50257, True, 1024),
    "gpt2-medium": PublishedShape(24, 1024, 16, 16, 4096, False, 50257, True, 1024),
    "smollm2-135m": PublishedShape(30, 576, 9, 3, 1536, True, 49152, True, 0),
    "smollm2-360m": PublishedShape(32, 960, 15, 5, 2560, True, 49152, True, 0),
    "smollm2-1.7b": PublishedShape(24, 2048, 32, 32, 8192, True, 49152, True, 0),
    "olmo-1b": PublishedShape(16, 2048, 16, 16, 8192, True, 50304, True, 0),
    "olmo-7b": PublishedShape(32, 4096, 32, 32, 11008, True, 50304, False, 0),
    "amber": PublishedShape(32, 4096, 32, 32, 11008, True, 32000, False, 0),
    "llama-3-8b": PublishedShape(32, 4096, 32, 8, 14336, True, 128256, False, 0),
}
# Which published shape a hub repository of another family has (regular expression on owner/name)
HUB_SHAPES = (
    (r"^stanford-crfm/[a-z]+-gpt2-small-", "gpt2-small"), (r"^stanford-crfm/[a-z]+-gpt2-medium-", "gpt2-medium"),
    (r"^allenai/OLMo-1B", "olmo-1b"), (r"^allenai/OLMo-7B", "olmo-7b"),
    (r"^HuggingFaceTB/SmolLM2-135M", "smollm2-135m"), (r"^HuggingFaceTB/SmolLM2-360M", "smollm2-360m"),
    (r"^HuggingFaceTB/SmolLM2-1.7B", "smollm2-1.7b"), (r"^LLM360/Amber$", "amber"),
)


def hub_shape(repo: str) -> Shape:
    """The shape of hub repository ``repo`` for a job's resources: a Pythia or PolyPythias model's
    (:func:`pythia_shape` of its size), else the published shape of its family (:data:`HUB_SHAPES`).

    Raises:
        ValueError: naming the repository and the repositories with a known shape.
    """
    import re

    m = re.match(r"^EleutherAI/pythia-([0-9.]+[mb])", repo)
    if m:
        return pythia_shape(m[1])
    for pattern, name in HUB_SHAPES:
        if re.match(pattern, repo):
            return PUBLISHED_SHAPES[name].shape()
    raise ValueError(f"no published shape known for {repo!r} (the scheduler's resources need one); known: "
                     f"EleutherAI/pythia-<size> and {[p.lstrip('^').rstrip('$') for p, _ in HUB_SHAPES]}")


def pythia_shape(size: str) -> Shape:
    """The shape of Pythia ``size`` (e.g. ``"160m"``).

    Raises:
        ValueError: naming the size and the valid ones.
    """
    if size not in PYTHIA_SHAPES:
        raise ValueError(f"unknown Pythia size {size!r}; valid: {list(PYTHIA_SHAPES)}")
    return Shape(*PYTHIA_SHAPES[size], PYTHIA_VOCAB)


def thin(steps: list[int], every: int) -> list[int]:
    """Every ``every``-th of ``steps`` (sorted), the first and the last always kept.

    >>> thin([0, 1, 2, 4, 8, 16, 32], 3)
    [0, 4, 32]

    Raises:
        ValueError: if ``every < 1``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1; got {every}")
    steps = sorted(steps)
    kept = steps[::every]
    if steps and kept[-1] != steps[-1]:
        kept.append(steps[-1])
    return kept


BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


def job_resources(kind: str, shape: Shape, dtype: str, batch_size: int, n_steps: int, attempt: int,
                  gpu: int) -> dict[str, int]:
    """Resources of one job of ``kind`` over ``n_steps`` checkpoints of a model of ``shape``, at ``attempt``.

    Args:
        kind: one of :data:`MINUTES_PER_BILLION`.
        shape: the model's size.
        dtype: its weights' dtype (a key of :data:`BYTES`).
        batch_size: the configured examples per forward pass.
        n_steps: checkpoints the job reads.
        attempt: Snakemake's attempt number, 1 on the first try.
        gpu: GPUs the job uses (0 or 1).

    Returns:
        ``{"gpu", "mem_mb", "runtime", "batch_size"}``: host memory in MB (the imports, ~2 GB, and two copies
        of the weights in ``dtype`` while a checkpoint loads: Hugging Face's model and the bridge's), the time limit in minutes, and the batch size
        ``batch_size // 2**(attempt - 1)`` (at least 1); memory and time are multiplied by ``attempt``.

    Raises:
        ValueError: for an unknown kind or dtype, or ``attempt < 1``.
    """
    if kind not in MINUTES_PER_BILLION:
        raise ValueError(f"unknown job kind {kind!r}; valid: {list(MINUTES_PER_BILLION)}")
    if dtype not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {list(BYTES)}")
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1; got {attempt}")
    billions = shape.n_parameters / 1e9
    mem_mb = 2000 + int(2 * BYTES[dtype] * shape.n_parameters / 1e6)
    minutes = MIN_RUNTIME + math.ceil(n_steps * MINUTES_PER_BILLION[kind] * max(billions, 0.1))
    return {"gpu": gpu, "mem_mb": mem_mb * attempt, "runtime": minutes * attempt,
            "batch_size": max(1, batch_size >> (attempt - 1))}
