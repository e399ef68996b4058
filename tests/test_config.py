"""A bad config fails before any job starts, with a message naming the key and the allowed values."""

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from circuit_stability.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture
def quick():
    return yaml.safe_load((ROOT / "config" / "quick.yaml").read_text())


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "quick.yaml", "pythia.yaml"):
        validate_config(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA)


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["tasks"].update({"iio": {}}),
     r"tasks: unknown key\(s\) \['iio'\]; allowed keys: \['gp', 'greater_than', 'ioi', 'sva'\]"),
    (lambda c: c["analysis"].update({"steps": [0, -5]}), r"analysis.steps.1: -5 violates minimum 0"),
    (lambda c: c.update({"circuts": {}}), r"unknown key\(s\) \['circuts'\]; allowed keys: \[.*'circuits'"),
    (lambda c: c["analysis"].update({"method": "EAP-GI"}),
     r"analysis.method: 'EAP-GI' is not allowed; allowed values: \['EAP', 'EAP-IG', 'exact'\]"),
    (lambda c: c["suite"]["training"].update({"max_step": 10}), r"suite.training: unknown key\(s\) \['max_step'\]"),
])
def test_invalid_config_messages(quick, mutate, expected):
    bad = copy.deepcopy(quick)
    mutate(bad)
    with pytest.raises(ConfigError, match=expected):
        validate_config(bad, SCHEMA)


def test_snakemake_rejects_bad_config_before_any_job(tmp_path, quick):
    for item in ("Snakefile", "rules", "config", "profiles", "report"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    bad = copy.deepcopy(quick)
    bad["tasks"]["greater-than"] = {}
    bad["analysis"]["steps"] = [-1]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = subprocess.run(["snakemake", "--cores", "1", "--configfile", "bad.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "tasks: unknown key(s) ['greater-than']; allowed keys: ['gp', 'greater_than', 'ioi', 'sva']" in text
    assert "analysis.steps.0: -1 violates minimum 0" in text
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()  # no job ran
