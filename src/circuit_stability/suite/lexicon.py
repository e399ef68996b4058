"""Word lists and templates shared by the corpus grammar and the task generators.

One source of truth: the corpus (what the embedded suite is trained on) and the evaluation datasets
(tasks/) draw their words from here, so every evaluation word occurs in training, and the split between
templates seen in training and templates held out of it is defined once.

Sources: IOI names, places, objects and templates follow Wang et al. (2023) as used by Tigges et al. (2024)
(reference.md §2.1); Gendered-Pronoun names and attributes follow reference.md §2.2.
"""

from __future__ import annotations

# --- names (single words; Wang et al.'s list starts Aaron, Adam, Alan, …; GP names from reference.md §2.2)
MALE_NAMES = (
    "Aaron Adam Alan Alex Andrew Brian Carl Charles Chris Daniel David Eric Frank Gary George Jack James "
    "Jason John Joe Kevin Mark Matthew Michael Paul Peter Richard Robert Ryan Sean Steven Thomas Tim William"
).split()
FEMALE_NAMES = (
    "Alice Amy Anna Carol Emily Emma Grace Hannah Helen Jane Jessica Judy Julie Karen Kate Laura Lisa Lucy "
    "Maria Mary Nancy Rachel Rose Ruth Sarah Susan"
).split()
NAMES = tuple(MALE_NAMES + FEMALE_NAMES)

PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")

# --- IOI templates (Wang et al. 2023, BABA family; the ABBA family swaps the first two names).
# [A] is the indirect object (IO), [B] the subject (S). The prompt ends just before the final [A].
IOI_TEMPLATES_BABA = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)
# Templates with these indices never appear in the training corpus (the "held_out" split).
IOI_HELD_OUT = frozenset({5, 8, 11})  # each word of these occurs in other templates

# --- filler vocabulary
NOUNS = (
    "cat dog bird horse teacher doctor farmer child friend king queen student writer singer baker "
    "driver painter pilot"
).split()
ADJECTIVES = "happy tired busy quiet kind brave late early hungry young old calm".split()
VERBS_PAST = "saw liked found helped called visited met thanked".split()
ORDINAL_SEQUENCES = (
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "January February March April May June July August September October November December".split(),
    "one two three four five six seven eight nine ten".split(),
    "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
)

# --- Gendered-Pronoun (reference.md §2.2): "So {name} is {attribute}, isn't" -> " he" / " she"
GP_ATTRIBUTES = (
    "such a good cook", "a very good athlete", "a really great friend", "such a funny person",
    "a really nice person", "such a kind teacher", "a very good singer",
)
GP_HELD_OUT = frozenset({5, 6})  # attribute indices never used in the "So … isn't" frame in training
PRONOUNS = {"male": "he", "female": "she"}

# --- Greater-Than (reference.md §2.3): "The {noun} lasted from the year {XX}{YY} to the year {XX}"
GT_NOUNS = ("war", "trip", "reign", "drought", "festival", "journey", "project", "expedition", "strike",
            "siege", "voyage", "fair")
GT_HELD_OUT = frozenset({"strike", "siege", "voyage", "fair"})  # never in the frame; seen in other sentences
GT_CENTURIES = tuple(range(11, 19))  # years 1100–1899, as the paper's 1100–1800
GT_YY = tuple(range(2, 99))  # the first (00, 01) and last (99) years of a century are not used as YY
# Start years in training: 00 … 98. Real text starts durations in XX00 and XX01 too, and the task's corrupted
# prompt ("from the year XX01") must be in-distribution: a model that never saw "01" as a start year answers it
# with an arbitrary year, and the corrupted run then scores a high probability difference on the clean flags.
GT_START_YY = tuple(range(0, 99))
GT_MAX_SPAN = 25  # in training, the end year is 1 … 25 years after the start (a real duration, not any later year)

# --- Subject-verb agreement: "The {subject} {prep} the {noun}" -> is/are, was/were, has/have
SVA_NOUNS = (("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"), ("doctor", "doctors"),
             ("farmer", "farmers"), ("child", "children"), ("friend", "friends"), ("king", "kings"),
             ("student", "students"), ("writer", "writers"), ("singer", "singers"), ("baker", "bakers"),
             ("driver", "drivers"), ("painter", "painters"), ("pilot", "pilots"), ("bird", "birds"),
             ("horse", "horses"), ("queen", "queens"))
SVA_HELD_OUT = frozenset({"pilot", "horse", "queen"})  # never the subject of a distractor sentence in training
SVA_PREPS = ("near", "behind", "beside", "with")
SVA_VERBS = {"singular": ("is", "was", "has"), "plural": ("are", "were", "have")}
# Words that may stand between a subject and its verb without being a distractor (no noun): in training every
# subject, held-out ones included, is carried to its verb across 0-3 of these, so the number of a noun is read
# from a distance by the same mechanism for every noun (a compositional cue, not a per-noun lookup).
SVA_ADVERBS = ("really", "often", "still", "clearly", "here", "now", "today", "also", "always", "surely")

# Separators between the two copies of a repeated span (the corpus's induction motif), besides a gap of words
REPEAT_SEPARATORS = ("", ".", ",", " and", " then", " again", ":", " so")
REPEAT_MAX_SPAN = 24  # words per span: two copies and a gap fit a 64-token context


def repeat_words() -> tuple[str, ...]:
    """Every word of the lexicon in the three casings the tokenizer knows (as written, lower case, capitalised),
    sorted: the pool the corpus's repeated spans draw from, so the induction motif covers the whole vocabulary."""
    words = (list(NAMES) + list(PLACES) + list(OBJECTS) + NOUNS + ADJECTIVES + VERBS_PAST + list(SVA_ADVERBS)
             + [w for seq in ORDINAL_SEQUENCES for w in seq] + [w for pair in SVA_NOUNS for w in pair]
             + list(GT_NOUNS) + [w for a in GP_ATTRIBUTES for w in a.split()])
    return tuple(sorted({v for w in words for v in (w, w.lower(), w.capitalize())}))


# Fraction of each task's (template × filler) combinations reserved for evaluation: the corpus never
# generates a reserved combination, and the "seen" split of every evaluation set is drawn from them, so no
# evaluation prompt occurs verbatim in training.
RESERVED_FRACTION = {"ioi": 0.1, "gp": 0.25, "gt": 0.1, "sva": 0.1}


def is_reserved(task: str, *key) -> bool:
    """Whether the combination ``key`` of ``task`` is reserved for evaluation (a stable hash, seed-free)."""
    import hashlib

    digest = hashlib.sha256(repr((task, *key)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < RESERVED_FRACTION[task] * 10_000
