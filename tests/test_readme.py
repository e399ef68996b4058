"""Every command the README shows runs verbatim, on repositories whose default study is the quick study
(conftest.quick_checkout). This file checks that each README command is run somewhere and runs the ones no
other test runs; the build, publish, sync and MLflow commands run where their results are checked."""

import re
from pathlib import Path

from conftest import ENV_SETUP, ROOT, quick_checkout, readme_blocks, readme_command, readme_commands, run_ok, run_readme

# Each README command (exact, or a prefix ending in "...") and the test that runs it verbatim.
RUN_BY = {
    ENV_SETUP + "pip install -e . && snakemake --cores all":
        "conftest.versioned_study runs the build part; .ci/run runs the environment part (test_ci_runs_it)",
    ENV_SETUP + 'pip install -e ".[test]" && pytest': ".ci/run (test_ci_runs_the_readme_test_command)",
    "snakemake --cores all && dvc commit -f": "test_dvc.pushed",
    'git add dvc.lock && git commit -m "results" && dvc push': "test_dvc.pushed",
    "dvc remote ...": "test_team_remote_blocks",
    "circuit-stability sync": "test_dvc.test_fresh_clone_pull_then_build_recomputes_nothing",
    "circuit-stability sync --configfile config/quick.yaml --cores 2":
        "test_dvc.test_fresh_clone_pull_then_build_recomputes_nothing",
    "mlflow ui --backend-store-uri sqlite:///mlflow.db":
        "test_tracking.test_readme_mlflow_ui_serves_the_experiment_and_its_runs",
    "snakemake --report reports/report.html": "test_dvc.test_report_is_offline_and_contains_every_figure",
}


def _covered(command: str) -> bool:
    return any(command == k or (k.endswith("...") and command.startswith(k[:-3])) for k in RUN_BY)


def test_every_readme_command_is_run_by_a_test():
    commands = readme_commands()
    assert len(commands) >= 10
    assert [c for c in commands if not _covered(c)] == []


def test_ci_runs_the_readme_test_command():
    """`.ci/run` is the README's test set-up command on a clean clone, and its environment part is the main
    set-up command's with the test extra (so CI proves the install both set-up commands share)."""
    ci = (ROOT / ".ci/run").read_text()
    test_command = readme_command(ENV_SETUP + 'pip install -e ".[test]" && pytest')
    assert test_command.replace("pip install", "pip install -q") in ci
    setup = readme_command(ENV_SETUP + "pip install -e . && ")
    assert setup == ENV_SETUP + "pip install -e . && snakemake --cores all"


def _blocks() -> list[list[str]]:
    """The documented ```bash blocks (README and docs/) whose first command sets a DVC remote, one list of
    commands each."""
    out = []
    for block in readme_blocks():
        lines = [re.sub(r"\s+#\s.*$", "", x).strip() for x in block.splitlines()]
        lines = [x for x in lines if x and not x.startswith("#")]
        if lines and lines[0].startswith("dvc remote add"):
            out.append(lines)
    return out


def test_team_remote_blocks(tmp_path: Path):
    """Each "point the default remote at shared storage" block, run verbatim in a fresh checkout, makes `team`
    the default remote with the block's URL and keeps credentials in the git-ignored .dvc/config.local."""
    blocks = _blocks()
    assert len(blocks) == 3  # S3, Google Cloud Storage, SSH
    for i, block in enumerate(blocks):
        repo = quick_checkout(tmp_path / f"remote{i}")
        run_ok(["git", "init", "-q"], repo)
        for command in block:
            run_readme(command, repo)
        assert run_ok(["dvc", "remote", "default"], repo).stdout.strip() == "team"
        url = re.search(r"dvc remote add -d -f team (\S+)", block[0]).group(1)
        assert url in run_ok(["dvc", "remote", "list"], repo).stdout
        assert url in (repo / ".dvc/config").read_text()
        if len(block) > 1:  # credentials: only in the local, git-ignored file
            assert (repo / ".dvc/config.local").exists()
            assert run_ok(["git", "check-ignore", ".dvc/config.local"], repo).returncode == 0
