# circuit-stability: the study as a DAG (design §3). Rules call the `circuit-stability` CLI.
#   snakemake --cores all                                  # embedded default (config/config.yaml)
#   snakemake --cores all --configfile config/quick.yaml   # minutes-long run used by the tests
import json
from pathlib import Path

from circuit_stability.checkpoints import checkpoint_schedule, pythia_schedule
from circuit_stability.config import validate_config

# The embedded default, unless --configfile names another (Snakemake would otherwise deep-merge the two).
if not config:

    configfile: "config/config.yaml"


# Fail before any job starts: every key, value and step is checked against the schema.
validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")

THREADS = config.get("threads", 1)
TASKS = sorted(config["tasks"])
ANALYSIS = config["analysis"]
CIRCUITS = config["circuits"]

if config["source"] == "suite":
    SUITE = config["suite"]
    FAMILY = SUITE["name"]
    TRAINING = SUITE["training"]
    MODELS = list(SUITE["models"])  # smallest first, as listed
    MODEL_NAMES = {m: m for m in MODELS}
    STEPS = checkpoint_schedule(TRAINING["max_steps"], TRAINING["checkpoint_every"], TRAINING.get("log_until", 512))
    TOKENS_PER_STEP = TRAINING["batch_size"] * TRAINING["context"]
    TOKENIZER = f"data/corpus/{FAMILY}/tokenizer"
else:
    FAMILY = "pythia"
    MODEL_NAMES = {name.split("/")[-1]: name for name in config["hub"]["models"]}
    MODELS = list(MODEL_NAMES)
    STEPS = config["hub"].get("steps", pythia_schedule())
    bad = sorted(set(STEPS) - set(pythia_schedule()))
    if bad:
        raise ValueError(f"hub.steps {bad} are not Pythia checkpoints; valid: 0, 1, 2, 4, ..., 512, then every 1000 to 143000")
    TOKENS_PER_STEP = config["hub"].get("batch_size", 1024) * config["hub"].get("context", 2048)
    TOKENIZER = config["hub"]["models"][0]

SCORED = STEPS if ANALYSIS.get("steps", "all") == "all" else sorted(ANALYSIS["steps"])
missing = sorted(set(SCORED) - set(STEPS))
if missing:
    raise ValueError(f"analysis.steps {missing} are not checkpoints of this study; valid steps: {STEPS}")

# Per-checkpoint files, computed in chunks of `analysis.steps_per_job` checkpoints per job: one process loads
# torch and TransformerLens once (~5 s) and then each checkpoint in turn. 1 = one job per checkpoint (GPU
# scale, cluster-friendly); "all" = one job per (model, task) (tiny models, where imports dominate).
PER_JOB = ANALYSIS.get("steps_per_job", 1)


def chunked(steps):
    size = len(steps) if PER_JOB == "all" else PER_JOB
    return [steps[i : i + size] for i in range(0, len(steps), size)]


wildcard_constraints:
    model="|".join(MODELS),
    task="|".join(TASKS),
    step=r"\d+",


def checkpoints_of(steps):
    """Input function: the local checkpoints of `steps` for the job's model (none for hub models)."""

    def inputs(wildcards):
        if config["source"] != "suite":
            return []
        return expand("models/{model}/step{step}/model.safetensors", model=wildcards.model, step=steps)

    return inputs


def model_args(wildcards):
    return (f"--model {wildcards.model} --model-name {MODEL_NAMES[wildcards.model]} --suite-dir models "
            f"--tokens-per-step {TOKENS_PER_STEP} --dtype {ANALYSIS.get('dtype', 'float32')} "
            f"--batch-size {ANALYSIS.get('batch_size', 70)}")


include: "rules/suite.smk"
include: "rules/datasets.smk"
include: "rules/behavior.smk"
include: "rules/scores.smk"
include: "rules/circuits.smk"
include: "rules/report.smk"
include: "rules/tracking.smk"

# `snakemake --report reports/report.html`: this text heads the report; rules mark figures with report().
report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        # the per-checkpoint results are deliverables: a deleted one is rebuilt (with what depends on it)
        expand("results/behavior/{model}/{task}/step{step}.json", model=MODELS, task=TASKS, step=STEPS),
        expand("results/scores/{model}/{task}/step{step}.parquet", model=MODELS, task=TASKS, step=SCORED),
        expand("results/circuits/{model}/{task}/step{step}.json", model=MODELS, task=TASKS, step=SCORED),
        rules.tables.output,
        rules.figures.output,
        rules.track.output,  # MLflow: every (model, task, step) logged (rules/tracking.smk)
