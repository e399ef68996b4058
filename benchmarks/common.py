"""Shared pieces of the benchmarks: model shapes built offline with random weights, prompts, timers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from circuit_stability.attribution import Prompts
from circuit_stability.models import load_model
from circuit_stability.scale import PYTHIA_SHAPES, PYTHIA_VOCAB
from circuit_stability.suite.corpus import lexicon_sample
from circuit_stability.suite.tokenizer import build_tokenizer

# (layers, d_model, heads, vocab): embedded sizes from config/config.yaml (vocab None: the suite tokenizer's);
# Pythia's from circuit_stability.scale (its published configs).
SHAPES = {
    "mini-s": (2, 64, 4, None), "mini-m": (3, 96, 6, None), "mini-l": (4, 128, 8, None),
    **{f"pythia-{size}": (*PYTHIA_SHAPES[size], PYTHIA_VOCAB) for size in ("70m", "160m")},
}


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a background thread (bytes)."""

    def __enter__(self):
        self.proc, self.base, self.peak, self.run = psutil.Process(), psutil.Process().memory_info().rss, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.run:
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.run = False
        self.thread.join()


def build(tmp: Path, name: str, shape: tuple | None = None, device: str = "cpu", dtype: str = "float32"):
    """A random GPT-NeoX of shape ``shape`` (layers, d_model, heads, vocab; default ``SHAPES[name]``) with Pythia's
    parallel attention and rotary_pct 0.25, saved as ``<tmp>/<name>/step0`` and loaded as a bridge."""
    layers, d, heads, vocab = shape or SHAPES[name]
    tok = build_tokenizer(lexicon_sample())
    cfg = GPTNeoXConfig(vocab_size=vocab or len(tok), hidden_size=d, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * d, rotary_pct=0.25,
                        use_parallel_residual=True, tie_word_embeddings=False, max_position_embeddings=2048)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(cfg).save_pretrained(tmp / name / "step0")
    tok.save_pretrained(tmp / name / "step0")
    return load_model(name, 0, tmp, device=device, dtype=dtype)


def prompts(vocab: int, batch: int, positions: int) -> Prompts:
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(3, min(vocab, 900), (batch, positions), generator=g)
    corrupted = clean.clone()
    corrupted[:, positions // 2] = (clean[:, positions // 2] + 1) % min(vocab, 900)
    return Prompts(clean, corrupted, torch.full((batch,), positions - 1), torch.tensor([[5, 6]] * batch),
                   torch.tensor([[1.0, -1.0]] * batch), "logit_diff")


def timed(fn, *args, **kwargs):
    """``(seconds, result)`` of one call."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def suite_study(description: str):
    """Parse ``--study``, ``--configfile``, ``--threads`` for a benchmark of a built suite study; set the threads.

    Returns:
        ``(args, cfg)``: the parsed arguments and the validated config (defaults filled in).

    Raises:
        SystemExit: for a hub study (the benchmarks read local checkpoints).
    """
    import argparse

    from circuit_stability.config import load_config, validate_config

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, default=Path("."), help="built study folder (default: %(default)s)")
    ap.add_argument("--configfile", default="config/config.yaml", help="relative to --study")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = validate_config(load_config(a.study / a.configfile))
    if cfg["source"] != "suite":
        raise SystemExit("this benchmark reads a suite study's local checkpoints")
    return a, cfg


def sync() -> None:
    """Wait for queued CUDA work (timings on a GPU); nothing on the CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_passes(bridge, p: Prompts, m: int) -> float:
    """Seconds of 2 forward + m forward/backward passes (gradient w.r.t. the embeddings only), no hooks: what
    EAP-IG needs at least, on the same batch."""
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        bridge(p.clean)
        bridge(p.corrupted)
    for _ in range(m):
        emb = bridge.embed(p.clean).detach().requires_grad_(True)
        with bridge.hooks(fwd_hooks=[("hook_embed", lambda x, hook: emb)]):
            p.metric_values(bridge(p.clean)).sum().backward()
    sync()
    return time.perf_counter() - t
