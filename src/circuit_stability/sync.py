"""Pull, then build: ``dvc pull``, mark the pulled artefacts up to date for Snakemake, build only what is missing.

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
    """Every output file (or ``directory()`` output) of the Snakemake DAG, from ``snakemake --summary``."""
    out = subprocess.run(["snakemake", "--summary", *snakemake_args], cwd=project, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"snakemake --summary failed:\n{out.stderr[-3000:]}")
    lines = out.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("output_file\t")), None)
    return [] if start is None else [line.split("\t")[0] for line in lines[start + 1 :] if "\t" in line]


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
        allow_missing: pass ``--allow-missing`` to ``dvc pull`` (files absent from the remote are skipped).
        build: run the final ``snakemake`` (``False``: stop after marking).

    Returns:
        The exit status of the last command run (0 on success).
    """
    project = Path(project)
    if pull:
        cmd = ["dvc", "pull", *(["-r", remote] if remote else []), *(["--allow-missing"] if allow_missing else [])]
        _say(" ".join(cmd))
        rc = subprocess.run(cmd, cwd=project).returncode
        if rc != 0:
            _say(f"dvc pull failed (exit {rc}); nothing was built")
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
