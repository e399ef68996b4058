# Task datasets: one parquet per (model family, task), shared by every model of the family (design §4). A hub
# study reads its family's tokenizer (the same for every size) from the first model's last downloaded checkpoint,
# at the revision its download marker names.
TOKENIZER_INPUT = TOKENIZER if config["source"] == "suite" else f"data/hub/{MODELS[0]}/step{STEPS_OF[MODELS[0]][-1]}.json"


# (a suite study's command is written out, so that its jobs' code and params are what they were before hub studies
# of other families: no rerun of a built study)
TOKENIZER_ARGS = TOKENIZER if config["source"] == "suite" else "{params.tokenizer}"


def tokenizer_revision(wildcards, input):
    """A hub study's --tokenizer and --revision, the revision read from the download marker (at job time)."""
    return f"{TOKENIZER} --revision {json.loads(Path(input[0]).read_text())['revision']}"


rule dataset:
    input:
        TOKENIZER_INPUT,
    output:
        "data/tasks/{family}/{task}.parquet",
    params:
        n=lambda w: config["tasks"][w.task]["n_examples"],
        seed=lambda w: config["tasks"][w.task]["seed"],
        **({} if config["source"] == "suite" else {"tokenizer": tokenizer_revision}),
    priority: DATASET_PRIORITY
    message:
        "Dataset: task {wildcards.task}, {params.n} examples, for the {wildcards.family} tokenizer"
    log:
        "logs/datasets/{family}/{task}.log",
    shell:
        OFFLINE + "circuit-stability --log {log} dataset --task {wildcards.task} --tokenizer " + TOKENIZER_ARGS +
        " --n-examples {params.n} --seed {params.seed} --out {output}"
