"""A seeded grammar that generates the embedded suite's training corpus (design §6).

Documents are short narratives mixing several sentence kinds, each chosen with a configurable weight:

- ``ioi``: an IOI narrative from the *seen* templates of :mod:`lexicon` (Wang et al. 2023), ABBA or BABA,
  ending with the indirect object, so that name-moving circuits are worth learning;
- ``narrative``: other sentences with one or two names (names reused in ways that do not give IOI away);
- ``repeat``: a random span of 2–24 words from the whole lexicon, a gap (a separator, random words or both), then
  the span again, whole or in part (the induction motif, Olsson et al. 2022, in varied forms so that the copying
  learnt is generic: :func:`_repeat`);
- ``ordinal``: runs of an ordinal sequence (days, months, number words; Gould et al. 2023's successor motif);
- ``gp``: "So Mary is a really nice person, isn't she?" and other sentences where a pronoun refers to a name;
- ``gt``: "The war lasted from the year 1732 to the year 1756." (the end year is 1–25 years later;
  start years 00–98, so the corrupted "XX01" prompt is in-distribution);
- ``sva``: "The dogs near the cat are happy." (agreement across a prepositional phrase or relative clause)
  and "The dog is happy." with 0–3 adverbs before the verb ("The dog really still is happy.") for every subject,
  so that number is carried to the verb across a distance for held-out subjects too;
- ``filler``: plain subject–verb–object sentences, and sentences that use the held-out words outside their
  task frames (so every evaluation word occurs in training).

Held out of training, so evaluation measures the learnt task rather than memorised strings: IOI templates
:data:`lexicon.IOI_HELD_OUT`, Gendered-Pronoun attributes :data:`lexicon.GP_HELD_OUT`, Greater-Than nouns
:data:`lexicon.GT_HELD_OUT` (in the frame), SVA subjects :data:`lexicon.SVA_HELD_OUT` (with a distractor), and
every combination that :func:`lexicon.is_reserved` reserves for the "seen" evaluation split.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from circuit_stability.suite import lexicon as lx

SENTENCE_KINDS = ("ioi", "narrative", "repeat", "ordinal", "filler", "gp", "gt", "sva")


@dataclass(frozen=True)
class CorpusConfig:
    """Mixture weights of the sentence kinds (a kind left out has weight 0; the study config's schema holds
    the default mixture, ``suite.corpus.weights``) and document length (sentences per document)."""

    weights: dict
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
_SEEN_IOI = [i for i in range(len(lx.IOI_TEMPLATES_BABA)) if i not in lx.IOI_HELD_OUT]
_SEEN_GP = [i for i in range(len(lx.GP_ATTRIBUTES)) if i not in lx.GP_HELD_OUT]
_SEEN_GT = [n for n in lx.GT_NOUNS if n not in lx.GT_HELD_OUT]
_SEEN_SVA = [i for i, (sg, _) in enumerate(lx.SVA_NOUNS) if sg not in lx.SVA_HELD_OUT]


def gender(name: str) -> str:
    """``"male"`` or ``"female"`` for a name of :data:`lexicon.NAMES`."""
    return "male" if name in lx.MALE_NAMES else "female"


def sva_subject(rng: np.random.Generator, nouns: list[int]) -> tuple[int, int, str]:
    """A random subject: (noun index, number 0 = singular / 1 = plural, word)."""
    i, num = nouns[int(rng.integers(len(nouns)))], int(rng.integers(2))
    return i, num, lx.SVA_NOUNS[i][num]


def _until_unreserved(rng: np.random.Generator, task: str, draw):
    """Draw ``(key, sentence)`` until the key is not reserved for evaluation."""
    while True:
        key, sentence = draw()
        if not lx.is_reserved(task, *key):
            return sentence


def _sentence(rng: np.random.Generator, kind: str) -> str:
    if kind == "ioi":
        def draw():
            io, s = (lx.NAMES[i] for i in rng.choice(len(lx.NAMES), size=2, replace=False))
            t, abba = _pick(rng, _SEEN_IOI), bool(rng.integers(2))
            return (t, io, s, abba), ioi_sentence(rng, lx.IOI_TEMPLATES_BABA[t], io, s, abba) + "."
        return _until_unreserved(rng, "ioi", draw)
    if kind == "gp":
        name = _pick(rng, lx.NAMES)
        pron = lx.PRONOUNS[gender(name)]
        if rng.random() < 0.6:
            def draw():
                a = _pick(rng, _SEEN_GP)
                return (name, a), f"So {name} is {lx.GP_ATTRIBUTES[a]}, isn't {pron}?"
            return _until_unreserved(rng, "gp", draw)
        form = int(rng.integers(3))
        if form == 0:
            return f"{name} said that {pron} was {_pick(rng, lx.ADJECTIVES)}."
        if form == 1:
            return f"{name} went to the {_pick(rng, lx.PLACES)} because {pron} was {_pick(rng, lx.ADJECTIVES)}."
        return f"When {name} saw the {_pick(rng, lx.NOUNS)}, {pron} was {_pick(rng, lx.ADJECTIVES)}."
    if kind == "gt":
        def draw():
            noun, xx, yy = _pick(rng, _SEEN_GT), _pick(rng, lx.GT_CENTURIES), _pick(rng, lx.GT_START_YY)
            zz = int(rng.integers(yy + 1, min(99, yy + lx.GT_MAX_SPAN) + 1))
            return (noun, xx, yy), f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}{zz:02d}."
        return _until_unreserved(rng, "gt", draw)
    if kind == "sva":
        if rng.random() < 0.5:  # plain agreement, every noun (held-out subjects learn their number here)
            _, num, subj = sva_subject(rng, list(range(len(lx.SVA_NOUNS))))
            adverbs = "".join(f" {_pick(rng, lx.SVA_ADVERBS)}" for _ in range(int(rng.integers(0, 4))))
            verb = _pick(rng, lx.SVA_VERBS["plural" if num else "singular"])
            return f"The {subj}{adverbs} {verb} {_sva_rest(rng, verb)}."

        def draw():
            i, num, subj = sva_subject(rng, _SEEN_SVA)
            j, num2, obj = sva_subject(rng, list(range(len(lx.SVA_NOUNS))))
            verb = _pick(rng, lx.SVA_VERBS["plural" if num else "singular"])
            if rng.random() < 0.75:
                prep = _pick(rng, lx.SVA_PREPS)
                return (i, num, prep, j, num2), f"The {subj} {prep} the {obj} {verb} {_sva_rest(rng, verb)}."
            return (i, num, "that", j, num2), (f"The {subj} that the {obj} {_pick(rng, lx.VERBS_PAST)} {verb} "
                                               f"{_sva_rest(rng, verb)}.")
        return _until_unreserved(rng, "sva", draw)
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
        return _repeat(rng)
    if kind == "ordinal":
        seq = _pick(rng, lx.ORDINAL_SEQUENCES)
        start = int(rng.integers(len(seq)))
        n = int(rng.integers(3, len(seq) + 1))
        return " ".join(seq[(start + i) % len(seq)] for i in range(n)) + "."
    if kind == "filler":
        form = int(rng.integers(4))
        if form == 0:
            return (f"The {_pick(rng, lx.NOUNS)} {_pick(rng, lx.VERBS_PAST)} the {_pick(rng, lx.NOUNS)} "
                    f"at the {_pick(rng, lx.PLACES)}.")
        if form == 1:  # event nouns (Greater-Than's, held-out ones included) outside the frame
            return f"The {_pick(rng, lx.GT_NOUNS)} was {_pick(rng, lx.ADJECTIVES)}."
        if form == 2:  # attributes (held-out ones included) outside the "isn't" frame
            return f"{_pick(rng, lx.NAMES)} was {_pick(rng, lx.GP_ATTRIBUTES)}."
        return f"In {_pick(rng, lx.GT_CENTURIES)}{_pick(rng, lx.GT_YY):02d} the {_pick(rng, lx.NOUNS)} was {_pick(rng, lx.ADJECTIVES)}."
    raise ValueError(f"unknown sentence kind {kind!r}; valid kinds: {list(SENTENCE_KINDS)}")


_REPEAT_POOL = lx.repeat_words()


def _repeat(rng: np.random.Generator) -> str:
    """A span of 2 … :data:`lexicon.REPEAT_MAX_SPAN` distinct words from the whole lexicon, then a gap (a separator
    of :data:`lexicon.REPEAT_SEPARATORS`, and in half the cases 1–6 random words), then the span again: whole (half
    the time), its prefix, or a stretch from its middle, of at least 2 words. No bigram of the span is predictable
    from the lexicon, so only copying from the earlier occurrence predicts the second (Olsson et al. 2022)."""
    n = int(rng.integers(2, lx.REPEAT_MAX_SPAN + 1))
    span = [_REPEAT_POOL[int(i)] for i in rng.choice(len(_REPEAT_POOL), size=n, replace=False)]
    form = rng.random()
    if form < 0.5:
        again = span
    elif form < 0.75:
        again = span[:int(rng.integers(2, n + 1))]
    else:
        start = int(rng.integers(0, n - 1))
        again = span[start:start + int(rng.integers(2, n - start + 1))]
    gap = _pick(rng, lx.REPEAT_SEPARATORS)
    if rng.random() < 0.5:
        gap += " " + " ".join(_pick(rng, _REPEAT_POOL) for _ in range(int(rng.integers(1, 7))))
    return f"{' '.join(span)}{gap} {' '.join(again)}."


def _sva_rest(rng: np.random.Generator, verb: str | None = None) -> str:
    if verb in ("has", "have"):
        return f"a {_pick(rng, lx.OBJECTS)}"
    return _pick(rng, lx.ADJECTIVES)


def iter_documents(seed: int, config: CorpusConfig) -> Iterator[str]:
    """Documents of the grammar seeded ``seed``, without end: document ``i`` depends only on ``(seed, config)`` and
    the documents before it, so any prefix equals :func:`generate_documents` of that length."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in SENTENCE_KINDS if config.weights.get(k, 0) > 0]
    p = np.array([config.weights[k] for k in kinds], dtype=np.float64)
    p /= p.sum()
    lo, hi = config.sentences_per_document
    while True:
        n = int(rng.integers(lo, hi + 1))
        yield " ".join(_sentence(rng, kinds[int(i)]) for i in rng.choice(len(kinds), size=n, p=p))


def generate_documents(seed: int, n_documents: int, config: CorpusConfig) -> list[str]:
    """Generate ``n_documents`` documents; identical for identical ``(seed, n_documents, config)``, and the first
    ``k`` of them equal ``generate_documents(seed, k, config)`` (:func:`iter_documents`)."""
    return list(itertools.islice(iter_documents(seed, config), n_documents))


def lexicon_sample() -> list[str]:
    """Strings that together contain every word the grammar and the task generators can emit.

    Used to build the tokenizer's vocabulary, so every word (with and without a leading space) is one token.
    """
    words = list(lx.repeat_words())  # every lexicon word, in each of its casings
    template_words = " ".join(lx.IOI_TEMPLATES_BABA).replace("[", " ").replace("]", " ")
    texts = [" ".join(words), template_words, template_words.lower(), "The the A a. , It it Then When While After"]
    texts += [w + "." for w in words] + [w + "," for w in words]
    texts += [" ".join(str(y) for y in range(1100, 1900)), "00 01 99", "?"]
    # every sentence form of the grammar, each kind sampled on its own
    for kind in SENTENCE_KINDS:
        texts += generate_documents(0, 200, CorpusConfig(weights={kind: 1.0}))
    return [" " + t for t in texts]
