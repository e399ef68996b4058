# Behaviour: the task metric at every checkpoint, one JSON per step (one job per model and task: cheap).

rule behavior:
    input:
        dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
        checkpoints=all_checkpoints,
    output:
        expand("results/behavior/{{model}}/{{task}}/step{step}.json", step=STEPS),
    params:
        model=model_args,
        steps=",".join(map(str, STEPS)),
    threads: THREADS
    resources:
        gpu=1,
    message:
        "Behaviour: model {wildcards.model}, task {wildcards.task}, steps {params.steps}"
    log:
        "logs/behavior/{model}/{task}.log",
    shell:
        "circuit-stability behavior {params.model} --dataset {input.dataset} --steps {params.steps} "
        "--out-dir results/behavior/{wildcards.model}/{wildcards.task} --threads {threads} 2> {log}"
