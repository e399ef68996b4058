# The study's derived settings and the helpers every rule uses. The config is validated and its defaults are
# filled in (Snakefile), so every setting is read with config[...] and no default is repeated here.
import json
import os
import re
from pathlib import Path

from circuit_stability.audit import flagged_steps, integrity_gate, read_skipped
from circuit_stability.checkpoints import checkpoint_schedule, pythia_schedule
from circuit_stability.config import ConfigError, load_config, shape_record, study_outputs, trained_elsewhere
from snakemake.logging import logger

from circuit_stability.kernels import env_prefix
from circuit_stability.models import checkpoint_revision, hub_family, hub_steps
from circuit_stability.records import check_artefact
from circuit_stability.scale import Shape, hub_shape, job_resources, thin
from circuit_stability.suite.seeds import corpus_name, corpus_seed, member_seeds

THREADS = config["threads"]
TRAIN_THREADS = config["train_threads"] or THREADS  # training jobs only (the --threads of their command)
# `env ATEN_CPU_CAPABILITY=... ` in front of every torch job with cpu_kernels: portable; nothing with native.
KERNELS = env_prefix(config["cpu_kernels"])
TASKS = sorted(config["tasks"])
ANALYSIS = config["analysis"]
CIRCUITS = config["circuits"]
SIMILARITY = config["similarity"]
BOOTSTRAP = SIMILARITY["resamples"] > 0  # the scores stage then writes per-example scores

if config["source"] == "suite":
    SUITE = config["suite"]
    FAMILY = SUITE["name"]
    TRAINING = SUITE["training"]
    MODELS = list(SUITE["models"])  # smallest first, as listed
    # trained members, and members derived from one by a function-preserving head permutation (suite/derive.py)
    DERIVED = {m: e for m, e in SUITE["models"].items() if "derived_from" in e}
    TRAINED = [m for m in MODELS if m not in DERIVED]
    MODEL_NAMES = {m: m for m in MODELS}
    # each member's weight and data seeds (names such as mini-m-seed2, mini-m-data-seed3; suite/seeds.py) and the
    # corpus its data seed reads: data/corpus/<FAMILY> for suite.corpus.seed, data/corpus/<FAMILY>-data-seed<d>
    SEEDS = {m: member_seeds(m, SUITE["models"][m], config["seed"], SUITE["corpus"]["seed"]) for m in MODELS}
    CORPUS_OF = {m: corpus_name(FAMILY, SEEDS[m].data, SUITE["corpus"]["seed"]) for m in MODELS}
    STEPS = checkpoint_schedule(TRAINING["max_steps"], TRAINING["checkpoint_every"], TRAINING["log_until"])
    TOKENS_PER_STEP = TRAINING["batch_size"] * TRAINING["context"]
    TOKENIZER = f"data/corpus/{FAMILY}/tokenizer"
    # what each training job is given, and its suite.json records: the member's shape (without its seeds) and the
    # training settings (decay_steps only when set: a config written before the option keeps its params, no retraining)
    SHAPE_PARAMS = {m: shape_record(SUITE["models"][m]) for m in MODELS}
    TRAINING_PARAMS = {k: v for k, v in TRAINING.items() if k != "decay_steps" or v is not None}
else:
    FAMILY = hub_family(config["hub"]["models"][0])  # one per study (validate_config): pythia, crfm, olmo, ...
    MODEL_NAMES = {name.split("/")[-1]: name for name in config["hub"]["models"]}
    MODELS = list(MODEL_NAMES)
    STEPS = pythia_schedule() if config["hub"]["steps"] == "all" else sorted(config["hub"]["steps"])
    TOKENS_PER_STEP = config["hub"]["batch_size"] * config["hub"]["context"]
    TOKENIZER = config["hub"]["models"][0]

# the study's config file(s), as given to this build
CONFIGFILES = " ".join(map(str, workflow.configfiles)) or DEFAULT_CONFIG

# The study-wide outputs (tables, figures, report): the default study's (config/config.yaml's, which dvc.yaml
# versions) at results/tables, reports/figures and reports/report.html; another study's under its own name
# (results/studies/<study>/tables, ...), so that building the seeds or long study never overwrites the default's.
OUTPUTS = study_outputs(config["study"], load_config(DEFAULT_CONFIG, resolve=False).get("study")
                        if Path(DEFAULT_CONFIG).is_file() else None)
TABLES, FIGURES, REPORT = OUTPUTS["tables"], OUTPUTS["figures"], OUTPUTS["report"]

# A corpus or trained member already built with other settings (another study's of the same name, or this study's
# before its config changed) would be regenerated or retrained over: refuse before any job starts, naming it.
if config["source"] == "suite":
    _conflicts = trained_elsewhere(
        ".",
        {c: {"seed": corpus_seed(c, FAMILY, SUITE["corpus"]["seed"]), "weights": SUITE["corpus"]["weights"],
             "shape": [TRAINING["max_steps"], TRAINING["batch_size"], TRAINING["context"]]}
         for c in sorted(set(CORPUS_OF.values()))},
        {m: {**SHAPE_PARAMS[m], "training": {**TRAINING_PARAMS, "seed": SEEDS[m].weight}} for m in TRAINED})
    if _conflicts:
        raise ConfigError("this study would overwrite work already built:\n  " + "\n  ".join(_conflicts))

SCORED = STEPS if ANALYSIS["steps"] == "all" else sorted(ANALYSIS["steps"])  # checked by validate_config
SCORED = thin(SCORED, ANALYSIS["every"])  # every k-th (analysis.every), the first and last kept

# Each model's checkpoints: the study's, but a hub model's checkpoints known to be missing upstream (a few
# PolyPythias steps), which are skipped with a warning naming them (circuit_stability.models.hub_steps).
if config["source"] == "suite":
    STEPS_OF = {m: STEPS for m in MODELS}
else:
    STEPS_OF = {m: hub_steps(MODEL_NAMES[m], STEPS, warn=logger.warning) for m in MODELS}

# The checkpoint audit (rules/audit.smk, docs/checkpoint-audit.md) reads every checkpoint of a model (AUDITED_OF)
# before any analysis job does, and its gate stops the build when it flags a checkpoint the plan analyses under the
# `skip` or `error` policy, recording it in results/audit/<model>.skipped.json. As the study is planned, that record
# applies the policy: `skip` leaves the checkpoints out of every analysis, with a warning naming them; `error` stops
# here, naming them. (The plan reads only that record, which no successful job writes, so that it stays the same for
# the whole build, in job processes that read the workflow again too.) Under `keep`, the audit table's flagged
# checkpoints are named as the study is planned, and analysed and marked. A record older than a suite model's
# checkpoints is ignored (they were rewritten: the audit runs again).
AUDITED_OF = {m: list(STEPS_OF[m]) for m in MODELS}
INTEGRITY_KEY = "suite.integrity" if config["source"] == "suite" else "hub.integrity"
INTEGRITY = (config["suite"] if config["source"] == "suite" else config["hub"])["integrity"]
_newer = {m: [f"models/{m}/step{s}/model.safetensors" for s in AUDITED_OF[m]] if config["source"] == "suite" else []
          for m in MODELS}
FLAGGED_OF = {m: (read_skipped(f"results/audit/{m}.skipped.json", newer_than=_newer[m]) if INTEGRITY != "keep"
                  else flagged_steps(f"results/audit/{m}.parquet", newer_than=_newer[m])) for m in MODELS}
_flagged = {m: f for m, f in FLAGGED_OF.items() if f}
if _flagged and INTEGRITY == "error":
    raise ConfigError(f"{INTEGRITY_KEY}: error, and the checkpoint audit (results/audit/) flagged:\n" + "\n".join(
        f"  {m} step {s}: {why}" for m, f in _flagged.items() for s, why in f.items())
        + f"\nreplace those checkpoints (then delete results/audit/<model>.*), or set {INTEGRITY_KEY} to skip or keep")
for _m, _f in _flagged.items():
    _verb = "skipped" if INTEGRITY == "skip" else "kept and marked"
    logger.warning(f"{_m}: {len(_f)} checkpoint(s) flagged by the checkpoint audit, {_verb} ({INTEGRITY_KEY}: "
                   f"{INTEGRITY}): " + "; ".join(f"step {s} ({why})" for s, why in _f.items()))
    if INTEGRITY == "skip":
        STEPS_OF[_m] = [s for s in STEPS_OF[_m] if s not in _f]
SCORED_OF = {m: [s for s in SCORED if s in STEPS_OF[m]] for m in MODELS}

# Each model's size, batch size and dtype (hub.settings overrides analysis.batch_size and analysis.dtype per model),
# and the checkpoints its path patching reads (hub.settings.<model>.stability_every thins them).
if config["source"] == "suite":  # (4096: above the suite tokenizer's vocabulary, for the memory estimate)
    SHAPE_OF = {m: Shape(SUITE["models"][m]["n_layers"], SUITE["models"][m]["d_model"], SUITE["models"][m]["n_heads"],
                         4096) for m in MODELS}
    SETTINGS_OF = {m: {} for m in MODELS}
else:
    SHAPE_OF = {m: hub_shape(MODEL_NAMES[m]) for m in MODELS}
    SETTINGS_OF = {m: config["hub"]["settings"].get(MODEL_NAMES[m], {}) for m in MODELS}
# (a model's own setting, else the study's; stability_every has no study-wide setting: every scored checkpoint)
BATCH_OF = {m: {"batch_size": ANALYSIS["batch_size"], **SETTINGS_OF[m]}["batch_size"] for m in MODELS}
DTYPE_OF = {m: {"dtype": ANALYSIS["dtype"], **SETTINGS_OF[m]}["dtype"] for m in MODELS}
STABILITY_STEPS_OF = {m: thin(SCORED_OF[m], {"stability_every": 1, **SETTINGS_OF[m]}["stability_every"]) for m in MODELS}
# Models with the same checkpoints share one set of per-chunk rules; one group (every suite study, and hub studies
# without missing checkpoints) keeps the plain rule names (behavior, scores_0, circuit_0, ...).
STEP_GROUPS = []
for _m in MODELS:
    _group = next((g for g in STEP_GROUPS if g["steps"] == STEPS_OF[_m]), None)
    if _group is None:
        STEP_GROUPS.append({"models": [_m], "steps": STEPS_OF[_m], "scored": SCORED_OF[_m]})
    else:
        _group["models"].append(_m)


# Scheduling: among the jobs ready to start, Snakemake starts the highest priority first. Training comes before any
# analysis (every model's chain starts with it; an analysis job started first would leave a training to the end of
# the build), larger models first; among the analysis jobs a larger model's go first, its chain (each task's
# behaviour, scores and circuits, and its components) being the study's longest. The datasets, seconds each and
# needed by every analysis job, go before all.
def model_priority(wildcards):
    """Priority of an analysis job of model `wildcards.model`: its rank by size (MODELS lists the smallest first)."""
    return MODELS.index(wildcards.model) + 1


def training_priority(wildcards):
    """Priority of a training job: above every analysis job, larger models first."""
    return len(MODELS) + model_priority(wildcards)


DATASET_PRIORITY = 2 * len(MODELS) + 1


def group_rule(name, g):
    """The name of rule `name` for step group `g` (the plain name when the study has one group)."""
    return name if len(STEP_GROUPS) == 1 else f"{name}_g{g}"


def group_models(g):
    """The `model` wildcard constraint of step group `g`."""
    return "|".join(re.escape(m) for m in STEP_GROUPS[g]["models"])


def per_model_files(pattern, model):
    """`pattern` (with {model}, {task}, {step}) expanded over every task and the scored checkpoints of `model`."""
    return expand(pattern, model=model, task=TASKS, step=SCORED_OF[model])


def per_model(pattern, scored=False):
    """`pattern` (with {model}, {task}, {step}) expanded over every model, task and that model's checkpoints
    (its scored checkpoints if `scored`)."""
    steps = SCORED_OF if scored else STEPS_OF
    return [f for m in MODELS for f in expand(pattern, model=m, task=TASKS, step=steps[m])]

# Per-checkpoint files, computed in chunks of `analysis.steps_per_job` checkpoints per job: one process loads
# torch and TransformerLens once (~5 s) and then each checkpoint in turn. 1 = one job per checkpoint (GPU
# scale, cluster-friendly); "all" = one job per (model, task) (tiny models, where imports dominate).
PER_JOB = ANALYSIS["steps_per_job"]


# One checkpoint per job: one rule with a {step} wildcard instead of a rule per checkpoint (at the paper's scale
# Snakemake's DAG building grows with jobs x rules: 10,800 jobs and ~1,000 rules took minutes to plan).
STEP = "{step}"


def chunked(steps, per_job=PER_JOB):
    """`steps` in consecutive chunks of `per_job` (an int, or "all": one chunk); per_job 1 gives the one chunk
    [STEP], a wildcard rule for every checkpoint."""
    if per_job == 1:
        return [[STEP]] if steps else []
    size = len(steps) if per_job == "all" else per_job
    return [steps[i : i + size] for i in range(0, len(steps), size)]


def chunk_steps(chunk, wildcards):
    """The checkpoint steps of a job of a rule made for `chunk`."""
    return [int(wildcards.step)] if chunk == [STEP] else chunk


def steps_param(chunk):
    """The `--steps` value of a rule made for `chunk` (a params function for the wildcard rule)."""
    return (lambda w: w.step) if chunk == [STEP] else ",".join(map(str, chunk))


def chunk_rule(name, i, chunk, n_chunks):
    """The name of the rule made for chunk `i` of `n_chunks`: plain for one chunk or the wildcard rule."""
    return name if chunk == [STEP] or n_chunks == 1 else f"{name}_{i}"


# Behaviour, components and path patching cover every task of a model per job: `analysis.model_steps_per_job`
# checkpoints each ("all": one job per model).
MODEL_PER_JOB = ANALYSIS["model_steps_per_job"]

# (No `group:` here: on a cluster profiles/slurm puts the per-checkpoint rules in one group and batches them into
# scheduler jobs with --group-components. Declared in the rules, groups cost every run: Snakemake's DAG checks of
# groups made planning the paper-scale study (10,797 jobs) take 8 min instead of 1.)
RETRIES = ANALYSIS["retries"]


# Each model job's console line ends with what it asked for (and a retry's halved batch size shows there).
RESOURCES_MESSAGE = " [gpu {resources.gpu}, {resources.mem_mb} MB, {resources.runtime} min, batch {resources.batch_size}]"


def model_resources(kind, n_steps):
    """The `resources:` of a model job of `kind` over `n_steps` checkpoints: `gpu`, `mem_mb`, `runtime` (minutes)
    and `batch_size`, as functions of the job's model and Snakemake's attempt, so that a retry (analysis.retries)
    halves the batch size and doubles memory and time (circuit_stability.scale.job_resources)."""

    def get(key):
        return lambda w, attempt: job_resources(kind, SHAPE_OF[w.model], DTYPE_OF[w.model], BATCH_OF[w.model],
                                                n_steps, attempt, gpu=1)[key]

    return {key: get(key) for key in ("gpu", "mem_mb", "runtime", "batch_size")}


wildcard_constraints:
    model="|".join(MODELS),
    task="|".join(TASKS),
    step=r"\d+",


def checkpoints_of(steps):
    """Input function: the checkpoints of `steps` for the job's model: the suite's local folders, or the hub
    download markers (rules/download.smk), so that no model job starts before its checkpoints are in HF_HOME."""

    def inputs(wildcards):
        chunk = chunk_steps(steps, wildcards)
        # the model's audit gate first: no analysis job reads a checkpoint before the audit has passed it
        gate = [f"results/audit/{wildcards.model}.passed"]
        if config["source"] != "suite":
            return gate + expand("data/hub/{model}/step{step}.json", model=wildcards.model, step=chunk)
        return gate + expand("models/{model}/step{step}/model.safetensors", model=wildcards.model, step=chunk)

    return inputs


# Model jobs of a hub study read the checkpoints the download rule put in HF_HOME and never the network.
OFFLINE = "" if config["source"] == "suite" else "HF_HUB_OFFLINE=1 "


def model_options(wildcards):
    """The model options of the stages that take no batch-size resource (components, path patching, similarity):
    which model, where, and in which dtype (hub.settings)."""
    return (f"--model {wildcards.model} --model-name {MODEL_NAMES[wildcards.model]} --suite-dir models "
            f"--dtype {DTYPE_OF[wildcards.model]}")


def model_args(wildcards, resources):
    """The options every per-checkpoint stage (behaviour, scores, circuits) shares; the batch size is the job's
    `batch_size` resource (halved on each retry)."""
    return (f"--model {wildcards.model} --model-name {MODEL_NAMES[wildcards.model]} --suite-dir models "
            f"--tokens-per-step {TOKENS_PER_STEP} --dtype {DTYPE_OF[wildcards.model]} "
            f"--batch-size {resources.batch_size}")


def validated(paths):
    """The input files `paths`, each one that exists checked against its contract as the DAG is built (cheaply:
    a parquet file's footer and metadata), so that a corrupt input stops the build before any job starts and
    Snakemake deletes no output of a job that could only fail (circuit_stability.records.check_artefact).
    `circuit-stability check` and `sync` set CIRCUIT_STABILITY_SKIP_INPUT_CHECKS=1: they need the DAG of a study
    with corrupt files, to list them."""
    if os.environ.get("CIRCUIT_STABILITY_SKIP_INPUT_CHECKS") == "1":
        return paths
    for path in paths:
        if Path(path).exists():
            check_artefact(path, full=False)
    return paths


# Hub studies: model jobs run offline (after the downloads), on top of the CPU-kernel prefix.
KERNELS = KERNELS + OFFLINE
