# Minimal circuits: one JSON per (model, task, step) (design §4 circuit JSON, §5), chunks of steps per job.

for i, chunk in enumerate(chunked(SCORED)):

    rule:
        name:
            f"circuit_{i}"
        input:
            scores=expand("results/scores/{{model}}/{{task}}/step{step}.parquet", step=chunk),
            dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/circuits/{{model}}/{{task}}/step{step}.json", step=chunk),
        params:
            model=model_args,
            steps=",".join(map(str, chunk)),
            threshold=CIRCUITS.get("threshold", 0.8),
            max_fraction=CIRCUITS.get("max_fraction", 0.05),
            min_edges=CIRCUITS.get("min_search_edges", 1),
            grid=CIRCUITS.get("grid_points", 8),
            selection=CIRCUITS.get("selection", "greedy"),
        threads: THREADS
        resources:
            gpu=1,
        message:
            "Minimal circuits: model {wildcards.model}, task {wildcards.task}, steps {params.steps}"
        log:
            f"logs/circuits/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.log",
        benchmark:
            f"logs/benchmarks/circuit/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.tsv"
        shell:
            "circuit-stability circuit {params.model} --dataset {input.dataset} --steps {params.steps} "
            "--scores-dir results/scores/{wildcards.model}/{wildcards.task} --threshold {params.threshold} "
            "--max-fraction {params.max_fraction} --min-search-edges {params.min_edges} "
            "--grid-points {params.grid} --selection {params.selection} "
            "--threads {threads} "
            "--out-dir results/circuits/{wildcards.model}/{wildcards.task} 2> {log}"
