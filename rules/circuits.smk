# Minimal circuits: one JSON per (model, task, step) (design §4 circuit JSON, §5), chunks of steps per job.

for g, i, chunk in [(g, i, c) for g, group in enumerate(STEP_GROUPS) for i, c in enumerate(chunked(group["scored"]))]:

    rule:
        name:
            group_rule(chunk_rule("circuit", i, chunk, 0), g)
        wildcard_constraints:
            model=group_models(g),
        input:
            scores=lambda w, chunk=chunk: validated(expand(f"results/scores/{w.model}/{w.task}/step{{step}}.parquet",
                                                           step=chunk_steps(chunk, w))),
            # the validity rule's reference
            final=lambda w: validated([f"results/behavior/{w.model}/{w.task}/step{STEPS_OF[w.model][-1]}.json"]),
            # is the task learnt at each of these checkpoints (analysis.learnt)
            behavior=lambda w, chunk=chunk: validated(expand(f"results/behavior/{w.model}/{w.task}/step{{step}}.json",
                                                             step=chunk_steps(chunk, w))),
            dataset=f"data/tasks/{FAMILY}/{{task}}.parquet",
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/circuits/{{model}}/{{task}}/step{step}.json", step=chunk),
        params:
            model=model_args,
            steps=steps_param(chunk),
            threshold=CIRCUITS["threshold"],
            max_fraction=CIRCUITS["max_fraction"],
            min_edges=CIRCUITS["min_search_edges"],
            grid=CIRCUITS["grid_points"],
            selection=CIRCUITS["selection"],
            margin=CIRCUITS["validity_margin"],
            emergence=ANALYSIS["emergence_fraction"],
            learnt=json.dumps(ANALYSIS["learnt"], sort_keys=True, separators=(",", ":")),
        threads: THREADS
        priority: model_priority
        resources:
            **model_resources("circuit", len(chunk)),
        retries: RETRIES
        message:
            "Minimal circuits: model {wildcards.model}, task {wildcards.task}, steps {params.steps}" + RESOURCES_MESSAGE
        log:
            f"logs/circuits/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.log",
        benchmark:
            f"logs/benchmarks/circuit/{{model}}/{{task}}/steps{chunk[0]}-{chunk[-1]}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} circuit {params.model} --dataset {input.dataset} --steps {params.steps} "
            "--scores-dir results/scores/{wildcards.model}/{wildcards.task} --threshold {params.threshold} "
            "--max-fraction {params.max_fraction} --min-search-edges {params.min_edges} "
            "--grid-points {params.grid} --selection {params.selection} --validity-margin {params.margin} "
            "--emergence-fraction {params.emergence} --final-behavior {input.final} "
            "--behavior-dir results/behavior/{wildcards.model}/{wildcards.task} --learnt '{params.learnt}' "
            "--threads {threads} --out-dir results/circuits/{wildcards.model}/{wildcards.task}"
