"""Pull, then build: ``dvc pull``, mark the pulled artefacts up to date for Snakemake, build only what is missing.

Before pulling, :func:`preflight` refuses (changing nothing) where a pull could lose work or cannot work: no
``dvc.lock``, local results that differ from it, an unreachable remote, files the remote lacks; each refusal
says what to do, and none suggests ``--force``.

Why a wrapper (design §7): ``dvc pull`` writes files with fresh, arbitrary modification times and a fresh clone
has no ``.snakemake/`` metadata. Of Snakemake 9's rerun triggers (``mtime``, ``params``, ``input``, ``code``,
``software-env``) only ``mtime`` fires without metadata (the others compare with recorded metadata and stay
silent when there is none), so Snakemake would see pulled outputs older than pulled inputs and recompute them.

What :func:`sync` marks: the DAG outputs whose files DVC reports *unchanged* (``dvc data status --granular
--unchanged``: the bytes are exactly those ``dvc.lock`` records), and nothing else, so a deleted figure or a
locally recomputed file keeps its own state. ``snakemake --touch`` touches them in DAG order and records
Snakemake metadata for them. That metadata must describe how they were *made*, so the touch runs with the
config file as committed (``git show HEAD:<configfile>``) when the working copy differs: a plotting option
changed locally then reruns only the figures (Snakemake's ``params`` trigger), never the scores. The build
runs with the working config. Re-running ``sync`` (after an interrupted one, or after a plain ``dvc pull``)
is safe: the marking is recomputed from DVC's view, not from what the last pull changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath


def _say(msg: str) -> None:
    print(f"[circuit-stability sync] {msg}", file=sys.stderr, flush=True)


def dvc_unchanged_files(project: str | Path = ".") -> set[str]:
    """Files of DVC-tracked outputs whose content matches ``dvc.lock`` (``dvc data status --unchanged``)."""
    out = subprocess.run(["dvc", "data", "status", "--granular", "--unchanged", "--json"], cwd=project,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dvc data status failed:\n{out.stderr[-3000:]}")
    status = json.loads(out.stdout or "{}")
    return {p for p in status.get("unchanged", []) if not p.endswith("/")}


def dag_outputs(snakemake_args: list[str], project: str | Path = ".") -> list[str]:
    """Every output file (or ``directory()`` output) of the Snakemake DAG, from ``snakemake --summary``
    (:func:`circuit_stability.check.summary`)."""
    from circuit_stability.check import summary

    return [row["output_file"] for row in summary(snakemake_args, project)]


def touch_targets(verified: set[str], outputs: list[str]) -> list[str]:
    """DAG outputs to mark: a verified file itself, or a ``directory()`` output holding verified files."""
    folders = {parent.as_posix() for f in verified for parent in PurePosixPath(f).parents}
    return sorted({o for o in outputs if o in verified or o.rstrip("/") in folders})


DEFAULT_CONFIG = "config/config.yaml"  # the Snakefile's study when no --configfile is given


def committed_configfiles(configfiles: list[str], project: str | Path, tmp: Path) -> list[str]:
    """Each config file as committed at git ``HEAD`` where the working copy differs (else the file itself)."""
    out = []
    for i, cf in enumerate(configfiles):
        diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", cf], cwd=project, capture_output=True)
        show = subprocess.run(["git", "show", f"HEAD:./{cf}"], cwd=project, capture_output=True, text=True)
        if diff.returncode == 1 and show.returncode == 0:
            path = tmp / f"committed-{i}-{Path(cf).name}"
            path.write_text(show.stdout)
            _say(f"{cf} differs from git HEAD: marking with the committed version, building with yours")
            out.append(str(path))
        else:
            out.append(cf)
    return out


def _dvc_json(args: list[str], project: Path) -> tuple[dict | None, str]:
    """``(parsed JSON or None, stderr)`` of a ``dvc ... --json`` call."""
    out = subprocess.run(["dvc", *args, "--json"], cwd=project, capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip()
    return json.loads(out.stdout or "{}"), out.stderr.strip()


def remote_url(project: Path, remote: str | None) -> tuple[str | None, str | None]:
    """``(name, url)`` of ``remote`` or of the default remote (``(None, None)`` when none is configured); a local
    remote's relative URL is resolved against ``.dvc/``, where DVC resolves it."""
    name = remote or subprocess.run(["dvc", "remote", "default"], cwd=project, capture_output=True,
                                    text=True).stdout.strip() or None
    listed = subprocess.run(["dvc", "remote", "list"], cwd=project, capture_output=True, text=True).stdout
    urls = {line.split()[0]: line.split()[1] for line in listed.splitlines() if len(line.split()) >= 2}
    url = urls.get(name) if name else None
    if url and "://" not in url and not Path(url).is_absolute():
        url = str((project / ".dvc" / url).resolve())
    return name, url


def _examples(paths: list[str], n: int = 5) -> str:
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def preflight(project: str | Path = ".", remote: str | None = None, allow_missing: bool = False) -> list[str]:
    """Why a ``dvc pull`` must not run here, each reason with what to do; empty when the pull is safe.

    A pull is refused, before anything is changed, when: the checkout has no ``dvc.lock`` (nothing was ever
    committed for this study); local files differ from what ``dvc.lock`` records (a pull would overwrite them, and
    DVC's own advice, ``--force``, deletes locally built results); no remote is configured or it cannot be
    reached (named with its URL); or the remote lacks files that ``dvc.lock`` records (named; ``--allow-missing``
    pulls the rest). No reason ever suggests ``--force``.
    """
    project = Path(project)
    if not (project / "dvc.lock").exists():
        return ["this checkout has no dvc.lock: no results were ever committed for this study, so there is nothing "
                "to pull. Build what is missing with `circuit-stability sync --no-pull` (or `snakemake --cores "
                "all`); to publish results, `dvc commit -f`, commit dvc.lock and `dvc push` (README, Data "
                "versioning)"]
    reasons = []
    status, err = _dvc_json(["data", "status", "--granular"], project)
    if status is None:
        return [f"`dvc data status` failed, so it is unknown what a pull would overwrite: {err[-500:]}"]
    local = sorted(p for p in (*status.get("uncommitted", {}).get("modified", []),
                               *status.get("uncommitted", {}).get("added", [])) if not p.endswith("/"))
    if local:
        reasons.append(f"{len(local)} local file(s) differ from what dvc.lock records, e.g. {_examples(local)}: "
                       "a pull would overwrite or delete them. Keep them as this checkout's results with "
                       "`dvc commit -f` (then commit dvc.lock), or move them aside (e.g. `mv results "
                       "results.local`), or build on what you have without pulling: `circuit-stability sync "
                       "--no-pull`")
    name, url = remote_url(project, remote)
    if name is None or url is None:
        return reasons + [f"no DVC remote {'named ' + repr(remote) if remote else 'is configured as default'}: "
                          "set one (`dvc remote add -d ...`, README) or build without pulling: "
                          "`circuit-stability sync --no-pull`"]
    if "://" not in url and not Path(url).is_dir():
        return reasons + [f"remote {name!r} ({url}) cannot be reached: the folder does not exist. Point the remote "
                          "at the team's storage (`dvc remote modify ...`) or build what you have without pulling: "
                          "`circuit-stability sync --no-pull`"]
    missing, err = _dvc_json(["data", "status", "--granular", "--not-in-remote",
                              *(["-r", remote] if remote else [])], project)
    if missing is None:
        return reasons + [f"remote {name!r} ({url}) cannot be reached: {err.splitlines()[-1] if err else '?'}. "
                          "Check its URL and credentials (`dvc remote list`), or build what you have without "
                          "pulling: `circuit-stability sync --no-pull`"]
    absent = sorted(p for p in missing.get("not_in_remote", []) if not p.endswith("/"))
    if absent and not allow_missing:
        reasons.append(f"{len(absent)} file(s) that dvc.lock records are not on remote {name!r} ({url}), e.g. "
                       f"{_examples(absent)}: whoever committed them did not `dvc push`. Pull the rest and rebuild "
                       "these with `circuit-stability sync --allow-missing`")
    return reasons


def pull_available(project: Path, remote: str | None) -> int:
    """``dvc pull`` of everything the remote has, when it lacks some files.

    ``dvc pull --allow-missing`` gives up on a whole folder output (``results/behavior``) when one of its files
    is missing, so this fetches what the remote has (``dvc fetch``), then checks out every output that is
    complete in the cache as a whole and, of the others, each present file (DVC's granular targets).

    Returns:
        The exit status of the last ``dvc checkout`` (0 on success).
    """
    import yaml

    subprocess.run(["dvc", "fetch", *(["-r", remote] if remote else [])], cwd=project)  # fails on the missing
    status, err = _dvc_json(["data", "status", "--granular"], project)
    if status is None:
        _say(f"dvc data status failed: {err[-500:]}")
        return 1
    missing = {p for p in status.get("not_in_cache", []) if not p.endswith("/")}
    absent = {p for p in status.get("uncommitted", {}).get("deleted", []) if not p.endswith("/")}
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])]
    targets = []
    for out in outs:
        lacking = [m for m in missing if m == out or m.startswith(out.rstrip("/") + "/")]
        if not lacking:
            targets.append(out)
        else:
            targets += sorted(p for p in absent if p.startswith(out.rstrip("/") + "/") and p not in missing)
            _say(f"{out}: {len(lacking)} file(s) are on no remote and will be rebuilt, e.g. {lacking[0]}")
    rc = 0
    for i in range(0, len(targets), 200):
        rc = subprocess.run(["dvc", "checkout", *targets[i : i + 200]], cwd=project).returncode or rc
    return rc


def sync(configfiles: list[str] = (), snakemake_args: list[str] = (), cores: str = "all",
         project: str | Path = ".", pull: bool = True, remote: str | None = None, allow_missing: bool = False,
         build: bool = True) -> int:
    """``dvc pull``; ``snakemake --touch`` on the outputs DVC verifies as pulled/committed; ``snakemake``.

    Args:
        configfiles: the study config file(s) (Snakemake ``--configfile``; default: the Snakefile's).
        snakemake_args: extra arguments for every Snakemake call.
        cores: ``--cores`` of the build.
        pull: run ``dvc pull`` first (``False``: only mark and build).
        remote: DVC remote to pull from (default: the configured default remote).
        allow_missing: pull what the remote has and rebuild the rest (:func:`pull_available`).
        build: run the final ``snakemake`` (``False``: stop after marking).

    Returns:
        The exit status of the last command run (0 on success; 2 when the config or the :func:`preflight` checks
        refuse, before anything is changed).
    """
    from circuit_stability.config import ConfigError, load_config, validate_config

    project = Path(project)
    try:
        for cf in list(configfiles) or [DEFAULT_CONFIG]:
            validate_config(load_config(project / cf))
    except ConfigError as e:
        _say(str(e))
        return 2
    if pull:
        reasons = preflight(project, remote, allow_missing)
        if reasons:
            _say("not pulling; nothing was changed:\n  - " + "\n  - ".join(reasons))
            return 2
        cmd = ["dvc", "pull", *(["-r", remote] if remote else [])]
        _say(" ".join(cmd) + (" (what the remote has: --allow-missing)" if allow_missing else ""))
        rc = pull_available(project, remote) if allow_missing else subprocess.run(cmd, cwd=project).returncode
        if rc != 0:
            _say(f"dvc pull failed (exit {rc}); nothing was built. Do not add --force: it deletes local results. "
                 "`circuit-stability sync --no-pull` builds on what you have")
            return rc
    verified = dvc_unchanged_files(project)
    with tempfile.TemporaryDirectory() as tmp:
        given = list(configfiles) or [DEFAULT_CONFIG]
        committed = committed_configfiles(given, project, Path(tmp))
        marking = [*(["--configfile", *committed] if configfiles or committed != given else []), *snakemake_args]
        targets = touch_targets(verified, dag_outputs(marking, project)) if verified else []
        _say(f"DVC verifies {len(verified)} file(s) as committed; {len(targets)} output(s) of this study's DAG "
             "among them are marked up to date (snakemake --touch)")
        if targets:
            out = subprocess.run(["snakemake", *targets, "--touch", "--cores", "1", *marking], cwd=project,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
                return out.returncode
    if not build:
        return 0
    cmd = ["snakemake", "--cores", str(cores), *(["--configfile", *configfiles] if configfiles else []),
           *snakemake_args]
    _say(" ".join(cmd))
    return subprocess.run(cmd, cwd=project).returncode
