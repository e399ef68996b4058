"""Checkpoint audit: does checkpoint "step N" hold the weights of step N?

Upstream checkpoint releases are wrong in places: pythia-2.8b serves the final model's ``model.safetensors`` under
76 early step labels (EleutherAI/pythia issue #205), pythia-2.8b's steps 0–6300 are byte-identical (#195), every
Pythia model's ``step0`` and ``step1`` are identical (#83), pythia-12b's steps 50000 and 58000 carry the final
model's first shard (#206), ``pythia-160m-weight-seed{1,2}`` checkpoints do not descend from their own step 0
(#203), and three OLMo-2-1124-7B branches serve the same shards under different labels (allenai/OLMo #915). A study
that analyses such a checkpoint draws an emergence that never happened. Three audits, each a table with one row per
checkpoint and a ``flag`` (empty: nothing found) and ``reason``:

- **file level** (:func:`file_level_audit`): the content hash of each revision's weight files, from the hub's
  metadata (the git-LFS SHA-256 of each file; no weights downloaded, :func:`hub_weight_hashes`). Two step labels
  with the same content are ``duplicate``; a non-final step whose content equals the final step's is
  ``final_weights``.
- **tensor level** (:func:`tensor_level_audit`): after the weights are on disk, a digest of every tensor
  (:func:`checkpoint_digest`) and each checkpoint's relative L2 distance to the first and the final checkpoint and to
  its neighbours, read tensor by tensor (never more than five copies of one tensor in memory). Equal digests are
  ``duplicate`` / ``final_weights`` as above; a checkpoint farther from each of its neighbours than
  ``break_ratio`` times their distance from each other is a ``trajectory_break`` (#206's transplanted shard).
- **lineage** (:func:`lineage_audit`), for members of one family trained from different seeds: an early checkpoint
  of a run closer to another run's step 0 than to its own is ``lineage`` (#203).

What the audit cannot see: a mislabelled checkpoint that is a genuine checkpoint of the same run from another step
(two labels swapped, each on the trajectory) passes every test; a checkpoint that differs by less than float
rounding from the true one is the true one for every analysis here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

AUDIT_COLUMNS = ["model", "step", "level", "content", "duplicate_of", "rel_to_first", "rel_to_final", "rel_to_prev",
                 "rel_to_next", "flag", "reason"]
FLAGS = ("duplicate", "final_weights", "trajectory_break", "lineage", "unreadable")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def is_weight_file(name: str) -> bool:
    """Whether a repository file holds weights (``model.safetensors``, ``model-00001-of-00002.safetensors``,
    ``pytorch_model.bin``); index JSONs and configs do not."""
    return name.endswith(WEIGHT_SUFFIXES) and not name.startswith("optimizer")


def content_id(files: dict[str, str]) -> str:
    """One identifier (SHA-256 hex) of a revision's weight content from ``{file name: file SHA-256}``: two revisions
    serving the same weight files, byte for byte, have the same identifier.

    Raises:
        ValueError: if ``files`` is empty (a revision without weight files).
    """
    if not files:
        raise ValueError("a revision without weight files has no content identifier")
    return hashlib.sha256("\n".join(f"{n}:{h}" for n, h in sorted(files.items())).encode()).hexdigest()


def _flag_equal_content(content: dict[int, str], final_step: int) -> dict[int, tuple[str, str, list[int]]]:
    """``{step: (flag, reason, duplicate_of)}`` for steps sharing their content with another step: a non-final step
    sharing the final step's content is ``final_weights``, any other shared content ``duplicate``."""
    groups: dict[str, list[int]] = {}
    for step in sorted(content):
        groups.setdefault(content[step], []).append(step)
    out = {}
    for steps in groups.values():
        if len(steps) < 2:
            continue
        for step in steps:
            others = [s for s in steps if s != step]
            if step == final_step:
                out[step] = ("", "", others)  # the final checkpoint itself is the genuine holder of its weights
            elif content[step] == content.get(final_step):
                out[step] = ("final_weights", f"step {step} holds the final checkpoint's weights (step {final_step})",
                             others)
            else:
                out[step] = ("duplicate", f"step {step} holds the same weights as step(s) {others}", others)
    return out


def file_level_audit(model: str, hashes: dict[int, dict[str, str]], final_step: int | None = None) -> pd.DataFrame:
    """The file-level audit of one model from its revisions' weight-file hashes (no weights read).

    Args:
        model: the model's name (a column of the table).
        hashes: ``{step: {weight file name: SHA-256 hex}}`` (:func:`hub_weight_hashes`); a step with no weight
            file is flagged ``unreadable``.
        final_step: the final checkpoint's step (default: the largest step of ``hashes``).

    Returns:
        :data:`AUDIT_COLUMNS`, one row per step (``level`` ``"file"``, ``content`` the step's
        :func:`content_id`, distances NaN).

    Raises:
        ValueError: if ``hashes`` is empty.
    """
    if not hashes:
        raise ValueError(f"{model}: no revisions to audit")
    final_step = max(hashes) if final_step is None else final_step
    content = {s: content_id(f) for s, f in hashes.items() if f}
    flags = _flag_equal_content(content, final_step)
    rows = []
    for step in sorted(hashes):
        flag, reason, dup = flags.get(step, ("", "", []))
        if step not in content:
            flag, reason = "unreadable", f"step {step}: the revision lists no weight file"
        rows.append({"model": model, "step": step, "level": "file", "content": content.get(step, ""),
                     "duplicate_of": dup, "rel_to_first": np.nan, "rel_to_final": np.nan, "rel_to_prev": np.nan,
                     "rel_to_next": np.nan, "flag": flag, "reason": reason})
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def hub_weight_hashes(repo: str, revisions: dict[int, str], list_files: Callable | None = None
                      ) -> dict[int, dict[str, str]]:
    """The weight files' SHA-256 of each revision of a hub repository, from the hub's metadata (git LFS records each
    file's SHA-256; nothing is downloaded).

    Args:
        repo: ``EleutherAI/pythia-2.8b``.
        revisions: ``{step: revision}`` (``{1000: "step1000"}``).
        list_files: ``(repo, revision) -> iterable of huggingface_hub.hf_api.RepoFile``; default
            ``HfApi().list_repo_tree(repo, revision=revision)`` (one request per revision).

    Returns:
        ``{step: {file name: SHA-256 hex}}`` over the weight files a load reads (:func:`is_weight_file`: the
        ``.safetensors`` files where the revision has them, else the ``.bin`` files, as the download rule chooses);
        a file without LFS metadata is keyed by its git blob id instead.

    Raises:
        ConnectionError: naming the repository and revision, if the hub cannot be reached (this machine: never).
    """
    if list_files is None:
        from huggingface_hub import HfApi

        api = HfApi()

        def list_files(repo, revision):
            return api.list_repo_tree(repo, revision=revision)

    out = {}
    for step, revision in sorted(revisions.items()):
        try:
            files = list(list_files(repo, revision))
        except Exception as e:  # offline, DNS, HTTP errors: one message for all
            raise ConnectionError(f"cannot list {repo} revision {revision!r} on the hub: {type(e).__name__}: {e}") from e
        weights = {f.path: (f.lfs.sha256 if getattr(f, "lfs", None) else f"git:{f.blob_id}")
                   for f in files if hasattr(f, "blob_id") and is_weight_file(f.path)}
        # the files a load reads (as the download rule): safetensors where the revision has them, else the pickle
        safetensors = {n: h for n, h in weights.items() if n.endswith(".safetensors")}
        out[step] = safetensors or weights
    return out


def local_weight_hashes(folders: dict[int, str | Path]) -> dict[int, dict[str, str]]:
    """The SHA-256 of each local checkpoint's ``*.safetensors`` files (the file level of a suite model), in the form
    :func:`hub_weight_hashes` returns: ``{step: {file name: SHA-256 hex}}``; a folder without one maps to ``{}``
    (flagged ``unreadable`` by :func:`file_level_audit`).

    Raises:
        OSError: if a file cannot be read.
    """
    out = {}
    for step, folder in sorted(folders.items()):
        out[step] = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            with open(f, "rb") as fh:
                out[step][f.name] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .safetensors weight file")
    return files


def checkpoint_digest(folder: str | Path) -> str:
    """SHA-256 (hex) of a checkpoint's tensors: every tensor of its ``*.safetensors`` files in name order, with its
    name, dtype and shape (so the same weights in other files or another shard layout give the same digest).

    Raises:
        FileNotFoundError: if the folder holds no safetensors file.
        safetensors.SafetensorError: if a file is truncated or corrupt.
    """
    h = hashlib.sha256()
    where = _open(folder)
    for name in sorted(where):
        _digest_update(h, name, where[name].get_tensor(name))
    return h.hexdigest()


def _open(folder: str | Path) -> dict:
    """``{tensor name: safetensors handle holding it}`` over a checkpoint folder's weight files."""
    from safetensors import safe_open

    handles = [safe_open(f, "pt") for f in _weight_files(Path(folder))]
    return {k: f for f in handles for k in f.keys()}


def _digest_update(h, name: str, t) -> None:
    import torch

    t = t.contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_level_audit(model: str, folders: dict[int, str | Path], break_ratio: float = 2.0) -> pd.DataFrame:
    """The tensor-level audit of one model's checkpoints (read tensor by tensor).

    First every checkpoint's digest (:func:`checkpoint_digest`): a checkpoint equal to another is ``duplicate``
    (``final_weights`` when it equals the final one) and, like an ``unreadable`` one (truncated, corrupt, missing),
    is left out of the trajectory; of a group of equal checkpoints the final one, or else the earliest, stays in.
    Then, over the checkpoints left, θ_s in step order with first θ_0 and final θ_T: ``rel_to_first`` =
    ‖θ_s − θ_0‖ / ‖θ_0‖, ``rel_to_final`` = ‖θ_s − θ_T‖ / ‖θ_T‖, ``rel_to_prev`` / ``rel_to_next`` = ‖θ_s − θ_{s∓}‖ /
    ‖θ_T‖ (L2 over every floating-point tensor, float64 sums). An interior checkpoint with min(‖θ_s − θ_prev‖,
    ‖θ_s − θ_next‖) > ``break_ratio`` · ‖θ_next − θ_prev‖ is a ``trajectory_break``: its neighbours agree with each
    other and not with it (EleutherAI/pythia #206's transplanted shard). On any path, straight or noisy, that
    ratio is at most ~1 (a random walk: 1/√2), so 2 flags only a checkpoint off the path. Every checkpoint is read
    twice, once for its digest and once for the distances, because which checkpoints form the trajectory is known
    only once every digest is.

    Args:
        model: the model's name.
        folders: ``{step: checkpoint folder}`` (at least two).
        break_ratio: see above (> 1).

    Returns:
        :data:`AUDIT_COLUMNS`, one row per step, ``level`` ``"tensor"``, ``content`` the digest; distances NaN for a
        checkpoint left out of the trajectory.

    Raises:
        ValueError: fewer than two checkpoints left, ``break_ratio`` <= 1, or checkpoints whose tensor names or
            shapes differ (naming the steps and the tensor).
    """
    from safetensors import SafetensorError

    if len(folders) < 2:
        raise ValueError(f"{model}: the tensor-level audit needs at least two checkpoints; got {sorted(folders)}")
    if break_ratio <= 1:
        raise ValueError(f"break_ratio must be > 1; got {break_ratio}")
    rows = {s: {"model": model, "step": s, "level": "tensor", "content": "", "duplicate_of": [], "rel_to_first": np.nan,
                "rel_to_final": np.nan, "rel_to_prev": np.nan, "rel_to_next": np.nan, "flag": "", "reason": ""}
            for s in folders}
    handles, names = {}, None
    for s in sorted(folders):
        try:
            handles[s] = _open(folders[s])
            digest = hashlib.sha256()
            for name in sorted(handles[s]):
                _digest_update(digest, name, handles[s][name].get_tensor(name))
            rows[s]["content"] = digest.hexdigest()
        except (OSError, SafetensorError) as e:
            handles.pop(s, None)
            rows[s].update(flag="unreadable", reason=f"step {s}: {folders[s]} cannot be read "
                                                     f"({type(e).__name__}: {e})")
            continue
        if names is None:
            names, first_step = sorted(handles[s]), s
        elif sorted(handles[s]) != names:
            odd = sorted(set(handles[s]) ^ set(names))[:3]
            raise ValueError(f"{model}: step {s} has other tensors than step {first_step} (e.g. {odd})")
    if not handles:
        raise ValueError(f"{model}: no readable checkpoint ({'; '.join(r['reason'] for r in rows.values())})")
    final_step = max(handles)
    for s, (flag, reason, dup) in _flag_equal_content({s: rows[s]["content"] for s in handles}, final_step).items():
        rows[s].update(flag=flag, reason=reason, duplicate_of=dup)
    steps = [s for s in sorted(handles) if not rows[s]["flag"]]  # the trajectory: one of each content
    if len(steps) < 2:
        raise ValueError(f"{model}: fewer than two distinct readable checkpoints to audit ({sorted(folders)})")
    n = len(steps)
    norm0 = normT = 0.0
    to_first, to_final = np.zeros(n), np.zeros(n)
    adjacent, skip_one = np.zeros(n - 1), np.zeros(max(n - 2, 0))  # ‖θ_i − θ_{i+1}‖², ‖θ_i − θ_{i+2}‖²
    for name in names:
        first = handles[steps[0]][name].get_tensor(name)
        if not first.is_floating_point():
            continue
        first = first.double()
        final = handles[steps[-1]][name].get_tensor(name).double()
        norm0 += float(first.square().sum())
        normT += float(final.square().sum())
        window: list = []  # the last two tensors, for the neighbour distances
        for i, s in enumerate(steps):
            t = first if i == 0 else final if i == n - 1 else handles[s][name].get_tensor(name).double()
            if t.shape != first.shape:
                raise ValueError(f"{model}: tensor {name} has shape {tuple(t.shape)} at step {s} and "
                                 f"{tuple(first.shape)} at step {steps[0]}")
            to_first[i] += float((t - first).square().sum())
            to_final[i] += float((t - final).square().sum())
            if window:
                adjacent[i - 1] += float((t - window[-1]).square().sum())
            if len(window) == 2:
                skip_one[i - 2] += float((t - window[0]).square().sum())
            window = [*window[-1:], t]
    norm0, normT = np.sqrt(norm0) or 1.0, np.sqrt(normT) or 1.0
    adjacent, skip_one = np.sqrt(adjacent), np.sqrt(skip_one)
    for i, s in enumerate(steps):
        prev = adjacent[i - 1] if i > 0 else np.nan
        nxt = adjacent[i] if i < n - 1 else np.nan
        rows[s].update(rel_to_first=np.sqrt(to_first[i]) / norm0, rel_to_final=np.sqrt(to_final[i]) / normT,
                       rel_to_prev=prev / normT, rel_to_next=nxt / normT)
        if 0 < i < n - 1 and min(prev, nxt) > break_ratio * skip_one[i - 1]:
            rows[s].update(flag="trajectory_break", reason=(
                f"step {s} is {prev / normT:.3g} and {nxt / normT:.3g} (relative L2) from its neighbours "
                f"{steps[i - 1]} and {steps[i + 1]}, which are {skip_one[i - 1] / normT:.3g} apart: more than "
                f"{break_ratio:g} times as far"))
    return pd.DataFrame([rows[s] for s in sorted(rows)], columns=AUDIT_COLUMNS)


def _distance(a: dict, b: dict | None, names: Iterable[str]) -> float:
    """L2 distance over the floating-point tensors ``names`` of two opened checkpoints (``b`` None: the norm)."""
    total = 0.0
    for name in names:
        x = a[name].get_tensor(name)
        if x.is_floating_point():
            y = b[name].get_tensor(name).double() if b is not None else 0.0
            total += float((x.double() - y).square().sum())
    return float(np.sqrt(total))


def lineage_audit(runs: dict[str, dict[int, str | Path]], until: int = 512) -> pd.DataFrame:
    """The lineage audit of runs of one shape trained from different seeds (a seeds study, PolyPythias): each run's
    checkpoints at steps 1 … ``until`` should be closer (L2) to the run's own step 0 than to any other run's step 0
    (an early update moves the weights far less than the distance between two initialisations).

    Args:
        runs: ``{model: {step: checkpoint folder}}``, every run with a step 0 and the same tensors.
        until: the last step tested.

    Returns:
        :data:`AUDIT_COLUMNS`, one row per (model, tested step), ``level`` ``"lineage"``, ``rel_to_first`` the
        distance to its own step 0 and ``reason`` naming the nearest step 0 when it is another run's (flag
        ``lineage``).

    Raises:
        ValueError: fewer than two runs, or a run without step 0 (naming it).
    """
    if len(runs) < 2:
        raise ValueError(f"the lineage audit compares two or more runs; got {sorted(runs)}")
    missing = [m for m, f in runs.items() if 0 not in f]
    if missing:
        raise ValueError(f"the lineage audit needs every run's step 0; missing for {missing}")

    inits = {m: _open(f[0]) for m, f in runs.items()}
    names = sorted(next(iter(inits.values())))
    for m, h in inits.items():
        if sorted(h) != names:
            raise ValueError(f"the lineage audit compares runs of one shape; {m} has other tensors")
    norm = {m: _distance(h, None, names) or 1.0 for m, h in inits.items()}
    rows = []
    for model, folders in sorted(runs.items()):
        for step in sorted(s for s in folders if 0 < s <= until):
            h = _open(folders[step])
            d = {m: _distance(h, init, names) for m, init in inits.items()}
            nearest = min(d, key=d.get)
            flag, reason = "", ""
            if nearest != model:
                flag = "lineage"
                reason = (f"{model} step {step} is closer to {nearest}'s step 0 ({d[nearest] / norm[model]:.3g}, "
                          f"relative L2) than to its own ({d[model] / norm[model]:.3g})")
            rows.append({"model": model, "step": step, "level": "lineage", "content": "", "duplicate_of": [],
                         "rel_to_first": d[model] / norm[model], "rel_to_final": np.nan, "rel_to_prev": np.nan,
                         "rel_to_next": np.nan, "flag": flag, "reason": reason})
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


__all__ = ["AUDIT_COLUMNS", "FLAGS", "is_weight_file", "content_id", "file_level_audit", "hub_weight_hashes",
           "local_weight_hashes", "checkpoint_digest", "tensor_level_audit", "lineage_audit", "INTEGRITY_POLICIES",
           "IntegrityError", "flagged_steps", "read_skipped", "integrity_gate", "study_audit_table", "audit_page"]


# ---------------------------------------------------------------- the study's policy (hub.integrity, suite.integrity)
INTEGRITY_POLICIES = ("skip", "error", "keep")


class IntegrityError(RuntimeError):
    """Checkpoints the audit flagged are planned for analysis under the ``skip`` or ``error`` policy."""


def _current(path: Path, newer_than: Iterable[str | Path]) -> bool:
    """Whether ``path`` exists and no existing file of ``newer_than`` (what it was made from) is newer than it."""
    if not path.is_file():
        return False
    mtime = path.stat().st_mtime
    return not any(Path(f).is_file() and Path(f).stat().st_mtime > mtime for f in newer_than)


def flagged_steps(table: pd.DataFrame | str | Path, newer_than: Iterable[str | Path] = ()) -> dict[int, str]:
    """The checkpoints an audit table flags, at any level: ``{step: "flag: reason; ..."}``.

    Args:
        table: an audit table (:data:`AUDIT_COLUMNS`) or the path of its parquet file; a path that does not exist
            gives ``{}`` (not audited yet).
        newer_than: files the audit read (a suite model's checkpoints): if any exists and is newer than the table's
            file, the table describes checkpoints that have since been rewritten, and ``{}`` is returned (the
            workflow audits them again).

    Raises:
        ValueError: if the file cannot be read, or the table lacks the ``step``, ``flag`` or ``reason`` column
            (naming the file).
    """
    if not isinstance(table, pd.DataFrame):
        path = Path(table)
        if not _current(path, newer_than):
            return {}
        try:
            table = pd.read_parquet(path)
        except Exception as e:  # truncated or not parquet: pyarrow's errors vary
            raise ValueError(f"{path}: the checkpoint audit table cannot be read ({type(e).__name__}: {e}); delete "
                             f"it and run again: the audit runs again") from None
        where = f"{path}: "
    else:
        where = ""
    missing = {"step", "flag", "reason"} - set(table.columns)
    if missing:
        raise ValueError(f"{where}not a checkpoint audit table: no column(s) {sorted(missing)} "
                         f"(expected {AUDIT_COLUMNS})")
    out: dict[int, list[str]] = {}
    for row in table[table["flag"] != ""].itertuples():
        text = f"{row.flag}: {row.reason}"
        if text not in out.setdefault(int(row.step), []):
            out[int(row.step)].append(text)
    return {s: "; ".join(v) for s, v in sorted(out.items())}


def read_skipped(path: str | Path, newer_than: Iterable[str | Path] = ()) -> dict[int, str]:
    """The checkpoints a failed audit gate recorded (``{step: reason}``, :func:`integrity_gate`'s ``record``): what
    the study plans without (``skip``) or refuses to plan (``error``). ``{}`` when there is no record, or when any of
    ``newer_than`` (the model's checkpoints) is newer than it (they were rewritten: the audit runs again).

    Raises:
        ValueError: a record that is not a JSON object of steps (naming the file and the remedy).
    """
    import json

    path = Path(path)
    if not _current(path, newer_than):
        return {}
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a record of flagged checkpoints ({e}); delete it and run again") from None


def integrity_gate(model: str, flagged: dict[int, str], planned: Iterable[int], policy: str, key: str,
                   record: str | Path | None = None) -> list[int]:
    """Apply the study's integrity policy to the checkpoints of ``model`` planned for analysis.

    Args:
        model: the model's name (for the message).
        flagged: :func:`flagged_steps` of its audit table.
        planned: the checkpoint steps the study's analysis jobs read.
        policy: ``skip`` (flagged checkpoints are left out of the plan; one planned here stops the build, as the plan
            was made before the audit), ``error`` (a flagged checkpoint stops the build) or ``keep`` (analysed and
            marked).
        key: the config key of the policy (``hub.integrity`` or ``suite.integrity``), for the message.
        record: where to record the flagged planned checkpoints before raising (JSON ``{step: reason}``, added to
            what it holds): the next plan reads it (:func:`read_skipped`). A file, not the audit table, because the
            plan must stay the same for the whole of a build, while the audit table is written during it.

    Returns:
        the planned steps that are flagged and kept (policy ``keep``; else empty).

    Raises:
        IntegrityError: a planned checkpoint is flagged and the policy is ``skip`` or ``error``, naming each with
            its flag and reason and what to do.
        ValueError: an unknown policy.
    """
    if policy not in INTEGRITY_POLICIES:
        raise ValueError(f"{key}: {policy!r} is not a policy; valid: {', '.join(INTEGRITY_POLICIES)}")
    hit = [s for s in planned if s in flagged]
    if not hit or policy == "keep":
        return hit
    if record is not None:
        import json

        from circuit_stability.artifacts import atomic_path

        kept = {str(k): v for k, v in read_skipped(record).items()}
        with atomic_path(record) as tmp:
            Path(tmp).write_text(json.dumps({**kept, **{str(s): flagged[s] for s in hit}}, indent=1, sort_keys=True))
    listing = "\n".join(f"  step {s}: {flagged[s]}" for s in hit)
    if policy == "skip":
        todo = (f"{key}: skip leaves them out: run the same command again, and the study is planned without them "
                f"(the audit ran after this build was planned)")
    else:
        todo = (f"{key}: error stops here: replace the checkpoints (then delete results/audit/{model}.*), or set "
                f"{key} to skip (leave them out) or keep (analyse and mark them)")
    raise IntegrityError(f"the checkpoint audit flagged {len(hit)} checkpoint(s) of {model} this study would "
                         f"analyse:\n{listing}\n{todo}")


def study_audit_table(tables: Iterable[pd.DataFrame], planned: dict[str, Iterable[int]], policy: str) -> pd.DataFrame:
    """The study's checkpoint-audit table: every model's audit rows (:data:`AUDIT_COLUMNS`) with ``action``, what the
    study did with each flagged checkpoint (``skipped``: left out of the analysis; ``kept``: analysed, marked in the
    figures; empty for a checkpoint not flagged), and ``policy``, the integrity policy applied.

    Args:
        tables: each model's audit table.
        planned: ``{model: steps analysed}`` (after the policy).
        policy: the study's integrity policy (:data:`INTEGRITY_POLICIES`).

    Raises:
        ValueError: if ``tables`` is empty.
    """
    tables = list(tables)
    if not tables:
        raise ValueError("no audit tables to collect")
    table = pd.concat(tables, ignore_index=True)
    analysed = {(m, int(s)) for m, steps in planned.items() for s in steps}
    table["action"] = ["" if flag == "" else ("kept" if (m, int(s)) in analysed else "skipped")
                       for m, s, flag in zip(table["model"], table["step"], table["flag"])]
    table["policy"] = policy
    return table


def audit_page(table: pd.DataFrame, key: str) -> str:
    """A self-contained HTML page of a study's checkpoint audit (:func:`study_audit_table`) for the report: per
    model and level the checkpoints audited and flagged, then every flagged checkpoint with its flag, reason and
    action (or a line saying none is flagged)."""
    import html

    policy = table["policy"].iloc[0] if len(table) else ""
    summary = (table.assign(flagged=table["flag"] != "").groupby(["model", "level"])
               .agg(checkpoints=("step", "nunique"), flagged=("flagged", "sum")).reset_index())
    flagged = table[table["flag"] != ""][["model", "step", "level", "flag", "reason", "action"]]
    body = (flagged.to_html(index=False, escape=True, border=0) if len(flagged)
            else "<p>No checkpoint is flagged.</p>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Checkpoint audit</title><style>"
            "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;text-align:left}</style></head><body><h2>Checkpoint audit</h2>"
            f"<p>Before any analysis read them, every checkpoint of every model was audited (file level: weight-file "
            f"hashes; tensor level: digests and distances along the trajectory; docs/checkpoint-audit.md). Policy "
            f"<code>{html.escape(key)}: {html.escape(str(policy))}</code>: skipped checkpoints are left out of every "
            f"analysis; kept ones are analysed and ringed in red in Figure 1.</p>"
            + summary.to_html(index=False, border=0) + "<h3>Flagged checkpoints</h3>" + body + "</body></html>")
