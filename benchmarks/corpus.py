"""Corpus build time (issue 28): generating documents up to the cut against generating whole chunks, one run.

:func:`circuit_stability.suite.build.build_corpus` draws the training stream from chunks of ``max(1000, tokens //
40)`` documents (chunk ``k`` from the grammar seeded ``seed + k·chunk``), and a chunk holds ~1.5 times the tokens the
stream needs. Until this change the whole chunk was generated and tokenised, then cut; now documents are generated
and tokenised in batches until the cut. This script times both on the default mixture (batch 32 x 64, ``--steps``
steps): the former way (``generate_documents`` of the whole chunk, one tokenizer call, cut) against
``build_corpus``, checks that they give the same token stream, and prints both wall times and their ratio,
measured in this run.

Usage: ``python benchmarks/corpus.py [--steps 6000]`` (6,000: the default study's stream; the long study's is
20,000).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from circuit_stability.config import schema_default
from circuit_stability.suite import corpus
from circuit_stability.suite.build import build_corpus
from circuit_stability.suite.tokenizer import build_tokenizer


def whole_chunks(seed: int, weights: dict, steps: int) -> np.ndarray:
    """The former build: every chunk generated and tokenised whole until the stream is filled, then cut."""
    tok = build_tokenizer(corpus.lexicon_sample())
    need = steps * 32 * 64
    chunk = max(1000, need // 40)
    cfg = corpus.CorpusConfig(weights=dict(weights))
    flat, k = [], 0
    while sum(map(len, flat)) < need:
        ids = tok(corpus.generate_documents(seed + k * chunk, chunk, cfg), add_special_tokens=False)["input_ids"]
        flat.append(np.fromiter((t for doc in ids for t in (*doc, tok.eos_token_id)), dtype=np.int32))
        k += 1
    return np.concatenate(flat)[:need].reshape(steps, 32, 64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6000, help="training steps the stream fills (32 x 64 tokens each)")
    a = p.parse_args()
    weights = schema_default("suite.corpus.weights")
    t = time.perf_counter()
    before = whole_chunks(0, weights, a.steps)
    t_before = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_corpus(tmp, 0, weights, 32, 64, a.steps)
        t_now = time.perf_counter() - t
        same = np.array_equal(before, np.load(Path(tmp) / "tokens.npy"))
    print(f"corpus of {a.steps:,} steps ({a.steps * 32 * 64:,} tokens): whole chunks {t_before:.1f} s, up to the "
          f"cut {t_now:.1f} s, ratio {t_before / t_now:.2f}x; same token stream: {same}")
    if not same:
        raise SystemExit("the two builds differ")


if __name__ == "__main__":
    main()
