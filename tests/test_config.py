"""A bad config fails before any job starts, with a message naming the key and the allowed values."""

import copy
import json
import re
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
    from circuit_stability.config import load_config

    shipped = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")
    assert {"config.yaml", "quick.yaml", "pythia.yaml", "crfm-gpt2.yaml", "olmo.yaml", "smollm2.yaml"} <= set(shipped)
    for name in shipped:
        validate_config(load_config(ROOT / "config" / name), SCHEMA)


def test_an_overlay_merges_settings_and_replaces_the_model_and_task_lists(tmp_path):
    """`extends:` by hand: mappings merge key by key, suite.models and tasks are replaced whole, scalars and lists
    replace; the chain is followed (relative to each file's folder), and a cycle or a missing base is refused."""
    from circuit_stability.config import load_config

    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "study": "base", "suite": {"training": {"lr": 1, "max_steps": 10}, "models": {"a": {"n_layers": 1}}},
        "tasks": {"ioi": {"seed": 1}, "sva": {}}, "analysis": {"steps": [0, 5], "method": "EAP"}}))
    (tmp_path / "sub/mid.yaml").write_text(yaml.safe_dump({"extends": "../base.yaml", "analysis": {"steps": [5]}}))
    (tmp_path / "sub/top.yaml").write_text(yaml.safe_dump({
        "extends": "mid.yaml", "study": "top", "suite": {"training": {"lr": 2}, "models": {"b": {"n_layers": 2}}},
        "tasks": {"ioi": {"n_examples": 3}}}))
    assert load_config(tmp_path / "sub/top.yaml") == {
        "study": "top", "suite": {"training": {"lr": 2, "max_steps": 10}, "models": {"b": {"n_layers": 2}}},
        "tasks": {"ioi": {"n_examples": 3}}, "analysis": {"steps": [5], "method": "EAP"}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"extends": "sub/top.yaml"}))
    with pytest.raises(ConfigError, match=r"top.yaml: extends: .*extends itself"):
        load_config(tmp_path / "sub/top.yaml")
    (tmp_path / "sub/mid.yaml").write_text(yaml.safe_dump({"extends": "../nowhere.yaml"}))
    with pytest.raises(ConfigError, match=r"nowhere.yaml: cannot be read"):
        load_config(tmp_path / "sub/top.yaml")


def test_the_seeds_study_differs_from_the_default_only_in_its_name_and_models():
    from circuit_stability.config import load_config

    default = validate_config(load_config(ROOT / "config/config.yaml"), SCHEMA)
    seeds = validate_config(load_config(ROOT / "config/seeds.yaml"), SCHEMA)
    assert {k for k in default if default[k] != seeds[k]} == {"study", "suite"}
    assert {k for k in default["suite"] if default["suite"][k] != seeds["suite"][k]} == {"models"}
    assert list(seeds["suite"]["models"]) == ["mini-l", *(f"mini-l-seed{k}" for k in range(1, 5))]
    assert seeds["suite"]["models"]["mini-l"] == default["suite"]["models"]["mini-l"]


def test_the_long_study_shares_the_default_corpus_generator_and_schedule_shape():
    """config/long.yaml changes the study's name, the training threads, its corpus folder's name and length, the
    training length and checkpoint spacing, the models, the scored checkpoints (a list instead of every 2nd) and
    the tokens-seen axis, and nothing else of the default it extends; every scored step is a checkpoint of its
    schedule, and the control's permutation step and the checkpoint before it are both scored."""
    from circuit_stability.checkpoints import checkpoint_schedule
    from circuit_stability.config import load_config

    default = validate_config(load_config(ROOT / "config/config.yaml"), SCHEMA)
    long = validate_config(load_config(ROOT / "config/long.yaml"), SCHEMA)
    assert {k for k in default if default[k] != long[k]} == {"study", "train_threads", "suite", "analysis", "plots"}
    assert {k for k in default["suite"] if default["suite"][k] != long["suite"][k]} == {"name", "training", "models"}
    assert long["suite"]["corpus"] == default["suite"]["corpus"]
    changed = {k for k in default["suite"]["training"] if default["suite"]["training"][k] != long["suite"]["training"][k]}
    assert changed == {"max_steps", "checkpoint_every"}
    assert {k for k in default["analysis"] if default["analysis"][k] != long["analysis"][k]} == {"every", "steps"}
    t = long["suite"]["training"]
    schedule = checkpoint_schedule(t["max_steps"], t["checkpoint_every"], t["log_until"])
    assert set(long["analysis"]["steps"]) <= set(schedule) and long["analysis"]["every"] == 1
    planted = long["suite"]["models"]["mini-l-long-permuted"]["from_step"]
    assert {planted, schedule[schedule.index(planted) - 1]} <= set(long["analysis"]["steps"])
    assert long["suite"]["models"]["mini-l-long"] == default["suite"]["models"]["mini-l"]


def test_the_deeper_long_member_differs_from_the_long_study_in_depth_length_and_scored_steps_only():
    """config/long-deep.yaml (the long study's deeper member, its own study) changes the study's name, its corpus
    folder's name and the training length, the model (mini-l-long with 6 layers instead of 4) and the scored
    checkpoints (each a checkpoint of its schedule), and nothing else of config/long.yaml."""
    from circuit_stability.checkpoints import checkpoint_schedule
    from circuit_stability.config import load_config

    long = validate_config(load_config(ROOT / "config/long.yaml"), SCHEMA)
    deep = validate_config(load_config(ROOT / "config/long-deep.yaml"), SCHEMA)
    assert {k for k in long if long[k] != deep[k]} == {"study", "suite", "analysis"}
    assert {k for k in long["suite"] if long["suite"][k] != deep["suite"][k]} == {"name", "training", "models"}
    assert {k for k in long["suite"]["training"] if long["suite"]["training"][k] != deep["suite"]["training"][k]} == {
        "max_steps"}
    assert {k for k in long["analysis"] if long["analysis"][k] != deep["analysis"][k]} == {"steps"}
    (name, shape), = deep["suite"]["models"].items()
    assert {**long["suite"]["models"]["mini-l-long"], "n_layers": 6} == shape
    t = deep["suite"]["training"]
    assert set(deep["analysis"]["steps"]) <= set(checkpoint_schedule(t["max_steps"], t["checkpoint_every"],
                                                                     t["log_until"]))


def _project_copy(dest: Path) -> Path:
    for item in ("Snakefile", "rules", "config", "profiles", "report"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    return dest


def test_each_study_writes_its_own_tables_figures_and_report(tmp_path):
    """The default study writes results/tables, reports/figures and reports/report.html (what dvc.yaml versions);
    the seeds and long studies write theirs under their names, so none overwrites another's."""
    repo = _project_copy(tmp_path)
    for configfile, tables, report in (
            ("config/config.yaml", "results/tables", "reports/report.html"),
            ("config/seeds.yaml", "results/studies/seeds/tables", "reports/studies/seeds/report.html"),
            ("config/long.yaml", "results/studies/long/tables", "reports/studies/long/report.html")):
        out = subprocess.run(["snakemake", "-n", "--configfile", configfile], cwd=repo, capture_output=True, text=True)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-3000:]
        planned = set(re.findall(r"(?:results|reports)/[\w/.-]+", text))
        assert {f"{tables}/findings.parquet", report, f"{report.rsplit('/', 1)[0]}/figures/similarity.png"} <= planned
        default_paths = {p for p in planned if p.startswith(("results/tables/", "reports/figures/", "reports/report"))}
        assert bool(default_paths) == (tables == "results/tables"), sorted(default_paths)[:5]


def test_a_study_never_retrains_another_studys_model_or_corpus(tmp_path):
    """A trained member or corpus folder whose manifest records other settings (another study's of the same name)
    stops the build before any job starts, naming the folder and each differing setting; one built with the same
    settings (the default study's mini-l, shared by the seeds study) is reused."""
    repo = _project_copy(tmp_path)
    from circuit_stability.config import load_config

    cfg = validate_config(load_config(ROOT / "config/config.yaml"), SCHEMA)
    training = {**{k: v for k, v in cfg["suite"]["training"].items() if k != "decay_steps" or v is not None}, "seed": 0}
    manifest = {"model": "mini-l", **cfg["suite"]["models"]["mini-l"], "training": training}
    (repo / "models/mini-l").mkdir(parents=True)
    (repo / "models/mini-l/suite.json").write_text(json.dumps(manifest))
    seeds = ["snakemake", "-n", "models/mini-l-seed1/suite.json", "--configfile", "config/seeds.yaml"]
    out = subprocess.run(seeds, cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]  # the same settings: no conflict

    manifest["training"]["max_steps"] = 4500  # the default study's mini-l of an earlier recipe
    (repo / "models/mini-l/suite.json").write_text(json.dumps(manifest))
    corpus = {"seed": 0, "weights": cfg["suite"]["corpus"]["weights"], "shape": [20000, 32, 64]}
    (repo / "data/corpus/mini").mkdir(parents=True)
    (repo / "data/corpus/mini/corpus.json").write_text(json.dumps(corpus))  # a longer stream under the same name
    out = subprocess.run(seeds, cwd=repo, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "models/mini-l holds a model built with other settings (training.max_steps: 4500 -> 6000)" in text
    assert "data/corpus/mini holds a corpus built with other settings (shape: [20000, 32, 64] -> [6000, 32, 64])" in text
    assert "give this study's model another name, or delete models/mini-l to rebuild it" in text
    assert json.loads((repo / "models/mini-l/suite.json").read_text()) == manifest  # nothing touched
    out = subprocess.run(["snakemake", "-n", "--configfile", "config/long.yaml"], cwd=repo, capture_output=True,
                         text=True)  # the long study names its own corpus and model: no conflict
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["tasks"].update({"iio": {}}),
     r"tasks: unknown key\(s\) \['iio'\]; allowed keys: \['gp', 'greater_than', 'ioi', 'sva'\]"),
    (lambda c: c["analysis"].update({"steps": [0, -5]}), r"analysis.steps.1: -5 violates minimum 0"),
    (lambda c: c.update({"circuts": {}}), r"unknown key\(s\) \['circuts'\]; allowed keys: \[.*'circuits'"),
    (lambda c: c["analysis"].update({"method": "EAP-GI"}),
     r"analysis.method: 'EAP-GI' is not allowed; allowed values: \['EAP', 'EAP-IG', 'exact'\]"),
    (lambda c: c["suite"]["training"].update({"max_step": 10}), r"suite.training: unknown key\(s\) \['max_step'\]"),
    (lambda c: c["circuits"].update({"threshold": 1.5}), r"circuits.threshold: 1.5 violates maximum 1"),
    (lambda c: c["suite"]["models"]["quick-s"].update({"d_model": 32, "n_heads": 3}),
     r"suite.models.quick-s: d_model 32 is not divisible by n_heads 3"),
    (lambda c: c["suite"]["models"]["quick-m"].update({"rotary_pct": 0.2}),
     r"suite.models.quick-m: rotary_pct 0.2 of a 8-dimensional head rotates 1 dimensions; .* must be even"),
    (lambda c: c["analysis"].update({"steps": [0, 150]}), r"analysis.steps: \[150\] are not checkpoints of this study"),
    (lambda c: c["suite"]["models"]["quick-s"].update({"n_kv_heads": 3}),
     r"suite.models.quick-s.n_kv_heads: 3 key/value heads need architecture llama \(got llama\) and must divide "
     r"n_heads 4; valid: \[1, 2, 4\]"),
    (lambda c: c["suite"]["models"]["quick-m"].update({"n_kv_heads": 2}),
     r"suite.models.quick-m.n_kv_heads: 2 key/value heads need architecture llama \(got gpt-neox\)"),
    (lambda c: c["suite"]["models"]["quick-s"].update({"architecture": "mamba"}),
     r"suite.models.quick-s.architecture: 'mamba' is not allowed; allowed values: \['gpt-neox', 'gpt2', 'llama'\]"),
    (lambda c: c["suite"]["models"]["quick-s"].update({"d_model": 36, "n_heads": 4, "n_kv_heads": None}),
     r"suite.models.quick-s: a Llama member rotates every dimension of its 9-dimensional heads"),
    (lambda c: c["suite"]["models"].update({"quick-m-seed2": {"n_layers": 1, "d_model": 16, "n_heads": 2,
                                                               "weight_seed": 3}}),
     r"suite.models.quick-m-seed2: weight_seed 3 contradicts the name, which says weight seed 2"),
    (lambda c: c["suite"]["models"].update({"quick-m-data-seed1000": {"n_layers": 1, "d_model": 16, "n_heads": 2}}),
     r"suite.models.quick-m-data-seed1000: data seed 1000 is too large; valid data seeds are 0 to 999"),
    (lambda c: c["analysis"].update({"method": "exact"}),
     r"similarity.resamples: 50 bootstrap resamples need per-example scores, which analysis.method 'exact' does not"),
    (lambda c: c.update({"similarity": {"resamples": 1}}), r"similarity.resamples: 1 resample gives no interval"),
    (lambda c: c.update({"similarity": {"stored_fraction": 0}}), r"similarity.stored_fraction: 0 violates"),
    (lambda c: c["suite"]["training"].update({"decay_steps": 10 ** 6}),
     r"suite.training.decay_steps: 1000000 is more than the \d+ steps after warm-up"),
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


def test_snakemake_lays_an_extending_study_over_its_base(tmp_path):
    """The workflow resolves `extends:` (with a --config override on top): a dry run of the seeds study plans its
    five members and none of the default's other models, with the default's training settings."""
    for item in ("Snakefile", "rules", "config", "profiles", "report"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    out = subprocess.run(["snakemake", "-n", "models/mini-l-seed3/suite.json", "models/mini-l/suite.json",
                          "--configfile", "config/seeds.yaml", "--config", "threads=2"],
                         cwd=tmp_path, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "Training suite model mini-l-seed3" in text and "Training suite model mini-l " in text
    assert ", 5750, 6000)" in text  # the checkpoints of the default's 6,000 training steps
    out = subprocess.run(["snakemake", "-n", "models/mini-s/suite.json", "--configfile", "config/seeds.yaml"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert "No rule to produce models/mini-s/suite.json" in out.stdout + out.stderr  # not a seeds-study member


# ---------------------------------------------------------------- one source of defaults
def test_validation_fills_in_every_default(quick):
    """A config that leaves settings out gets the schema's defaults, per task and per model."""
    del quick["tasks"]["ioi"]["n_examples"], quick["circuits"]["threshold"], quick["threads"]
    quick["tasks"]["sva"] = {}
    filled = validate_config(quick, SCHEMA)
    assert filled["tasks"]["ioi"]["n_examples"] == 70 and filled["tasks"]["sva"] == {"n_examples": 200, "seed": 42}
    assert filled["circuits"]["threshold"] == 0.8 and filled["threads"] == 1
    assert filled["plots"] == {"dpi": 120, "tokens_axis": "log"}
    assert filled["suite"]["models"]["quick-s"]["d_mlp"] is None
    assert "n_examples" not in quick["tasks"]["ioi"]  # the caller's config is not modified


def test_no_default_is_written_twice():
    """Defaults live in the schema alone: the rules read config[...] without fallbacks, the CLI's option defaults
    come from the schema, and the library functions the stages call take these settings as required arguments."""
    import ast
    import dataclasses
    import inspect
    import re

    from circuit_stability import attribution, checkpoints, circuits, tasks
    from circuit_stability.suite import corpus, train

    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk")), *sorted((ROOT / "report").glob("*.rst"))]:
        assert not re.search(r"\.get\(\s*[\"'][^\"']+[\"']\s*,", path.read_text()), f"{path.name}: .get(key, default)"
    # CLI: an option default is the schema's (schema_default(...)), None, or an option with no config key
    not_config = {"--suite-dir", "--cores", "--project-dir", "--config-hash", "--model-name", "--device"}
    tree = ast.parse((ROOT / "src/circuit_stability/cli.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument"]
    for call in calls:
        flag = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None
        for kw in call.keywords:
            if kw.arg == "default" and isinstance(kw.value, ast.Constant) and kw.value.value not in (None, False):
                assert flag in not_config, f"cli.py: {flag} has a literal default {kw.value.value!r}"
    required = {
        tasks.make_dataset: ("n_examples", "seed"), attribution.interpolation_points: ("ig_steps", "convention"),
        attribution.edge_attribution: ("batch_size",), attribution.patched_metric: ("batch_size",),
        attribution.exact_scores: ("batch_size",), attribution.score_edges: ("batch_size",),
        circuits.minimal_circuit: ("search", "batch_size"), circuits.search_limit: ("max_fraction", "min_search_edges"),
        circuits.search_minimal_size: ("threshold", "grid_points"),
        circuits.faithfulness_summaries: ("batch_size", "selection"), checkpoints.checkpoint_schedule: ("log_until",),
        **{fn: ("n_examples", "seed") for fn in tasks.TASKS.values()}}
    for fn, names in required.items():
        params = inspect.signature(fn).parameters
        assert all(params[n].default is inspect.Parameter.empty for n in names), f"{fn.__name__}: a default of {names}"
    for cls in (train.TrainConfig, train.ModelShape):
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls)), cls.__name__
    assert next(f for f in dataclasses.fields(corpus.CorpusConfig) if f.name == "weights").default_factory \
        is dataclasses.MISSING


def test_schema_choices_are_the_library_registries():
    """Every enum of the schema is the registry the library (and the CLI's choices) uses."""
    from circuit_stability.attribution import IG_CONVENTIONS, METHODS
    from circuit_stability.circuits import SELECTIONS
    from circuit_stability.config import load_schema
    from circuit_stability.models import DTYPES
    from circuit_stability.suite.corpus import SENTENCE_KINDS
    from circuit_stability.tasks import TASKS

    p = load_schema()["properties"]
    assert p["analysis"]["properties"]["method"]["enum"] == list(METHODS)
    assert p["analysis"]["properties"]["ig_convention"]["enum"] == list(IG_CONVENTIONS)
    assert p["analysis"]["properties"]["dtype"]["enum"] == list(DTYPES)
    assert p["circuits"]["properties"]["selection"]["enum"] == list(SELECTIONS)
    assert set(p["tasks"]["properties"]) == set(TASKS)
    assert set(p["suite"]["properties"]["corpus"]["properties"]["weights"]["properties"]) == set(SENTENCE_KINDS)


def test_library_cli_and_workflow_build_the_same_dataset(tmp_path, quick):
    """For a config that omits n_examples, the library (schema default), the CLI (no --n-examples) and the
    workflow (the dataset rule) build one and the same SVA dataset: 200 examples."""
    import pandas as pd
    from transformers import AutoTokenizer

    from circuit_stability.config import schema_default
    from circuit_stability.records import read_dataset, write_dataset
    from circuit_stability.tasks import make_dataset

    for item in ("Snakefile", "rules", "config", "profiles", "report"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    quick["tasks"] = {"sva": {}}
    (tmp_path / "omit.yaml").write_text(yaml.safe_dump(quick))
    out = subprocess.run(["snakemake", "data/tasks/quick/sva.parquet", "--cores", "1", "--configfile", "omit.yaml"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    tokenizer = tmp_path / "data/corpus/quick/tokenizer"
    cli = tmp_path / "cli.parquet"
    subprocess.run(["circuit-stability", "dataset", "--task", "sva", "--tokenizer", str(tokenizer), "--out", str(cli)],
                   check=True, capture_output=True)
    tok = AutoTokenizer.from_pretrained(tokenizer)
    write_dataset(make_dataset("sva", tok, schema_default("tasks.sva.n_examples"), schema_default("tasks.sva.seed")),
                  tmp_path / "library.parquet")
    library, workflow = (read_dataset(tmp_path / p).frame for p in ("library.parquet", "data/tasks/quick/sva.parquet"))
    assert len(library) == 200
    pd.testing.assert_frame_equal(workflow, library)
    pd.testing.assert_frame_equal(read_dataset(cli).frame, library)


def test_cli_help_describes_every_stage_and_option():
    """`circuit-stability <stage> --help`: every stage has a one-line help and a description, every option its
    help, and every option with a default or choices shows them (choices come from the library's registries)."""
    import argparse

    from circuit_stability.attribution import METHODS
    from circuit_stability.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert {"corpus", "train", "dataset", "behavior", "scores", "circuit", "tables", "plot", "track", "check",
            "sync"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert helps.get(name) and p.description, name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.dest == "snakemake_args":
                continue
            assert action.help, f"{name} {action.option_strings}"
            if action.default not in (None, False, argparse.SUPPRESS):
                assert "%(default)s" in action.help or "default" in action.help, f"{name} {action.option_strings}"
    scores = sub.choices["scores"]
    assert next(a for a in scores._actions if a.dest == "method").choices == list(METHODS)
    assert "(default: EAP-IG; config key analysis.method)" in " ".join(scores.format_help().split())


def test_unbuildable_model_shape_fails_before_any_job_and_keeps_the_checkpoints(tmp_path):
    """A shape that passes the schema but cannot be built (d_model 32, 3 heads) stops the build before any job,
    so the model's existing checkpoints are not deleted by a train job that could only fail."""
    from conftest import quick_checkout

    repo = quick_checkout(tmp_path / "study")
    config = repo / "config/config.yaml"
    config.write_text(config.read_text().replace("quick-s: {architecture: llama, n_layers: 1, d_model: 32, n_heads: 4",
                                                 "quick-s: {architecture: llama, n_layers: 1, d_model: 32, n_heads: 3"))
    checkpoint = repo / "models/quick-s/step0/model.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"an existing checkpoint")
    out = subprocess.run(["snakemake", "--cores", "1"], cwd=repo, capture_output=True, text=True)
    assert out.returncode != 0
    assert "suite.models.quick-s: d_model 32 is not divisible by n_heads 3" in out.stdout + out.stderr
    assert checkpoint.read_bytes() == b"an existing checkpoint" and not (repo / "data").exists()


def test_yaml_error_names_the_file_and_line(tmp_path):
    from conftest import quick_checkout

    from circuit_stability.config import load_config

    repo = quick_checkout(tmp_path / "study")
    config = repo / "config/config.yaml"
    lines = config.read_text().splitlines()
    lines[2] = "  " + lines[2]  # "source: suite" indented under "seed: 0"
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"config.yaml, line 3, column \d+: not valid YAML: mapping values"):
        load_config(config)
    out = subprocess.run(["snakemake", "-n"], cwd=repo, capture_output=True, text=True)
    assert out.returncode != 0 and "config/config.yaml, line 3, column" in out.stdout + out.stderr


def test_a_repeated_yaml_key_is_refused_with_its_line(tmp_path):
    """A suite listing a member twice (YAML keeps the second silently) is refused by the loader and by Snakemake's
    planning with --configfile, naming the file, the key and both lines, before any job."""
    from conftest import quick_checkout

    from circuit_stability.config import load_config

    repo = quick_checkout(tmp_path / "study")
    lines = (repo / "config/quick.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("quick-s:"))
    lines.insert(at + 1, lines[at].replace("n_layers: 1", "n_layers: 2"))  # quick-s again, another shape
    (repo / "twice.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"twice.yaml, line {at + 2}, column \d+: not valid YAML: .*key "
                                          rf"'quick-s' is repeated \(first at line {at + 1}\)"):
        load_config(repo / "twice.yaml")
    out = subprocess.run(["snakemake", "-n", "--configfile", "twice.yaml"], cwd=repo, capture_output=True, text=True)
    assert out.returncode != 0 and "'quick-s' is repeated" in out.stdout + out.stderr
    assert not (repo / "data").exists()


@pytest.mark.parametrize("key, value, repeated", [
    ("hub.models", ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-70m"],
     "['EleutherAI/pythia-70m']"),
    ("hub.steps", [1000, 2000, 1000], "[1000]"),
    ("analysis.steps", [0, 100, 100], "[100]")])
def test_a_setting_listed_twice_is_refused(key, value, repeated):
    """A model or step listed twice would be planned twice (or silently once): refused, naming the repeat."""
    from circuit_stability.config import load_config

    config = load_config(ROOT / "config/pythia.yaml")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=re.escape(f"{key}: {repeated} listed more than once")):
        validate_config(config, SCHEMA)


def test_planning_the_workflow_imports_no_torch():
    """Every module the Snakefile and rules import at parse time (each `snakemake` command; each SLURM job parses
    twice) loads, and the Snakefile's check of a config with a derived member runs, without torch or
    TransformerLens, which only the jobs need (~1 s and ~4 s of CPU to import)."""
    import re
    import sys

    sources = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    imported = r"^from (circuit_stability[\w.]*) import"
    modules = sorted({m for f in sources for m in re.findall(imported, f.read_text(), re.M)})
    assert "circuit_stability.models" in modules and "circuit_stability.records" in modules, modules
    derived = {"derived_from": "quick-m", "permute_heads": {"layer": 1, "order": [2, 0, 3, 1]}, "from_step": 100}
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "from circuit_stability.config import load_config, validate_config\n"
            f"c = load_config({str(ROOT / 'config/quick.yaml')!r})\n"
            f"c['suite']['models']['quick-m-permuted'] = {derived!r}\n"
            "assert 'quick-m-permuted' in validate_config(c)['suite']['models']\n"
            "print(sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"planning imports {out.stdout.strip()} (from one of {modules})"


def test_derived_members_take_their_sources_shape_and_bad_ones_are_refused(quick):
    """A derived member (a planted head permutation) gets its source's shape and seeds; a source that is not a
    trained member, a shape of its own, a layer, an order or a step the source does not have are each refused
    with the key and what would be valid."""
    good = copy.deepcopy(quick)
    good["suite"]["models"]["quick-m-permuted"] = {"derived_from": "quick-m", "from_step": 100,
                                                   "permute_heads": {"layer": 1, "order": [1, 0, 3, 2]}}
    filled = validate_config(good, SCHEMA)["suite"]["models"]
    src, der = filled["quick-m"], filled["quick-m-permuted"]
    assert {k: der[k] for k in ("n_layers", "d_model", "n_heads", "d_mlp", "rotary_pct")} == \
        {k: src[k] for k in ("n_layers", "d_model", "n_heads", "d_mlp", "rotary_pct")}
    assert (der["weight_seed"], der["data_seed"]) == (0, 0)
    cases = [
        ({"derived_from": "quick-x"}, r"quick-m-permuted.derived_from: 'quick-x' is not a trained member of this "
                                      r"study; valid: \['quick-s', 'quick-m'\]"),
        ({"n_heads": 4}, r"quick-m-permuted: a derived member takes its shape and seeds from its source 'quick-m'; "
                         r"remove \['n_heads'\]"),
        ({"permute_heads": {"layer": 2, "order": [1, 0, 3, 2]}},
         r"permute_heads.layer: 2 is not a layer of quick-m \(valid: 0 to 1\)"),
        ({"permute_heads": {"layer": 1, "order": [1, 0, 2]}},
         r"quick-m-permuted.permute_heads.order \[1, 0, 2\] is not a permutation of the 4 heads 0..3"),
        ({"from_step": 150}, r"quick-m-permuted.from_step: 150 is not a checkpoint step; valid steps: \[0, 1, 2, 4, "
                             r"100, 200\]"),
        ({"from_step": None}, r"quick-m-permuted.from_step: None is not of type 'integer'"),
        ({"derived_from": "quick-s"}, r"quick-m-permuted.derived_from: 'quick-s' is a llama member; a head permutation "
                                      r"is implemented for GPT-NeoX members only \(valid sources: \['quick-m'\]\)"),
    ]
    for change, expected in cases:
        bad = copy.deepcopy(good)
        bad["suite"]["models"]["quick-m-permuted"].update(change)
        with pytest.raises(ConfigError, match=expected):
            validate_config(bad, SCHEMA)
    bad = copy.deepcopy(good)
    del bad["suite"]["models"]["quick-m-permuted"]["from_step"]
    with pytest.raises(ConfigError, match=r"'from_step' is a required property"):
        validate_config(bad, SCHEMA)


def test_a_derived_member_is_derived_not_trained(tmp_path, quick):
    for item in ("Snakefile", "rules", "config", "profiles", "report"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    quick["suite"]["models"]["quick-m-permuted"] = {"derived_from": "quick-m", "from_step": 100,
                                                    "permute_heads": {"layer": 1, "order": [1, 0, 3, 2]}}
    (tmp_path / "planted.yaml").write_text(yaml.safe_dump(quick))
    out = subprocess.run(["snakemake", "-n", "models/quick-m-permuted/suite.json", "--configfile", "planted.yaml"],
                         cwd=tmp_path, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "Deriving quick-m-permuted from models/quick-m" in text and "Training suite model quick-m " in text
    assert "Training suite model quick-m-permuted" not in text


@pytest.mark.parametrize("models, steps, expected", [
    (["stanford-crfm/alias-gpt2-small-x21"], "all",
     r"hub.steps: 'all' names Pythia's 154 checkpoints; a crfm repository's are known only from the hub: list them "
     r"\(`circuit-stability checkpoints stanford-crfm/alias-gpt2-small-x21 --steps`"),
    (["stanford-crfm/alias-gpt2-small-x21", "EleutherAI/pythia-70m"], [0],
     r"hub.models: a study's hub models come from one family .* these come from \['crfm', 'pythia'\]"),
    (["allenai/OLMo-2-0425-1B"], [0], r"hub.models.0: allenai/OLMo-2-0425-1B: OLMo 2 normalises each attention"),
    (["EleutherAI/gpt-j-6b"], [0], r"hub.models.0: no checkpoint naming scheme for 'EleutherAI/gpt-j-6b'; known "
                                   r"families: pythia"),
    (["stanford-crfm/alias-gpt2-large-x21"], [0],
     r"hub.models.0: no published shape known for 'stanford-crfm/alias-gpt2-large-x21'"),
    (["EleutherAI/pythia-70m"], [1001], r"hub.steps: \[1001\] are not Pythia checkpoints")])
def test_hub_studies_of_other_families_are_checked_before_planning(models, steps, expected):
    """A hub study takes repositories of one family with published checkpoints; 'all' steps only for Pythia (the
    one family whose checkpoints are known offline); OLMo 2, unknown families and shapes are refused by name."""
    from circuit_stability.config import load_config

    config = load_config(ROOT / "config/pythia.yaml")
    config["hub"].update(models=models, steps=steps, settings={})
    with pytest.raises(ConfigError, match=expected):
        validate_config(config, SCHEMA)
