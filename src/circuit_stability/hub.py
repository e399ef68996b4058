"""Checkpoints from the Hugging Face hub (Pythia and the other families of :mod:`circuit_stability.revisions`):
download one (model, step) into the cache (``HF_HOME``), and delete it again once every job that reads it has
finished (``hub.evict``).

The download rule (rules/download.smk) runs :func:`download_checkpoint` per (model, step) and writes a marker
JSON; every model job then reads the cache with ``HF_HUB_OFFLINE=1``, so nothing but the download rule ever
touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

from circuit_stability.audit import content_id
from circuit_stability.models import checkpoint_revisions

# What a TransformerBridge needs of a Pythia revision: the config, the tokenizer and the weights (safetensors when
# the revision has them, else the PyTorch pickle; never both).
META_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"]


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched; the message names model, step, revision and the cause."""


def download_checkpoint(name: str, step: int, out: str | Path) -> dict:
    """Download checkpoint ``step`` of hub model ``name`` (its family's revision of that step:
    :func:`circuit_stability.models.checkpoint_revision`) into the Hugging Face cache and write the marker ``out``
    (JSON: model, step, revision, commit, files, bytes, cache folder, the weight files' git-LFS ``sha256`` and
    their ``content`` id as the checkpoint audit computes it).

    Args:
        name: a Pythia or PolyPythias hub name (``EleutherAI/pythia-160m``) or a repository of another family
            (``stanford-crfm/alias-gpt2-small-x21``, ``allenai/OLMo-1B-0724-hf``; :func:`~circuit_stability.models.
            hub_family`). An OLMo revision name carries the tokens seen, so its revision is found among the
            repository's branches and tags (one ``list_repo_refs`` request).
        step: a checkpoint step of that model.
        out: the marker file, written only after every file is in the cache.

    Returns:
        The marker's contents.

    Raises:
        ValueError: unknown model, or a step Pythia does not have, before any network use.
        NotImplementedError: an OLMo 2 repository (:func:`~circuit_stability.models.hub_family`).
        DownloadError: the hub cannot be reached, the repository or revision does not exist (naming the nearest
            published steps where the repository was listed), or a file fails to download; naming model, step and
            revision.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        revision = checkpoint_revisions(name, [step])[step]
    except ConnectionError as e:
        raise DownloadError(f"cannot download {name} step {step}: listing its revisions failed, the hub cannot be "
                            f"reached or has no such repository ({e})") from e
    except LookupError as e:
        raise DownloadError(f"cannot download {name} step {step}: {e}") from e
    where = f"{name} step {step} (revision {revision!r})"
    try:
        info = HfApi().model_info(name, revision=revision, files_metadata=True)
    except RevisionNotFoundError as e:
        raise DownloadError(f"cannot download {where}: the hub has no such revision ({type(e).__name__})") from e
    except RepositoryNotFoundError as e:
        raise DownloadError(f"cannot download {where}: the hub has no such repository ({type(e).__name__})") from e
    except Exception as e:  # connection refused, DNS, timeouts, HTTP errors: the hub cannot be reached
        raise DownloadError(f"cannot download {where}: the hub cannot be reached ({type(e).__name__}: {e})") from e
    files = {s.rfilename: s.size or 0 for s in info.siblings or []}
    weights = [f for f in files if f.endswith(".safetensors") or f == "model.safetensors.index.json"]
    if not weights:
        weights = [f for f in files if f.endswith(".bin") or f == "pytorch_model.bin.index.json"]
    if not weights:
        raise DownloadError(f"cannot download {where}: the revision holds no weights (files: {sorted(files)})")
    wanted = [f for f in files if f in META_PATTERNS] + weights
    try:
        folder = snapshot_download(name, revision=revision, allow_patterns=wanted)
    except Exception as e:
        raise DownloadError(f"cannot download {where}: {type(e).__name__}: {e}") from e
    # the weight files' git-LFS SHA-256 and their content id, as the checkpoint audit compares them
    # (circuit_stability.audit.content_id): what this marker's weights were, should the hub's change later
    sha256 = {s.rfilename: s.lfs.sha256 for s in info.siblings or [] if s.rfilename in weights and s.lfs}
    marker = {"model": name, "step": step, "revision": revision, "commit": info.sha, "files": sorted(wanted),
              "bytes": int(sum(files[f] for f in wanted)), "folder": str(folder), "sha256": sha256,
              "content": content_id(sha256) if sha256 else ""}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(marker, indent=1))
    tmp.replace(out)
    return marker


def evict_checkpoint(marker: str | Path, cache_dir: str | Path | None = None) -> int:
    """Delete the revision named by download marker ``marker`` from the Hugging Face cache (``cache_dir``,
    default the hub cache under ``HF_HOME``).

    Returns:
        Bytes freed (0 when the revision is no longer cached).

    Raises:
        FileNotFoundError: no marker at ``marker``.
    """
    info = json.loads(Path(marker).read_text())
    from huggingface_hub import scan_cache_dir

    cache = scan_cache_dir(cache_dir)
    commits = [r.commit_hash for repo in cache.repos if repo.repo_id == info["model"] for r in repo.revisions
               if r.commit_hash == info["commit"]]
    if not commits:
        return 0
    strategy = cache.delete_revisions(*commits)
    strategy.execute()
    return int(strategy.expected_freed_size)
