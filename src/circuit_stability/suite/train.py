"""Train one model of the embedded suite and save its checkpoints on a Pythia-like schedule.

Like Pythia (Biderman et al. 2023): every model of the suite sees the same token stream in the same order,
uses rotary embeddings and parallel attention + MLP (``use_parallel_residual``), untied embeddings, AdamW with
linear warm-up and cosine decay to 10% of the peak learning rate, and checkpoints at
:func:`checkpoints.checkpoint_schedule`. A member may instead be of another architecture the engine supports
(``architecture``: ``gpt2``, sequential blocks with learned positions; ``llama``, sequential blocks with RMSNorm,
SwiGLU and grouped-query attention when ``n_kv_heads`` < ``n_heads``), trained the same way. Each checkpoint is a
Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer files) that
:func:`circuit_stability.models.load_model` boots exactly like a Pythia checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

from circuit_stability.artifacts import atomic_dir, atomic_path, write_json
from circuit_stability.checkpoints import tokens_seen
from circuit_stability.progress import Progress, say

RESUME_DIR = "resume"  # the resume state of a training job, inside its model folder (not a workflow output)


# The architectures a suite member can have (``architecture`` in the study config): Hugging Face's model class of
# each. GPT-NeoX is Pythia's (the default); the others are the sequential families the engine supports
# (docs/architectures.md).
ARCHITECTURES = {"gpt-neox": GPTNeoXForCausalLM, "gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}


@dataclass(frozen=True)
class ModelShape:
    """Architecture of one suite member (GPT-NeoX hyperparameters, as in Pythia's configs, by default). The study
    config's schema holds the defaults (``rotary_pct`` 0.25 as Pythia; ``d_mlp`` None = 4 · d_model, as Pythia).
    ``architecture`` is one of :data:`ARCHITECTURES`; ``n_kv_heads`` (Llama only; None = ``n_heads``) is the number
    of key/value heads of grouped-query attention. ``rotary_pct`` applies to GPT-NeoX (Llama rotates every
    dimension; GPT-2 has learned positions).

    Raises:
        ValueError: an unknown ``architecture``, or ``n_kv_heads`` without Llama or not dividing ``n_heads``.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int | None
    rotary_pct: float
    architecture: str
    n_kv_heads: int | None

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; valid: {list(ARCHITECTURES)}")
        if self.n_kv_heads is not None and (self.architecture != "llama" or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_kv_heads={self.n_kv_heads}: grouped-query attention needs architecture 'llama' "
                             f"(got {self.architecture!r}) and a divisor of n_heads={self.n_heads}")

    def record(self) -> dict:
        """The shape as the manifest and the training fingerprint record it
        (:func:`circuit_stability.config.shape_record`: the architecture fields only when not their defaults)."""
        from circuit_stability.config import shape_record

        return shape_record(asdict(self))

    def hf_config(self, vocab_size: int, context: int):
        """The Hugging Face config of this shape: ``GPTNeoXConfig`` (parallel residual), ``GPT2Config`` or
        ``LlamaConfig``; no dropout, untied embeddings, ``context`` positions, the MLP ``d_mlp`` wide (None:
        4 · d_model).

        Raises:
            ValueError: if ``d_model`` is not divisible by ``n_heads``.
        """
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        d_mlp = self.d_mlp or 4 * self.d_model
        if self.architecture == "gpt2":
            return GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=self.d_model, n_layer=self.n_layers,
                              n_head=self.n_heads, n_inner=d_mlp, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                              tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1)
        if self.architecture == "llama":
            return LlamaConfig(vocab_size=vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
                               num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads or self.n_heads,
                               intermediate_size=d_mlp, max_position_embeddings=context, attention_dropout=0.0,
                               tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1)
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, intermediate_size=d_mlp,
            max_position_embeddings=context, rotary_pct=self.rotary_pct, use_parallel_residual=True,
            tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0,
            bos_token_id=0, eos_token_id=0, pad_token_id=1,
        )

    def model(self, vocab_size: int, context: int) -> torch.nn.Module:
        """A model of this shape, initialised by Hugging Face's initialisation of its class under torch's current
        random state."""
        return ARCHITECTURES[self.architecture](self.hf_config(vocab_size, context))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every model of a suite (one token stream, one order); the defaults live
    in the study config's schema (``suite.training``: cosine decay to ``min_lr_ratio`` = 10% of peak, as
    Pythia; ``decay_steps`` None). ``decay_steps`` = N instead holds the peak after warm-up and decays over the last
    N steps only (warm-up–stable–decay). ``seed`` fixes the initialisation."""

    batch_size: int
    context: int
    max_steps: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    decay_steps: int | None
    weight_decay: float
    seed: int


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup_steps`` to ``lr``, then a cosine from ``lr`` to ``min_lr_ratio`` x ``lr``: over
    every remaining step when ``decay_steps`` is None (Pythia's schedule, Biderman et al. 2023), or, when it is N,
    over the last N steps only, the rate staying at ``lr`` until then (the warm-up–stable–decay schedule of
    MiniCPM, Hu et al. 2024). Returns the rate (same unit as ``lr``); the last step reaches the floor in both.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    start = cfg.warmup_steps if cfg.decay_steps is None else max(cfg.warmup_steps, cfg.max_steps - cfg.decay_steps)
    progress = min(1.0, max(0.0, (step - start) / max(1, cfg.max_steps - start)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def init_model(shape: ModelShape, vocab_size: int, cfg: TrainConfig) -> torch.nn.Module:
    """A freshly initialised model of ``shape``: ``torch.manual_seed(cfg.seed)`` (the weight seed), then
    Hugging Face's initialisation of its architecture. Same seed, same weights, on any machine with the same
    torch."""
    torch.manual_seed(cfg.seed)
    return shape.model(vocab_size, cfg.context)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (β = 0.9, 0.95, as Pythia) with weight decay on matrices only (not on biases and norm gains)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor, lr: float) -> float:
    """One optimizer update on ``batch`` (``[batch_size, context]`` int64 token ids; next-token cross-entropy),
    gradient norm clipped to 1, at learning rate ``lr``. Returns the loss before the update (nats/token)."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss = model(input_ids=batch, labels=batch).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def training_fingerprint(shape: ModelShape, cfg: TrainConfig, tokens: np.ndarray, vocab_size: int,
                         checkpoint_steps: list[int]) -> str:
    """SHA-256 (hex) of everything that decides a training run's weights: shape, optimisation settings and seed,
    vocabulary size, checkpoint steps, the token stream's bytes and the torch version. A resume state is used only
    by a job with the same fingerprint."""
    h = hashlib.sha256(json.dumps({"shape": shape.record(), "cfg": asdict(cfg), "vocab_size": vocab_size,
                                   "checkpoints": sorted(checkpoint_steps), "torch": torch.__version__},
                                  sort_keys=True).encode())
    h.update(str(tokens.dtype).encode())
    h.update(np.ascontiguousarray(tokens).tobytes())
    return h.hexdigest()


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of folder ``src`` into the new folder ``dst`` (copy where links are refused)."""
    dst.mkdir()
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


def train_model(shape: ModelShape, cfg: TrainConfig, tokens: np.ndarray, tokenizer: PreTrainedTokenizerFast,
                out_dir: Path, checkpoint_steps: list[int], threads: int = 1) -> pd.DataFrame:
    """Train one model on ``tokens`` and save a checkpoint at every step of ``checkpoint_steps``; resumable.

    At every checkpoint the job also saves its resume state in ``out_dir/resume/``: model and AdamW state, torch's
    RNG state, the step (the data position: row ``step`` of ``tokens`` is the next batch), the log so far, and hard
    links to the checkpoints saved so far (so a workflow manager that deletes a failed job's outputs before
    rerunning it deletes only its own names). A job that finds a resume state with its own
    :func:`training_fingerprint` continues from it, restores any missing checkpoint folder, and ends with weights
    bit-identical to an uninterrupted run (every update is deterministic; ``tests/test_pipeline.py`` kills a real
    job to check). A state with another fingerprint is discarded. The caller removes the state once the run's
    outputs are complete (:func:`discard_resume_state`).

    Args:
        shape: architecture.
        cfg: optimisation settings; ``cfg.seed`` fixes the initialisation.
        tokens: ``[max_steps, batch_size, context]`` int token stream; row ``s`` is the batch of step ``s``.
        tokenizer: saved beside every checkpoint.
        out_dir: checkpoints go to ``out_dir/step{step}/`` (each written atomically).
        checkpoint_steps: steps to save (0 = initialisation, ``s`` = after ``s`` optimizer updates).
        threads: torch intra-op threads.

    Returns:
        The training log, one row per step: ``step``, ``tokens_seen``, ``loss`` (nats/token), ``lr``.

    Raises:
        ValueError: if ``tokens`` has the wrong shape or a checkpoint step exceeds ``cfg.max_steps``.
    """
    if tokens.shape != (cfg.max_steps, cfg.batch_size, cfg.context):
        raise ValueError(f"tokens has shape {tokens.shape}; expected "
                         f"(max_steps, batch_size, context) = {(cfg.max_steps, cfg.batch_size, cfg.context)}")
    if max(checkpoint_steps) > cfg.max_steps or min(checkpoint_steps) < 0:
        raise ValueError(f"checkpoint steps must lie in [0, {cfg.max_steps}]; got {checkpoint_steps}")
    torch.set_num_threads(threads)
    # = torch.use_deterministic_algorithms(True), whose first call also imports the torch.compile stack (~3 s,
    # to set an inductor flag this code never uses)
    torch.set_deterministic_debug_mode("error")
    model = init_model(shape, len(tokenizer), cfg)
    model.train()
    opt = make_optimizer(model, cfg)
    to_save = set(checkpoint_steps)
    resume = out_dir / RESUME_DIR
    fingerprint = training_fingerprint(shape, cfg, tokens, len(tokenizer), checkpoint_steps)
    log: list[tuple] = []
    start = 0
    state_file = resume / "state.pt"
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)
        if state["fingerprint"] != fingerprint:
            say(f"resume state in {resume} is from another run (its fingerprint differs): starting afresh")
            shutil.rmtree(resume)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            start, log = int(state["step"]), [tuple(row) for row in state["log"]]
            for step in sorted(s for s in to_save if s <= start):
                if not (out_dir / f"step{step}" / "model.safetensors").exists():
                    with atomic_dir(out_dir / f"step{step}") as tmp:
                        shutil.rmtree(tmp)
                        _link_tree(resume / f"step{step}", tmp)
            say(f"resumed from step {start} of {cfg.max_steps} ({resume})")

    def save(step: int) -> None:
        model.eval()
        with atomic_dir(out_dir / f"step{step}") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        model.train()
        resume.mkdir(parents=True, exist_ok=True)
        if not (resume / f"step{step}").exists():
            with atomic_dir(resume / f"step{step}") as tmp:
                shutil.rmtree(tmp)
                _link_tree(out_dir / f"step{step}", tmp)
        with atomic_path(state_file) as tmp:
            torch.save({"fingerprint": fingerprint, "step": step, "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "log": log}, tmp)
        write_json({"step": step, "max_steps": cfg.max_steps, "fingerprint": fingerprint}, resume / "state.json")

    if start == 0 and 0 in to_save:
        save(0)
    data = torch.from_numpy(tokens.astype(np.int64))
    progress = Progress(f"train {out_dir.name}", cfg.max_steps - start, "steps")
    for step in range(start, cfg.max_steps):
        lr = learning_rate(step, cfg)
        loss = train_step(model, opt, data[step], lr)
        log.append((step + 1, tokens_seen(step + 1, cfg.batch_size, cfg.context), loss, lr))
        progress.note = f"loss {log[-1][2]:.3f}"
        progress.update()
        if step + 1 in to_save:
            save(step + 1)
    return pd.DataFrame(log, columns=["step", "tokens_seen", "loss", "lr"])


def discard_resume_state(out_dir: Path) -> None:
    """Remove a finished training job's resume state (``out_dir/resume``), if any."""
    shutil.rmtree(Path(out_dir) / RESUME_DIR, ignore_errors=True)


def build_token_stream(docs_encoded: list[list[int]], eos_id: int, max_steps: int, batch_size: int,
                       context: int) -> np.ndarray:
    """Concatenate documents (each followed by EOS) and cut the stream into ``[max_steps, batch_size, context]``.

    Raises:
        ValueError: if the documents hold fewer tokens than ``max_steps · batch_size · context``.
    """
    need = max_steps * batch_size * context
    flat = np.fromiter((t for doc in docs_encoded for t in (*doc, eos_id)), dtype=np.int32)
    if flat.size < need:
        raise ValueError(f"corpus has {flat.size} tokens; training needs {need} (max_steps·batch·context)")
    return flat[:need].reshape(max_steps, batch_size, context)


def shape_summary(shape: ModelShape, vocab_size: int, context: int) -> dict:
    """Parameter count and hyperparameters of a suite member (for the suite manifest)."""
    model = shape.model(vocab_size, context)
    return {**shape.record(), "n_params": sum(p.numel() for p in model.parameters())}


__all__ = ["ARCHITECTURES", "ModelShape", "TrainConfig", "learning_rate", "init_model", "make_optimizer", "train_step", "train_model",
           "training_fingerprint", "discard_resume_state", "build_token_stream", "shape_summary"]
