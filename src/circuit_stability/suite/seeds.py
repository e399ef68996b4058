"""Training seeds of the embedded suite, PolyPythias-style (van der Wal et al. 2025, "PolyPythias: Stability and
Outliers across Fifty Language Model Pre-Training Runs", §2; design §6).

A suite member has two seeds:

- the **weight seed** fixes the initialisation (``torch.manual_seed`` before the model is built);
- the **data seed** fixes the corpus: the grammar's sampling of documents and so their order in the token
  stream. Members with the same data seed read the same ``data/corpus/...`` stream, byte for byte.

As on the hub, a name carries its seeds: ``{model}-seed{k}`` varies both (``pythia-160m-seed3``),
``{model}-data-seed{k}`` only the data, ``{model}-weight-seed{k}`` only the initialisation; any other name uses
the study's seeds (``seed`` for the weights, ``suite.corpus.seed`` for the data). A model entry may also set
``weight_seed`` / ``data_seed`` itself; a value that contradicts its name is a config error. The tokenizer does
not depend on the data seed (its vocabulary is the grammar's lexicon), so every member shares one tokenizer and
the task datasets built with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DATA_SEED = 1000  # build_corpus seeds document chunk k with seed + k * chunk, chunk >= 1000 documents
NAME = re.compile(r"^(?P<base>.+?)-(?:(?P<kind>data|weight)-)?seed(?P<k>\d+)$")


@dataclass(frozen=True)
class Seeds:
    """The two seeds of one suite member (non-negative integers)."""

    weight: int
    data: int


def seeds_from_name(name: str) -> dict[str, int]:
    """The seeds a model name fixes: ``{"weight": k, "data": k}`` for ``*-seed{k}``, ``{"data": k}`` for
    ``*-data-seed{k}``, ``{"weight": k}`` for ``*-weight-seed{k}``, ``{}`` otherwise.

    >>> seeds_from_name("mini-m-seed2"), seeds_from_name("mini-m-data-seed3"), seeds_from_name("mini-m")
    ({'weight': 2, 'data': 2}, {'data': 3}, {})
    """
    m = NAME.match(name)
    if not m:
        return {}
    k = int(m["k"])
    return {"weight": k, "data": k} if m["kind"] is None else {m["kind"]: k}


def member_seeds(name: str, entry: dict, weight_default: int, data_default: int) -> Seeds:
    """The seeds of suite member ``name``: its entry's ``weight_seed`` / ``data_seed``, else those its name
    carries (:func:`seeds_from_name`), else the study's (``weight_default``: the config's ``seed``;
    ``data_default``: ``suite.corpus.seed``).

    Raises:
        ValueError: naming the member, if an entry's seed contradicts the seed in its name, or if the data seed is
            not below :data:`MAX_DATA_SEED`.
    """
    named = seeds_from_name(name)
    out = {}
    for kind, default in (("weight", weight_default), ("data", data_default)):
        given = entry.get(f"{kind}_seed")
        if given is not None and kind in named and given != named[kind]:
            raise ValueError(f"suite.models.{name}: {kind}_seed {given} contradicts the name, which says {kind} seed "
                             f"{named[kind]}; drop {kind}_seed or rename the model")
        out[kind] = given if given is not None else named.get(kind, default)
    if out["data"] >= MAX_DATA_SEED:
        raise ValueError(f"suite.models.{name}: data seed {out['data']} is too large; valid data seeds are 0 to "
                         f"{MAX_DATA_SEED - 1} (the corpus's document chunks are seeded seed + k * chunk with chunks of "
                         f">= {MAX_DATA_SEED} documents, so smaller seeds never share a chunk)")
    return Seeds(**out)


def corpus_name(family: str, data_seed: int, family_seed: int) -> str:
    """The corpus folder name (``data/corpus/<name>/``) of a data seed: the suite's own ``family`` for its
    ``suite.corpus.seed``, ``{family}-data-seed{d}`` for any other.

    >>> corpus_name("mini", 0, 0), corpus_name("mini", 3, 0)
    ('mini', 'mini-data-seed3')
    """
    return family if data_seed == family_seed else f"{family}-data-seed{data_seed}"


def corpus_seed(corpus: str, family: str, family_seed: int) -> int:
    """The data seed of corpus folder name ``corpus`` (the inverse of :func:`corpus_name`).

    Raises:
        ValueError: if ``corpus`` is neither ``family`` nor ``{family}-data-seed{d}``.
    """
    if corpus == family:
        return family_seed
    m = re.fullmatch(re.escape(family) + r"-data-seed(\d+)", corpus)
    if not m:
        raise ValueError(f"corpus {corpus!r} is not {family!r} or {family}-data-seed<d>")
    return int(m[1])
