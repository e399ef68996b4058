# Edge scores: one parquet per (model, task, step) (design §4 scores parquet), chunks of steps per job; with a
# bootstrap (similarity.resamples > 0), each example's scores beside it (step{step}.examples.parquet).

for g, i, chunk in [(g, i, c) for g, group in enumerate(STEP_GROUPS) for i, c in enumerate(chunked(group["scored"]))]:

    rule:
        name:
            group_rule(f"scores_{i}", g)
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
            steps=",".join(map(str, chunk)),
            method=ANALYSIS["method"],
            ig_steps=ANALYSIS["ig_steps"],
            convention=ANALYSIS["ig_convention"],
            examples=f"--example-scores {SIMILARITY['stored_fraction']}" if BOOTSTRAP else "",
        threads: THREADS
        priority: model_priority
        resources:
            gpu=1,
        message:
            "Edge scores ({params.method}): model {wildcards.model}, task {wildcards.task}, steps {params.steps}"
        log:
            f"logs/scores/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.log",
        benchmark:
            f"logs/benchmarks/scores/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} scores {params.model} --dataset {input.dataset} --steps {params.steps} "
            "--method {params.method} --ig-steps {params.ig_steps} --ig-convention {params.convention} {params.examples} "
            "--threads {threads} --out-dir results/scores/{wildcards.model}/{wildcards.task}"
