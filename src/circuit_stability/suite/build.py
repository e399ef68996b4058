"""The suite's two pipeline stages (design §6): the corpus (grammar → tokenizer → token stream) and the
training of one member, each writing its folder and a small JSON manifest.

- ``data/corpus/{suite}/``: ``tokens.npy`` (``[max_steps, batch_size, context]`` token ids: row ``s`` is the
  batch of optimizer step ``s``), ``tokenizer/`` and ``corpus.json`` (seed, weights, sizes).
- ``models/{model}/``: ``step{step}/`` checkpoints, ``train_log.parquet`` (loss per step) and ``suite.json``
  (shape, parameter count, training settings, checkpoints, and the machine and library versions that trained it:
  a rerun on the same machine is bit-identical, another CPU's float rounding differs, design §6). Neither
  manifest holds a wall time, so a rebuild gives the same bytes; the times are in the jobs' logs.
"""

from __future__ import annotations

import itertools
import json
import platform
from pathlib import Path

import numpy as np

from circuit_stability.artifacts import atomic_dir, atomic_path, write_json, write_parquet
from circuit_stability.progress import Progress
from circuit_stability.suite import corpus


_BATCH_DOCUMENTS = 10_000  # at most this many documents tokenised at a time


def _encode(tok, docs: list[str]) -> np.ndarray:
    """Token ids of ``docs``, each document followed by EOS: flat ``[n_tokens]`` int32."""
    ids = tok(docs, add_special_tokens=False)["input_ids"]
    out = np.empty(sum(len(x) + 1 for x in ids), dtype=np.int32)
    at = 0
    for x in ids:
        out[at:at + len(x)] = x
        out[at + len(x)] = tok.eos_token_id
        at += len(x) + 1
    return out


def _documents(seed: int, chunk: int, cfg: corpus.CorpusConfig):
    """The corpus's documents in order, in batches: chunk ``k`` (``chunk`` documents) from the grammar seeded
    ``seed + k·chunk``, each batch a 16th of a chunk (at least 250, at most :data:`_BATCH_DOCUMENTS` documents) and
    never across two chunks."""
    size = max(250, min(_BATCH_DOCUMENTS, chunk // 16))
    for k in itertools.count():
        docs = corpus.iter_documents(seed + k * chunk, cfg)
        for start in range(0, chunk, size):
            yield list(itertools.islice(docs, min(size, chunk - start)))


def build_corpus(out: str | Path, seed: int, weights: dict[str, float], batch_size: int, context: int,
                 max_steps: int) -> dict:
    """Generate documents until they fill ``max_steps × batch_size × context`` tokens, build the tokenizer, cut the
    stream and write the corpus folder.

    The stream is document ``0, 1, 2, …`` of chunk 0, then of chunk 1, … (chunk ``k`` holds ``chunk`` =
    max(1000, tokens needed // 40) documents from the grammar seeded ``seed + k·chunk``), each followed by EOS, cut
    at the tokens needed. Documents are generated and tokenised in batches until the cut, not a whole chunk at a
    time (a chunk usually holds ~1.5 times the tokens needed): the same stream, a third less work
    (``benchmarks/corpus.py``).

    Args:
        out: the corpus folder.
        seed: grammar seed.
        weights: the full mixture (every sentence kind of :data:`corpus.SENTENCE_KINDS` that should occur).
        batch_size, context, max_steps: the training stream's shape, ``[max_steps, batch_size, context]``.

    Returns:
        The manifest written to ``corpus.json`` (``n_documents``: the documents the stream draws from).

    Raises:
        RuntimeError: if the stream holds unknown tokens (a grammar word missing from the vocabulary).
    """
    from circuit_stability.suite.tokenizer import build_tokenizer

    cfg = corpus.CorpusConfig(weights=dict(weights))
    tok = build_tokenizer(corpus.lexicon_sample())
    need = max_steps * batch_size * context
    chunk = max(1000, need // 40)  # documents average ~60 tokens: chunk 0 usually fills the stream
    parts, have, docs = [], 0, 0
    progress = Progress(f"corpus {Path(out).name}", need, "tokens")
    for batch in _documents(seed, chunk, cfg):
        ids = _encode(tok, batch)
        ends = np.flatnonzero(ids == tok.eos_token_id) + 1  # where each document ends
        used = min(len(batch), int(np.searchsorted(ends, need - have)) + 1)  # up to the one crossing the cut
        parts.append(ids[:ends[used - 1]])
        have += int(ends[used - 1])
        docs += used
        progress.update(min(need, have) - progress.done)
        if have >= need:
            break
    tokens = np.concatenate(parts)[:need].reshape(max_steps, batch_size, context)
    unk = int((tokens == tok.unk_token_id).sum())
    if unk:
        raise RuntimeError(f"corpus contains {unk} unknown tokens: the tokenizer vocabulary misses grammar words")
    out = Path(out)
    with atomic_dir(out / "tokenizer") as tmp:
        tok.save_pretrained(tmp)
    with atomic_path(out / "tokens.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tokens.astype(np.uint16 if len(tok) < 65536 else np.int32))
    manifest = {"seed": seed, "weights": dict(weights), "n_documents": docs, "n_tokens": int(tokens.size),
                "vocab_size": len(tok), "shape": list(tokens.shape)}
    write_json(manifest, out / "corpus.json")
    return manifest


def environment() -> dict:
    """The machine and software a model was trained with: CPU model and instruction sets, the kernel paths
    torch picks (ATen CPU capability, MKL, oneDNN, and the variables of :mod:`circuit_stability.kernels` in
    effect), threads and library versions. Float rounding in training depends on these, so two machines that
    differ here can train different suites from one config."""
    import os

    import tokenizers
    import torch
    import transformers

    from circuit_stability.kernels import PORTABLE

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return {"cpu": cpu, "cpu_isa": isa, "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "numpy": np.__version__,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
            "threads": torch.get_num_threads(), "kernel_settings": {k: os.environ.get(k) for k in PORTABLE}}


def build_model(corpus_dir: str | Path, out: str | Path, shape: dict, training: dict, seed: int,
                threads: int) -> dict:
    """Train one suite member on the corpus stream and write its folder (module docstring).

    Args:
        corpus_dir: the corpus folder of :func:`build_corpus`.
        out: ``models/{model}``.
        shape: :class:`~circuit_stability.suite.train.ModelShape` fields.
        training: :class:`~circuit_stability.suite.train.TrainConfig` fields (without ``seed``; ``decay_steps``
            may be left out, meaning None) plus ``checkpoint_every`` and ``log_until`` of the checkpoint schedule.
        seed: initialisation seed (the member's weight seed; its data seed is the corpus's, recorded in the
            manifest's ``seeds`` with the weight seed).
        threads: torch intra-op threads.

    Returns:
        The manifest written to ``suite.json``.
    """
    from transformers import PreTrainedTokenizerFast

    from circuit_stability.checkpoints import checkpoint_schedule
    from circuit_stability.config import ARCHITECTURE_DEFAULTS
    from circuit_stability.suite.train import (ModelShape, TrainConfig, discard_resume_state, shape_summary,
                                              train_model)

    model_shape = ModelShape(**{**ARCHITECTURE_DEFAULTS, **shape})
    opt = {"decay_steps": None, **{k: v for k, v in training.items() if k not in ("checkpoint_every", "log_until")}}
    cfg = TrainConfig(**opt, seed=seed)
    steps = checkpoint_schedule(cfg.max_steps, training["checkpoint_every"], training["log_until"])
    tokens = np.load(Path(corpus_dir) / "tokens.npy")
    tok = PreTrainedTokenizerFast.from_pretrained(Path(corpus_dir) / "tokenizer")
    out = Path(out)
    log = train_model(model_shape, cfg, tokens, tok, out, steps, threads=threads)
    write_parquet(log, out / "train_log.parquet", {"model": out.name, "seed": seed})
    manifest = {"model": out.name, **shape_summary(model_shape, len(tok), cfg.context),
                "training": {**json.loads(json.dumps(training)), "seed": seed},
                "seeds": {"weight": seed, "data": json.loads((Path(corpus_dir) / "corpus.json").read_text())["seed"],
                          "corpus": Path(corpus_dir).name},
                "checkpoints": steps,
                "final_loss": float(log["loss"].tail(50).mean()),
                "environment": environment()}
    write_json(manifest, out / "suite.json")
    discard_resume_state(out)  # the run's outputs are complete
    return manifest


def derive_member(source: str | Path, out: str | Path, layer: int, order: list[int], from_step: int) -> dict:
    """Write a derived member's folder (:mod:`circuit_stability.suite.derive`): the source's checkpoints, with the
    heads of ``layer`` permuted by ``order`` from ``from_step`` on, its training log (it was not trained: the
    source's) and a manifest that is the source's plus ``derived`` (source, layer, order, from_step).

    Returns:
        The manifest written to ``suite.json``.

    Raises:
        ValueError: as :func:`~circuit_stability.suite.derive.derive_model`.
    """
    import pandas as pd

    from circuit_stability.artifacts import parquet_metadata, read_json
    from circuit_stability.suite.derive import derive_model

    source, out = Path(source), Path(out)
    manifest = read_json(source / "suite.json")
    derive_model(source, out, manifest["checkpoints"], layer, list(order), from_step)
    meta = parquet_metadata(source / "train_log.parquet")
    write_parquet(pd.read_parquet(source / "train_log.parquet"), out / "train_log.parquet",
                  {**meta, "model": out.name})
    manifest = {**manifest, "model": out.name,
                "derived": {"source": source.name, "layer": layer, "order": list(order), "from_step": from_step}}
    write_json(manifest, out / "suite.json")
    return manifest
