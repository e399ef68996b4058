# Task datasets: one parquet per (model family, task), shared by every model of the family (design §4).

rule dataset:
    input:
        TOKENIZER if config["source"] == "suite" else [],
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
        "circuit-stability --log {log} dataset --task {wildcards.task} --tokenizer " + TOKENIZER +
        " --n-examples {params.n} --seed {params.seed} --out {output}"
