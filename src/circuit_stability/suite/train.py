"""Train one GPT-NeoX model of the embedded suite and save its checkpoints on a Pythia-like schedule.

Like Pythia (Biderman et al. 2023): every model of the suite sees the same token stream in the same order,
uses rotary embeddings and parallel attention + MLP (``use_parallel_residual``), untied embeddings, AdamW with
linear warm-up and cosine decay to 10% of the peak learning rate, and checkpoints at
:func:`checkpoints.checkpoint_schedule`. Each checkpoint is a Hugging Face folder (``config.json``,
``model.safetensors``, tokenizer files) that :func:`circuit_stability.models.load_model` boots exactly like a
Pythia checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from circuit_stability.artifacts import atomic_dir
from circuit_stability.checkpoints import tokens_seen
from circuit_stability.progress import Progress


@dataclass(frozen=True)
class ModelShape:
    """Architecture of one suite member (GPT-NeoX hyperparameters, as in Pythia's configs). The study config's
    schema holds the defaults (``rotary_pct`` 0.25 as Pythia; ``d_mlp`` None = 4 · d_model, as Pythia)."""

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int | None
    rotary_pct: float

    def hf_config(self, vocab_size: int, context: int) -> GPTNeoXConfig:
        """The ``GPTNeoXConfig`` of this shape (no dropout, untied embeddings, parallel residual)."""
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, intermediate_size=self.d_mlp or 4 * self.d_model,
            max_position_embeddings=context, rotary_pct=self.rotary_pct, use_parallel_residual=True,
            tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0,
            bos_token_id=0, eos_token_id=0, pad_token_id=1,
        )


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


def init_model(shape: ModelShape, vocab_size: int, cfg: TrainConfig) -> GPTNeoXForCausalLM:
    """A freshly initialised model of ``shape``: ``torch.manual_seed(cfg.seed)`` (the weight seed), then
    Hugging Face's GPT-NeoX initialisation. Same seed, same weights, on any machine with the same torch."""
    torch.manual_seed(cfg.seed)
    return GPTNeoXForCausalLM(shape.hf_config(vocab_size, cfg.context))


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


def train_model(shape: ModelShape, cfg: TrainConfig, tokens: np.ndarray, tokenizer: PreTrainedTokenizerFast,
                out_dir: Path, checkpoint_steps: list[int], threads: int = 1) -> pd.DataFrame:
    """Train one model on ``tokens`` and save a checkpoint at every step of ``checkpoint_steps``.

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

    def save(step: int) -> None:
        with atomic_dir(out_dir / f"step{step}") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    if 0 in to_save:
        save(0)
    data = torch.from_numpy(tokens.astype(np.int64))
    log = []
    progress = Progress(f"train {out_dir.name}", cfg.max_steps, "steps")
    for step in range(cfg.max_steps):
        lr = learning_rate(step, cfg)
        loss = train_step(model, opt, data[step], lr)
        log.append((step + 1, tokens_seen(step + 1, cfg.batch_size, cfg.context), loss, lr))
        progress.note = f"loss {log[-1][2]:.3f}"
        progress.update()
        if step + 1 in to_save:
            model.eval()
            save(step + 1)
            model.train()
    return pd.DataFrame(log, columns=["step", "tokens_seen", "loss", "lr"])


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
    model = GPTNeoXForCausalLM(shape.hf_config(vocab_size, context))
    return {**asdict(shape), "n_params": sum(p.numel() for p in model.parameters())}


__all__ = ["ModelShape", "TrainConfig", "learning_rate", "init_model", "make_optimizer", "train_step", "train_model",
           "build_token_stream", "shape_summary"]
