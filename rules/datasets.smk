# Task datasets: one parquet per (model family, task), shared by every model of the family (design §4). A hub
# study reads its family's tokenizer (the same for every size) from the first model's last downloaded checkpoint.
TOKENIZER_INPUT = TOKENIZER if config["source"] == "suite" else f"data/hub/{MODELS[0]}/step{STEPS_OF[MODELS[0]][-1]}.json"


# The revision is the family's name for that step, written into the command where it is known offline (a suite
# study's and a Pythia study's commands are what they were before other families: no rerun of a built study); an
# OLMo name carries the tokens seen too, so it is read from the download marker when the job runs.
MARKER_REVISION = config["source"] == "hub" and FAMILY == "olmo"
if config["source"] == "suite":
    TOKENIZER_ARGS = TOKENIZER
elif MARKER_REVISION:
    TOKENIZER_ARGS = "{params.tokenizer}"
else:
    TOKENIZER_ARGS = f"{TOKENIZER} --revision {checkpoint_revision(TOKENIZER, STEPS_OF[MODELS[0]][-1])}"


def tokenizer_revision(wildcards, input):
    """An OLMo study's --tokenizer and --revision, the revision read from the download marker (at job time)."""
    return f"{TOKENIZER} --revision {json.loads(Path(input[0]).read_text())['revision']}"


rule dataset:
    input:
        TOKENIZER_INPUT,
    output:
        "data/tasks/{family}/{task}.parquet",
    params:
        n=lambda w: config["tasks"][w.task]["n_examples"],
        seed=lambda w: config["tasks"][w.task]["seed"],
        **({"tokenizer": tokenizer_revision} if MARKER_REVISION else {}),
    priority: DATASET_PRIORITY
    message:
        "Dataset: task {wildcards.task}, {params.n} examples, for the {wildcards.family} tokenizer"
    log:
        "logs/datasets/{family}/{task}.log",
    shell:
        OFFLINE + "circuit-stability --log {log} dataset --task {wildcards.task} --tokenizer " + TOKENIZER_ARGS +
        " --n-examples {params.n} --seed {params.seed} --out {output}"
