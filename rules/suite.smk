# Embedded suite: corpus + tokenizer, then one training job per model (design §6).

if config["source"] == "suite":

    rule corpus:
        output:
            tokens="data/corpus/{family}/tokens.npy",
            tokenizer=directory("data/corpus/{family}/tokenizer"),
            meta="data/corpus/{family}/corpus.json",
        params:
            seed=SUITE["corpus"]["seed"],
            weights=json.dumps(SUITE["corpus"]["weights"], sort_keys=True),
            training=json.dumps({k: TRAINING[k] for k in ("batch_size", "context", "max_steps")}),
        message:
            "Corpus of suite {wildcards.family}: generating documents, tokenizer and the training token stream"
        log:
            "logs/corpus/{family}.log",
        shell:
            "circuit-stability --log {log} corpus --out data/corpus/{wildcards.family} --seed {params.seed} "
            "--weights '{params.weights}' --training '{params.training}'"

    rule train:
        input:
            tokens=f"data/corpus/{FAMILY}/tokens.npy",
            tokenizer=f"data/corpus/{FAMILY}/tokenizer",
        output:
            checkpoints=expand("models/{{model}}/step{step}/model.safetensors", step=STEPS),
            log_table="models/{model}/train_log.parquet",
            manifest="models/{model}/suite.json",
        params:
            shape=lambda w: json.dumps(SUITE["models"][w.model], sort_keys=True),
            training=json.dumps(TRAINING, sort_keys=True),
            seed=config["seed"],
        threads: THREADS
        message:
            "Training suite model {wildcards.model} (checkpoints at steps " + ", ".join(map(str, STEPS)) + ")"
        log:
            "logs/train/{model}.log",
        benchmark:
            "logs/benchmarks/train/{model}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} train --corpus data/corpus/" + FAMILY + " --out models/{wildcards.model} "
            "--shape '{params.shape}' --training '{params.training}' --seed {params.seed} "
            "--threads {threads}"
