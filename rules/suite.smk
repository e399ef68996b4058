# Embedded suite: corpus + tokenizer, then one training job per model (design §6).

if config["source"] == "suite":

    rule corpus:
        output:
            tokens="data/corpus/{family}/tokens.npy",
            tokenizer=directory("data/corpus/{family}/tokenizer"),
            meta="data/corpus/{family}/corpus.json",
        params:
            seed=lambda w: corpus_seed(w.family, FAMILY, SUITE["corpus"]["seed"]),  # the data seed
            weights=json.dumps(SUITE["corpus"]["weights"], sort_keys=True),
            training=json.dumps({k: TRAINING[k] for k in ("batch_size", "context", "max_steps")}),
        message:
            "Corpus {wildcards.family} (data seed {params.seed}): generating documents, tokenizer and the training "
            "token stream"
        log:
            "logs/corpus/{family}.log",
        shell:
            "circuit-stability --log {log} corpus --out data/corpus/{wildcards.family} --seed {params.seed} "
            "--weights '{params.weights}' --training '{params.training}'"

    rule train:
        wildcard_constraints:
            model="|".join(map(re.escape, TRAINED)),
        input:  # the corpus of the member's data seed
            tokens=lambda w: f"data/corpus/{CORPUS_OF[w.model]}/tokens.npy",
            tokenizer=lambda w: f"data/corpus/{CORPUS_OF[w.model]}/tokenizer",
        output:
            checkpoints=expand("models/{{model}}/step{step}/model.safetensors", step=STEPS),
            log_table="models/{model}/train_log.parquet",
            manifest="models/{model}/suite.json",
        params:  # (a build made before training seeds existed retrains once: this rule's command changed)
            shape=lambda w: json.dumps(SHAPE_PARAMS[w.model], sort_keys=True),
            training=json.dumps(TRAINING_PARAMS, sort_keys=True),  # (rules/common.smk)
            corpus=lambda w: f"data/corpus/{CORPUS_OF[w.model]}",
            seed=lambda w: SEEDS[w.model].weight,  # the weight seed
        threads: TRAIN_THREADS
        priority: training_priority
        message:
            "Training suite model {wildcards.model} (weight seed {params.seed}, corpus {params.corpus}; checkpoints at "
            "steps " + ", ".join(map(str, STEPS)) + ")"
        log:
            "logs/train/{model}.log",
        benchmark:
            "logs/benchmarks/train/{model}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} train --corpus {params.corpus} --out models/{wildcards.model} "
            "--shape '{params.shape}' --training '{params.training}' --seed {params.seed} "
            "--threads {threads}"

    if DERIVED:

        rule derive:
            input:  # the source member's checkpoints and manifests
                checkpoints=lambda w: expand("models/{source}/step{step}/model.safetensors",
                                             source=DERIVED[w.model]["derived_from"], step=STEPS),
                log_table=lambda w: f"models/{DERIVED[w.model]['derived_from']}/train_log.parquet",
                manifest=lambda w: f"models/{DERIVED[w.model]['derived_from']}/suite.json",
            output:
                checkpoints=expand("models/{{model}}/step{step}/model.safetensors", step=STEPS),
                log_table="models/{model}/train_log.parquet",
                manifest="models/{model}/suite.json",
            wildcard_constraints:
                model="|".join(map(re.escape, DERIVED)),
            params:
                source=lambda w: f"models/{DERIVED[w.model]['derived_from']}",
                permutation=lambda w: json.dumps({"layer": DERIVED[w.model]["permute_heads"]["layer"],
                                                  "order": DERIVED[w.model]["permute_heads"]["order"],
                                                  "from_step": DERIVED[w.model]["from_step"]}, sort_keys=True),
            message:
                "Deriving {wildcards.model} from {params.source}: heads permuted {params.permutation}"
            log:
                "logs/derive/{model}.log",
            shell:
                "circuit-stability --log {log} derive --source {params.source} --out models/{wildcards.model} "
                "--permutation '{params.permutation}'"
