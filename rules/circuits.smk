# Minimal circuits: one JSON per (model, task, step) (design §4 circuit JSON, §5 definition).

rule circuit:
    input:
        scores="results/scores/{model}/{task}/step{step}.parquet",
        dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
        checkpoint=checkpoint_input,
    output:
        "results/circuits/{model}/{task}/step{step}.json",
    params:
        model=model_args,
        threshold=CIRCUITS.get("threshold", 0.8),
        max_fraction=CIRCUITS.get("max_fraction", 0.05),
        grid=CIRCUITS.get("grid_points", 8),
    threads: THREADS
    resources:
        gpu=1,
    message:
        "Minimal circuit: model {wildcards.model}, task {wildcards.task}, step {wildcards.step}"
    log:
        "logs/circuits/{model}/{task}/step{step}.log",
    benchmark:
        "logs/benchmarks/circuit/{model}/{task}/step{step}.tsv"
    shell:
        "circuit-stability circuit {params.model} --dataset {input.dataset} --step {wildcards.step} "
        "--scores {input.scores} --threshold {params.threshold} --max-fraction {params.max_fraction} "
        "--grid-points {params.grid} --threads {threads} --out {output} 2> {log}"
