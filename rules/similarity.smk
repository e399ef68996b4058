# Circuit similarity over checkpoints and its bootstrap noise floor (circuit_stability.similarity): one job per
# model reads every task's scores, per-example scores and circuits, re-weights the per-example scores for each
# bootstrap resample (no backward pass) and re-selects the circuit; only the faithfulness of a few resampled
# circuits at each task's last valid checkpoint runs forward passes.

SIMILARITY_FILES = [f"results/similarity/{m}.parquet" for m in MODELS if SCORED_OF[m]]

for g, group in enumerate(STEP_GROUPS):
    chunk = group["scored"]
    if not chunk:
        continue

    rule:
        name:
            group_rule("similarity", g)
        wildcard_constraints:
            model=group_models(g),
        input:
            datasets=[f"data/tasks/{FAMILY}/{t}.parquet" for t in TASKS],
            scores=lambda w, chunk=chunk: validated(expand("results/scores/{model}/{task}/step{step}.parquet",
                                                           model=w.model, task=TASKS, step=chunk)),
            examples=lambda w, chunk=chunk: validated(expand(
                "results/scores/{model}/{task}/step{step}.examples.parquet", model=w.model, task=TASKS, step=chunk)
                if BOOTSTRAP else []),
            circuits=lambda w, chunk=chunk: validated(expand("results/circuits/{model}/{task}/step{step}.json",
                                                             model=w.model, task=TASKS, step=chunk)),
            # (with hub.evict, the checkpoints are gone by now: the job downloads the few it reads, each task's last
            # valid one, itself)
            checkpoints=checkpoints_of(chunk) if not EVICT else [],
        output:
            "results/similarity/{model}.parquet",
        params:
            model=model_options,
            steps=",".join(map(str, chunk)),
            bootstrap=(f"--resamples {SIMILARITY['resamples']} --seed {SIMILARITY['seed']} "
                       f"--faithfulness-resamples {SIMILARITY['faithfulness_resamples']}"),
        threads: THREADS
        priority: model_priority
        resources:
            **model_resources("circuit", 1),
        retries: RETRIES
        message:
            "Circuit similarity and bootstrap noise floor: model {wildcards.model}, steps {params.steps}" + RESOURCES_MESSAGE
        log:
            "logs/similarity/{model}.log",
        benchmark:
            "logs/benchmarks/similarity/{model}.tsv"
        shell:
            (KERNELS if not EVICT else KERNELS.replace(OFFLINE, "")) + "circuit-stability --log {log} similarity {params.model} --steps {params.steps} "
            "--dataset {input.datasets} --results results "
            "{params.bootstrap} --batch-size {resources.batch_size} --threads {threads} --out {output}"
