# Task datasets: one parquet per (model family, task), shared by every model of the family (design §4). A hub
# study reads Pythia's tokenizer (the same for every size) from the first model's last downloaded checkpoint.
TOKENIZER_INPUT = TOKENIZER if config["source"] == "suite" else f"data/hub/{MODELS[0]}/step{STEPS_OF[MODELS[0]][-1]}.json"
TOKENIZER_ARGS = TOKENIZER if config["source"] == "suite" else f"{TOKENIZER} --revision step{STEPS_OF[MODELS[0]][-1]}"

rule dataset:
    input:
        TOKENIZER_INPUT,
    output:
        "data/tasks/{family}/{task}.parquet",
    params:
        n=lambda w: config["tasks"][w.task]["n_examples"],
        seed=lambda w: config["tasks"][w.task]["seed"],
    priority: DATASET_PRIORITY
    message:
        "Dataset: task {wildcards.task}, {params.n} examples, for the {wildcards.family} tokenizer"
    log:
        "logs/datasets/{family}/{task}.log",
    shell:
        OFFLINE + "circuit-stability --log {log} dataset --task {wildcards.task} --tokenizer " + TOKENIZER_ARGS +
        " --n-examples {params.n} --seed {params.seed} --out {output}"
