# Edge scores: one parquet per (model, task, step) (design §4 scores parquet).

rule scores:
    input:
        dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
        checkpoint=checkpoint_input,
    output:
        "results/scores/{model}/{task}/step{step}.parquet",
    params:
        model=model_args,
        method=ANALYSIS.get("method", "EAP-IG"),
        ig_steps=ANALYSIS.get("ig_steps", 5),
        convention=ANALYSIS.get("ig_convention", "paper"),
    threads: THREADS
    resources:
        gpu=1,
    message:
        "Edge scores ({params.method}): model {wildcards.model}, task {wildcards.task}, step {wildcards.step}"
    log:
        "logs/scores/{model}/{task}/step{step}.log",
    benchmark:
        "logs/benchmarks/scores/{model}/{task}/step{step}.tsv"
    shell:
        "circuit-stability scores {params.model} --dataset {input.dataset} --step {wildcards.step} "
        "--method {params.method} --ig-steps {params.ig_steps} --ig-convention {params.convention} "
        "--threads {threads} --out {output} 2> {log}"
