"""Data versioning (design §7): DVC stages over the Snakemake targets, `dvc push`/`dvc pull` through a local
remote, the pull-then-build command on a fresh clone, and the Snakemake report. Real DVC, Snakemake, git."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, quick_checkout, readme_command, run_ok, run_readme

CONFIG = ["--configfile", "config/quick.yaml"]


def _jobs(text: str) -> dict[str, int]:
    """Rule -> job count of the (first) Snakemake job table in ``text``; {} when there was nothing to do."""
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-3000:]
        return {}
    table = text.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def _plan(cwd: Path) -> dict[str, int]:
    """Jobs a dry run of the default study (in the test repositories: the quick study) would execute."""
    out = run_ok(["snakemake", "-n"], cwd)
    return _jobs(out.stdout + out.stderr)


def _set_dpi(cwd: Path, dpi: int) -> None:
    cfg = cwd / "config/config.yaml"
    cfg.write_text(cfg.read_text() + f"\nplots: {{dpi: {dpi}}}\n")


# ---------------------------------------------------------------- fast: the checked-in configuration
def test_dvc_outputs_are_persisted_and_ignored_by_git():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {"suite", "datasets", "behavior", "scores", "circuits", "report"} <= set(stages)
    outs = []
    for name, stage in stages.items():
        assert stage["cmd"].startswith("snakemake "), name
        for out in stage["outs"]:
            (path, opts), = out.items()
            assert opts.get("persist") is True, f"{name}: {path} is not persist: true (dvc repro would delete it)"
            outs.append(path)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *outs], cwd=ROOT, capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == sorted(outs), "every DVC output must be git-ignored"
    kept = ["dvc.yaml", "dvc.lock", ".dvc/config", ".dvcignore", "report/behavior.rst"]
    assert subprocess.run(["git", "check-ignore", "--no-index", *kept], cwd=ROOT, capture_output=True).returncode == 1
    config = (ROOT / ".dvc/config").read_text()
    assert re.search(r"remote = (\w+)", config) and "url = " in config


def test_every_versioned_artefact_lies_in_a_dvc_output(tmp_path):
    """Each output of the study's DAG is inside a DVC stage output, except this machine's MLflow summary."""
    outs = [next(iter(o)) for s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values() for o in s["outs"]]
    for item in ("Snakefile", "rules", "config"):  # a copy: Snakemake writes its .snakemake/ state where it runs
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    # the quick study as the default, as in the test repositories (conftest.quick_checkout): dvc.yaml versions the
    # default study's tables, figures and report
    shutil.copy(ROOT / "config/quick.yaml", tmp_path / "config/config.yaml")
    summary = run_ok(["snakemake", "--summary", *CONFIG], tmp_path).stdout.splitlines()
    files = [line.split("\t")[0] for line in summary[1:] if "\t" in line]
    assert len(files) > 40
    unversioned = [f for f in files if not any(f == o or f.startswith(o + "/") for o in outs)]
    assert unversioned == ["results/tracking/quick.json"]
    assert "reports/report.html" in files  # the build makes the report that DVC versions


# ---------------------------------------------------------------- slow: push, fresh clone, pull, build
@pytest.fixture(scope="module")
def pushed(versioned_study) -> Path:
    """The built quick study published with the README's commands: build, ``dvc commit -f``, commit ``dvc.lock``,
    ``dvc push`` (to the default remote beside the repository)."""
    origin = versioned_study
    run_readme(readme_command("snakemake --cores all && dvc commit"), origin)
    run_readme(readme_command("git add dvc.lock && "), origin)
    assert (origin / "../dvc-storage/circuit-stability/files/md5").is_dir()
    return origin


def _clone(origin: Path, name: str) -> Path:
    """A clone beside ``origin``, so that the default DVC remote (``../dvc-storage``) is the same folder."""
    dest = origin.parent / name
    run_ok(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    return dest


@pytest.mark.slow
def test_report_is_offline_and_contains_every_figure(pushed):
    """The build made the report (DVC versions it); the README's report command, verbatim, writes it again. It
    embeds every figure and loads nothing from the web."""
    html = (pushed / "reports/report.html").read_text()
    run_readme(readme_command("snakemake --report reports/report.html"), pushed)
    for html in (html, (pushed / "reports/report.html").read_text()):
        assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=[\"']https?://", html), "loads from the web"
        for fig in ("figure1_behavior.png", "circuit_size.png", "emergence.png", "faithfulness_curves.png",
                    "figure2_components.png", "figure3_top_heads.png", "figure4_algorithm.png", "similarity.png"):
            assert f"data:image/png;charset=utf8;filename={fig};base64," in html, f"{fig} is not embedded"
        assert "data:text/html;charset=utf8;filename=component_lag.html;base64," in html  # the component-lag table
        assert "data:text/html;charset=utf8;filename=findings.html;base64," in html  # the findings table
        assert "data:text/html;charset=utf8;filename=checkpoint_audit.html;base64," in html  # the audit's page
        for model in ("quick-s", "quick-m"):  # the circuit over training, interactive
            assert f"data:text/html;charset=utf8;filename=circuits_{model}.html;base64," in html
        for text in ("Figure 1: behaviour over training", "Figure 5: circuit size over training",
                     "results/tables/behavior.parquet", "results/tables/circuits.parquet"):
            assert text in html


@pytest.mark.slow
def test_fresh_clone_pull_then_build_recomputes_nothing(pushed):
    """Clone, then the README's build command: it pulls, computes nothing (it only logs the pulled results into
    this clone's MLflow); a deleted figure is redrawn alone; a changed plotting option redraws only figures; the
    README's sync of another study's config file recomputes no scores either."""
    clone = _clone(pushed, "fresh")
    assert not (clone / "results").exists()
    built = run_readme(readme_command("circuit-stability sync"), clone)
    assert _jobs(built.stdout + built.stderr) == {"track": 1, "all": 1}
    assert (clone / "results/scores/quick-m/ioi/step200.parquet").exists()
    assert _plan(clone) == {}
    assert "up to date" in run_ok(["dvc", "status"], clone).stdout
    other = run_readme(readme_command("circuit-stability sync --configfile"), clone)  # quick.yaml: the same study
    assert set(_jobs(other.stdout + other.stderr)) <= {"report", "track", "all"}  # the config file's name changed

    (clone / "reports/figures/circuit_size.png").unlink()
    rebuilt = run_ok(["snakemake", "--cores", "2"], clone)
    assert _jobs(rebuilt.stdout + rebuilt.stderr) == {"figures": 1, "report": 1, "track": 1, "all": 1}
    assert (clone / "reports/figures/circuit_size.png").exists()
    _set_dpi(clone, 80)
    assert _plan(clone) == {"figures": 1, "report": 1, "track": 1, "all": 1}


@pytest.mark.slow
def test_plot_option_changed_before_the_first_build_redraws_only_figures(pushed):
    """`dvc pull` by hand, a local plotting change, then the build command (without pulling again): the pulled
    scores stay, only the figures are redrawn (the marking uses the committed config)."""
    clone = _clone(pushed, "edited")
    run_ok(["dvc", "pull"], clone)
    _set_dpi(clone, 80)
    run_ok(["circuit-stability", "sync", "--no-pull", "--no-build"], clone)
    assert _plan(clone) == {"figures": 1, "report": 1, "track": 1, "all": 1}


# ---------------------------------------------------------------- sync never loses work (issue: sync safety)
def _fingerprint(root: Path) -> dict[str, str]:
    """MD5 of every file under ``root``'s results/, models/, data/ and reports/ folders (every DVC output), but
    Snakemake's ``.snakemake_timestamp`` markers (bookkeeping that DVC ignores, see .dvcignore)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for folder in ("results", "models", "data", "reports") for p in sorted((root / folder).rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


def _refused(cwd: Path, *args: str) -> str:
    out = run_ok(["bash", "-c", "circuit-stability sync " + " ".join(args) + "; echo rc=$?"], cwd)
    text = out.stdout + out.stderr
    assert "rc=2" in text and "not pulling; nothing was changed" in text, text[-2000:]
    assert "--force" not in text.replace("Do not add --force", "")
    return text


@pytest.mark.slow
def test_sync_refuses_to_overwrite_local_results(pushed):
    """Locally rebuilt or extra results in a checkout: sync names them and what to do, and changes nothing
    (DVC's own advice, `--force`, deleted every computed file)."""
    clone = _clone(pushed, "local-work")
    run_ok(["dvc", "pull"], clone)
    changed = clone / "results/behavior/quick-m/ioi/step0.json"
    changed.write_text(changed.read_text().replace('"version"', '"version" ', 1))  # rebuilt differently
    (clone / "results/scores/quick-m/ioi/local-extra.parquet").write_bytes(b"a local result dvc.lock lacks")
    before = _fingerprint(clone)
    text = _refused(clone)
    assert "differ from what dvc.lock records" in text and "results/behavior/quick-m/ioi/step0.json" in text
    assert "dvc commit -f" in text and "--no-pull" in text
    assert _fingerprint(clone) == before


@pytest.mark.slow
def test_sync_without_dvc_lock_changes_nothing(tmp_path):
    repo = quick_checkout(tmp_path / "unpublished")
    run_ok(["git", "init", "-q"], repo)
    (repo / "results/scores").mkdir(parents=True)
    (repo / "results/scores/built-here.parquet").write_bytes(b"computed locally")
    before = _fingerprint(repo)
    text = _refused(repo)
    assert "no dvc.lock" in text and "circuit-stability sync --no-pull" in text
    assert _fingerprint(repo) == before


@pytest.mark.slow
def test_sync_names_an_unreachable_remote(pushed):
    clone = _clone(pushed, "no-remote")
    run_ok(["dvc", "remote", "modify", "--local", "local", "url", "/nonexistent/team-storage"], clone)
    text = _refused(clone)
    assert "remote 'local' (/nonexistent/team-storage) cannot be reached" in text and "--no-pull" in text
    assert not (clone / "results").exists()


@pytest.mark.slow
def test_sync_names_files_missing_from_the_remote(pushed, tmp_path):
    """The remote lacks one object (someone committed dvc.lock without pushing it all): sync names the file
    and offers --allow-missing, which then pulls the rest."""
    import shutil

    storage = tmp_path / "storage"
    shutil.copytree(pushed.parent / "dvc-storage/circuit-stability", storage)
    objects = sorted(p for p in (storage / "files/md5").rglob("*") if p.is_file() and not p.name.endswith(".dir"))
    clone = _clone(pushed, "partial-remote")
    run_ok(["dvc", "remote", "modify", "--local", "local", "url", str(storage)], clone)
    victim = next(o for o in objects if o.stat().st_size > 100)
    victim.unlink()
    text = _refused(clone)
    assert "not on remote 'local'" in text and "circuit-stability sync --allow-missing" in text
    assert not (clone / "results").exists()
    run_ok(["circuit-stability", "sync", "--allow-missing", "--no-build"], clone)
    absent = set(_fingerprint(pushed)) - set(_fingerprint(clone)) - {"results/tracking/quick.json"}  # not versioned
    assert len(absent) == 1 and next(iter(absent)) in text  # all but the file the remote lacks, which was named
