# Behaviour: the task metric at every checkpoint, one JSON per step. One forward pass per checkpoint is cheap
# next to scoring, so one job per (model, task) covers every step.

for g, group in enumerate(STEP_GROUPS):
    chunk = group["steps"]

    rule:
        name:
            group_rule("behavior", g)
        wildcard_constraints:
            model=group_models(g),
        input:
            dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/behavior/{{model}}/{{task}}/step{step}.json", step=chunk),
        params:
            model=model_args,
            steps=",".join(map(str, chunk)),
        threads: THREADS
        priority: model_priority
        resources:
            gpu=1,
        message:
            "Behaviour: model {wildcards.model}, task {wildcards.task}, steps {params.steps}"
        log:
            f"logs/behavior/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.log",
        shell:
            KERNELS + "circuit-stability --log {log} behavior {params.model} --dataset {input.dataset} --steps {params.steps} "
            "--out-dir results/behavior/{wildcards.model}/{wildcards.task} --threads {threads}"
