"""A seeded grammar that generates the embedded suite's training corpus (design §6).

Documents are short narratives mixing several sentence kinds, each chosen with a configurable weight:

- ``ioi``: an IOI narrative from the *seen* templates of :mod:`lexicon` (Wang et al. 2023), ABBA or BABA,
  ending with the indirect object, so that name-moving circuits are worth learning;
- ``narrative``: other sentences with one or two names (names reused in ways that do not give IOI away);
- ``repeat``: a random span of words repeated verbatim (the induction motif, Olsson et al. 2022);
- ``ordinal``: runs of an ordinal sequence (days, months, number words; Gould et al. 2023's successor motif);
- ``filler``: plain subject–verb–object sentences.

Held-out IOI templates (:data:`lexicon.IOI_HELD_OUT`) never appear, so evaluation on them measures the
learnt task rather than memorised strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from circuit_stability.suite import lexicon as lx

SENTENCE_KINDS = ("ioi", "narrative", "repeat", "ordinal", "filler")


@dataclass(frozen=True)
class CorpusConfig:
    """Mixture weights of the sentence kinds and document length (sentences per document)."""

    weights: dict = field(default_factory=lambda: {"ioi": 4.0, "narrative": 2.0, "repeat": 1.0,
                                                   "ordinal": 0.5, "filler": 1.0})
    sentences_per_document: tuple[int, int] = (2, 5)

    def __post_init__(self) -> None:
        bad = sorted(set(self.weights) - set(SENTENCE_KINDS))
        if bad:
            raise ValueError(f"unknown sentence kind(s) {bad}; valid kinds: {list(SENTENCE_KINDS)}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"corpus weights must be >= 0 with a positive sum; got {self.weights}")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def ioi_sentence(rng: np.random.Generator, template: str, io: str, s: str, abba: bool) -> str:
    """Fill an IOI template (BABA form) with indirect object ``io`` and subject ``s``.

    With ``abba`` the first two names are swapped (A B … B → A), as in Wang et al. (2023). Returns the
    prompt text *without* the final indirect object.
    """
    text = template
    if abba:
        text = text.replace("[B] and [A]", "[A] and [B]", 1)
    return (text.replace("[A]", io).replace("[B]", s)
            .replace("[PLACE]", _pick(rng, lx.PLACES)).replace("[OBJECT]", _pick(rng, lx.OBJECTS)))


SEEN_IOI_TEMPLATES = tuple(t for i, t in enumerate(lx.IOI_TEMPLATES_BABA) if i not in lx.IOI_HELD_OUT)


def _sentence(rng: np.random.Generator, kind: str) -> str:
    if kind == "ioi":
        io, s = rng.choice(len(lx.NAMES), size=2, replace=False)
        io, s = lx.NAMES[io], lx.NAMES[s]
        return ioi_sentence(rng, _pick(rng, SEEN_IOI_TEMPLATES), io, s, bool(rng.integers(2))) + "."
    if kind == "narrative":
        a, b = (lx.NAMES[i] for i in rng.choice(len(lx.NAMES), size=2, replace=False))
        form = int(rng.integers(4))
        if form == 0:
            return f"{a} went to the {_pick(rng, lx.PLACES)}. {a} was {_pick(rng, lx.ADJECTIVES)}."
        if form == 1:
            return f"{a} {_pick(rng, lx.VERBS_PAST)} {b}, and {b} {_pick(rng, lx.VERBS_PAST)} {a}."
        if form == 2:
            return f"{a} and {b} liked the {_pick(rng, lx.OBJECTS)}."
        return f"{a} gave the {_pick(rng, lx.OBJECTS)} to the {_pick(rng, lx.NOUNS)}."
    if kind == "repeat":
        pool = lx.NOUNS + lx.ADJECTIVES + list(lx.NAMES) + list(lx.PLACES)
        span = " ".join(_pick(rng, pool) for _ in range(int(rng.integers(4, 11))))
        return f"{span}. {span}."
    if kind == "ordinal":
        seq = _pick(rng, lx.ORDINAL_SEQUENCES)
        start = int(rng.integers(len(seq)))
        n = int(rng.integers(3, len(seq) + 1))
        return " ".join(seq[(start + i) % len(seq)] for i in range(n)) + "."
    if kind == "filler":
        return (f"The {_pick(rng, lx.NOUNS)} {_pick(rng, lx.VERBS_PAST)} the {_pick(rng, lx.NOUNS)} "
                f"at the {_pick(rng, lx.PLACES)}.")
    raise ValueError(f"unknown sentence kind {kind!r}; valid kinds: {list(SENTENCE_KINDS)}")


def generate_documents(seed: int, n_documents: int, config: CorpusConfig = CorpusConfig()) -> list[str]:
    """Generate ``n_documents`` documents; identical for identical ``(seed, n_documents, config)``."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in SENTENCE_KINDS if config.weights.get(k, 0) > 0]
    p = np.array([config.weights[k] for k in kinds], dtype=np.float64)
    p /= p.sum()
    lo, hi = config.sentences_per_document
    docs = []
    for _ in range(n_documents):
        n = int(rng.integers(lo, hi + 1))
        docs.append(" ".join(_sentence(rng, kinds[int(i)]) for i in rng.choice(len(kinds), size=n, p=p)))
    return docs


def lexicon_sample() -> list[str]:
    """Strings that together contain every word the grammar and the task generators can emit.

    Used to build the tokenizer's vocabulary, so every word (with and without a leading space) is one token.
    """
    words = (list(lx.NAMES) + list(lx.PLACES) + list(lx.OBJECTS) + lx.NOUNS + lx.ADJECTIVES
             + lx.VERBS_PAST + [w for seq in lx.ORDINAL_SEQUENCES for w in seq])
    template_words = " ".join(lx.IOI_TEMPLATES_BABA).replace("[", " ").replace("]", " ")
    texts = [" ".join(words), " ".join(w.lower() for w in words), " ".join(w.capitalize() for w in words),
             template_words, template_words.lower(), "The the A a. , It it Then When While After"]
    texts += [w + "." for w in words] + [w + "," for w in words]
    # every sentence form of the grammar, each kind sampled on its own
    for kind in SENTENCE_KINDS:
        texts += generate_documents(0, 200, CorpusConfig(weights={kind: 1.0}))
    return [" " + t for t in texts]
