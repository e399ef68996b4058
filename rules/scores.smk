# Edge scores: one parquet per (model, task, step) (design §4 scores parquet), chunks of steps per job; with a
# bootstrap (similarity.resamples > 0), each example's scores beside it (step{step}.examples.parquet).

for g, i, chunk, n in [(g, i, c, len(cs)) for g, group in enumerate(STEP_GROUPS)
                       for cs in [chunked(group["scored"])] for i, c in enumerate(cs)]:

    rule:
        name:
            group_rule(chunk_rule("scores", i, chunk, 0), g)
        wildcard_constraints:
            model=group_models(g),
        input:
            dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/scores/{{model}}/{{task}}/step{step}.parquet", step=chunk),
            # each example's scores, for the bootstrap of the similarity stage (records.ExampleScoresRecord)
            expand("results/scores/{{model}}/{{task}}/step{step}.examples.parquet", step=chunk) if BOOTSTRAP else [],
        params:
            model=model_args,
            steps=steps_param(chunk),
            method=ANALYSIS["method"],
            ig_steps=ANALYSIS["ig_steps"],
            convention=ANALYSIS["ig_convention"],
            examples=f"--example-scores {SIMILARITY['stored_fraction']}" if BOOTSTRAP else "",
        threads: THREADS
        priority: model_priority
        resources:
            **model_resources("scores", len(chunk)),
        retries: RETRIES
        message:
            "Edge scores ({params.method}): model {wildcards.model}, task {wildcards.task}, steps {params.steps}" + RESOURCES_MESSAGE
        log:
            f"logs/scores/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.log",
        benchmark:
            f"logs/benchmarks/scores/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} scores {params.model} --dataset {input.dataset} --steps {params.steps} "
            "--method {params.method} --ig-steps {params.ig_steps} --ig-convention {params.convention} {params.examples} "
            "--threads {threads} --out-dir results/scores/{wildcards.model}/{wildcards.task}"
