"""Checkpoints published as hub revisions: each family's naming scheme turns a branch or tag name into a training
step and the tokens seen by then, and a study takes all of a repository's checkpoints or a subset of them.

Schemes (:data:`SCHEMES`; tokens seen per step with its source, or read from the name):

- **pythia** — ``EleutherAI/pythia-*`` and PolyPythias: ``step{N}``; 2,097,152 tokens per step (batch 1,024 ×
  context 2,048; Biderman et al. 2023, §2.1).
- **crfm** — ``stanford-crfm/{alias,battlestar,caprica,darkmatter,expanse}-gpt2-{small,medium}-x{21,49,81,343,777}``:
  ``checkpoint-{N}``; 524,288 tokens per step (batch 512 sequences, stanford-crfm/mistral's training configs
  "full batch size (512)", × GPT-2's context of 1,024).
- **olmo** — ``allenai/OLMo-1B-0724-hf``, ``OLMo-7B-0724-hf``: ``step{N}-tokens{M}B``; tokens from the name (M·10⁹,
  rounded to the billion by the publisher).
- **olmo2** — ``allenai/OLMo-2-*``: ``stage1-step{N}-tokens{M}B``, ``stage2-ingredient{K}-step{N}-tokens{M}B``;
  tokens from the name. Listed only: the engine refuses OLMo 2 (:data:`circuit_stability.graph.NOT_ADDITIVE`).
- **smollm2** — ``HuggingFaceTB/SmolLM2-*-intermediate-checkpoints``: ``step-{N}``; tokens per step not published
  in a source this project could read: give ``tokens_per_step`` explicitly, or tokens seen stay unknown.
- **amber** — ``LLM360/Amber``: ``ckpt_{NNN}``, the checkpoint's index (360 of them), not an optimiser step;
  tokens per checkpoint not taken from a source here either.

Names a scheme does not match (``main``, ``refs/pr/1``) are not checkpoints and are left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from circuit_stability.scale import thin

PYTHIA_TOKENS_PER_STEP = 2_097_152
CRFM_TOKENS_PER_STEP = 512 * 1024


@dataclass(frozen=True)
class Scheme:
    """A family's revision naming: ``pattern`` (named groups ``step`` and, where the name carries them, ``tokens``
    in billions and ``stage``), ``tokens_per_step`` (None: from the name, or unknown), and the repositories it
    applies to (``repos``: a regular expression on ``owner/name``)."""

    name: str
    pattern: re.Pattern
    repos: re.Pattern
    tokens_per_step: int | None
    source: str
    template: str | None = None  # the revision of a step (``str.format(step=N)``); None: the name carries more


SCHEMES = {
    "pythia": Scheme("pythia", re.compile(r"^step(?P<step>\d+)$"), re.compile(r"^EleutherAI/pythia-"),
                     PYTHIA_TOKENS_PER_STEP, "Biderman et al. 2023, §2.1: batch 1,024 x context 2,048", "step{step}"),
    "crfm": Scheme("crfm", re.compile(r"^checkpoint-(?P<step>\d+)$"), re.compile(r"^stanford-crfm/[a-z]+-gpt2-"),
                   CRFM_TOKENS_PER_STEP, "stanford-crfm/mistral training configs: batch 512 x GPT-2 context 1,024",
                   "checkpoint-{step}"),
    "olmo": Scheme("olmo", re.compile(r"^step(?P<step>\d+)-tokens(?P<tokens>\d+)B$"), re.compile(r"^allenai/OLMo-\d+B"),
                   None, "the revision name (billions of tokens)"),
    "olmo2": Scheme("olmo2", re.compile(r"^(?P<stage>stage1|stage2-ingredient\d+)-step(?P<step>\d+)-tokens(?P<tokens>\d+)B$"),
                    re.compile(r"^allenai/OLMo-2-"), None, "the revision name (billions of tokens)"),
    "smollm2": Scheme("smollm2", re.compile(r"^step-(?P<step>\d+)$"),
                      re.compile(r"^HuggingFaceTB/SmolLM2-.*intermediate"), None, "not published in a source read here",
                      "step-{step}"),
    "amber": Scheme("amber", re.compile(r"^ckpt_(?P<step>\d+)$"), re.compile(r"^LLM360/Amber$"), None,
                    "not published in a source read here (the name is the checkpoint's index)", "ckpt_{step:03d}"),
}


@dataclass(frozen=True)
class HubCheckpoint:
    """One published checkpoint: its revision (branch or tag), the training step, the tokens seen (None when the
    family's tokens per step are unknown), the stage (OLMo 2's; empty otherwise) and the commit it points to."""

    revision: str
    step: int
    tokens_seen: int | None
    stage: str = ""
    commit: str = ""


def scheme_of(repo: str) -> Scheme:
    """The revision scheme of a repository, from its name.

    Raises:
        ValueError: naming the repository and the families with a scheme, if none applies.
    """
    for scheme in SCHEMES.values():
        if scheme.repos.match(repo):
            return scheme
    raise ValueError(f"no checkpoint naming scheme for {repo!r}; known families: "
                     + "; ".join(f"{s.name} ({s.repos.pattern.lstrip('^').rstrip('$')})" for s in SCHEMES.values()))


def parse_revision(scheme: Scheme, revision: str, commit: str = "",
                   tokens_per_step: int | None = None) -> HubCheckpoint | None:
    """The checkpoint a revision name denotes under ``scheme``, or None if the name is not a checkpoint (``main``).

    Tokens seen: from the name where it carries them (OLMo: M·10⁹), else ``step × tokens_per_step`` (the argument,
    or the scheme's published value), else None.
    """
    m = scheme.pattern.match(revision)
    if not m:
        return None
    step = int(m["step"])
    groups = m.groupdict()
    if groups.get("tokens") is not None:
        tokens = int(groups["tokens"]) * 10**9
    else:
        per_step = tokens_per_step or scheme.tokens_per_step
        tokens = step * per_step if per_step else None
    return HubCheckpoint(revision, step, tokens, groups.get("stage") or "", commit)


def checkpoints_from_refs(repo: str, refs, tokens_per_step: int | None = None) -> list[HubCheckpoint]:
    """Every checkpoint among a repository's branches and tags, sorted by (stage, step).

    Args:
        refs: ``huggingface_hub.GitRefs`` (what ``HfApi.list_repo_refs`` returns: ``.branches`` and ``.tags``, each
            ``GitRefInfo`` with ``.name`` and ``.target_commit``); BLOOM-style repositories publish checkpoints
            as tags, so both are read.

    Raises:
        ValueError: from :func:`scheme_of`, or if a step appears twice within a stage under different names.
    """
    scheme = scheme_of(repo)
    found: dict[tuple[str, int], HubCheckpoint] = {}
    for ref in [*refs.branches, *refs.tags]:
        ckpt = parse_revision(scheme, ref.name, ref.target_commit, tokens_per_step)
        if ckpt is None:
            continue
        key = (ckpt.stage, ckpt.step)
        if key in found and found[key].revision != ckpt.revision:
            raise ValueError(f"{repo}: step {ckpt.step}{' of ' + ckpt.stage if ckpt.stage else ''} is published "
                             f"twice, as {found[key].revision!r} and {ckpt.revision!r}")
        found[key] = ckpt
    return [found[k] for k in sorted(found)]


def revision_of(repo: str, step: int, refs=None) -> str:
    """The revision (branch or tag) of checkpoint ``step`` of ``repo``.

    Where the family's names are a function of the step (Pythia ``step{N}``, CRFM ``checkpoint-{N}``, SmolLM2
    ``step-{N}``, Amber ``ckpt_{NNN}``) it is formatted, offline. Where a name carries more than the step (OLMo's
    ``step{N}-tokens{M}B``) it is looked up among ``refs`` (``huggingface_hub.GitRefs``: the download job lists the
    hub's), else among the revisions already in the Hugging Face cache (:func:`cached_revisions`: what an analysis
    job, offline, reads after the download job fetched them).

    Raises:
        ValueError: from :func:`scheme_of`.
        LookupError: naming the repository, the step and the nearest steps found, if no revision has that step.
    """
    scheme = scheme_of(repo)
    if scheme.template is not None:
        return scheme.template.format(step=step)
    names = [r.name for r in [*refs.branches, *refs.tags]] if refs is not None else cached_revisions(repo)
    found = {c.step: c.revision for n in names if (c := parse_revision(scheme, n)) is not None and not c.stage}
    if step in found:
        return found[step]
    where = "on the hub" if refs is not None else "in the Hugging Face cache (HF_HOME; the download job fills it)"
    near = sorted(found, key=lambda s: (abs(s - step), s))[:4]
    raise LookupError(f"{repo} has no checkpoint of step {step} {where}; "
                      + (f"nearest steps: {sorted(near)}" if near else "no checkpoint found there at all"))


def cached_revisions(repo: str, cache_dir: str | None = None) -> list[str]:
    """The revision names of ``repo`` that the Hugging Face cache (``cache_dir``, default the hub cache under
    ``HF_HOME``) holds a ref for (``models--{owner}--{name}/refs/<revision>``, written by every download by
    revision); [] when none."""
    from pathlib import Path

    from huggingface_hub import constants

    refs = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs"
    return sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []


def every_kth(checkpoints: list[HubCheckpoint], k: int) -> list[HubCheckpoint]:
    """Every ``k``-th checkpoint in order, the first and the last always kept (:func:`scale.thin` on their
    positions).

    Raises:
        ValueError: if ``k < 1``.
    """
    return [checkpoints[i] for i in thin(list(range(len(checkpoints))), k)]


def log_spaced(checkpoints: list[HubCheckpoint], n: int) -> list[HubCheckpoint]:
    """About ``n`` checkpoints evenly spaced in log(step + 1) between the first and the last (each target taken
    by the nearest published step; duplicates merged, so fewer than ``n`` where the early steps are sparse),
    the first and the last always kept — the spacing of Pythia's own early checkpoints, for any family.

    Raises:
        ValueError: if ``n < 2``.
    """
    if n < 2:
        raise ValueError(f"a log-spaced subset needs n >= 2; got {n}")
    if len(checkpoints) <= n:
        return list(checkpoints)
    logs = [math.log1p(c.step) for c in checkpoints]
    lo, hi = logs[0], logs[-1]
    picked: list[int] = []
    for i in range(n):
        target = lo + (hi - lo) * i / (n - 1)
        j = min(range(len(logs)), key=lambda j: (abs(logs[j] - target), j))
        if j not in picked:
            picked.append(j)
    return [checkpoints[j] for j in sorted(picked)]


def list_checkpoints(repo: str, tokens_per_step: int | None = None, api=None) -> list[HubCheckpoint]:
    """A repository's checkpoints from the hub (``HfApi.list_repo_refs``: branches and tags with their commits in one
    request).

    Raises:
        ValueError: from :func:`scheme_of` (checked before any request).
        ConnectionError: naming the repository, if the hub cannot be reached (offline, or ``HF_HUB_OFFLINE``).
    """
    scheme_of(repo)
    return checkpoints_from_refs(repo, list_refs(repo, api), tokens_per_step)


def list_refs(repo: str, api=None):
    """A repository's branches and tags from the hub (``huggingface_hub.GitRefs``, one ``list_repo_refs`` request).

    Raises:
        ConnectionError: naming the repository, if the hub cannot be reached (offline, or ``HF_HUB_OFFLINE``) or has
            no such repository.
    """
    from huggingface_hub import HfApi

    try:
        return (api or HfApi()).list_repo_refs(repo)
    except Exception as e:  # huggingface_hub raises several kinds for an unreachable hub; all mean the same here
        raise ConnectionError(f"cannot list the revisions of {repo} on the hub ({type(e).__name__}: {e}); this "
                              "needs the hub (or a mirror in HF_ENDPOINT)") from e
