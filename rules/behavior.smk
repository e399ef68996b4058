# Behaviour: the task metric at every checkpoint, one JSON per (task, step). One forward pass per checkpoint and task
# is cheap next to scoring, so one job per model covers every task and step, each checkpoint loaded once (a job per
# (model, task) paid the imports and the loads once per task).

for g, group in enumerate(STEP_GROUPS):
  chunks = chunked(group["steps"], MODEL_PER_JOB)
  for i, chunk in enumerate(chunks):

    rule:
        name:
            group_rule(chunk_rule("behavior", i, chunk, len(chunks)), g)
        wildcard_constraints:
            model=group_models(g),
        input:
            datasets=[f"data/tasks/{FAMILY}/{t}.parquet" for t in TASKS],
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/behavior/{{model}}/{task}/step{step}.json", task=TASKS, step=chunk),
        params:
            model=model_args,
            steps=steps_param(chunk),
        threads: THREADS
        priority: model_priority
        resources:
            **model_resources("behavior", len(chunk)),
        retries: RETRIES
        message:
            "Behaviour: model {wildcards.model}, tasks " + ", ".join(TASKS) + ", steps {params.steps}" + RESOURCES_MESSAGE
        log:
            f"logs/behavior/{{model}}/steps{chunk[0]}-{chunk[-1]}.log",
        shell:
            KERNELS + "circuit-stability --log {log} behavior {params.model} --dataset {input.datasets} "
            "--steps {params.steps} --out-dir 'results/behavior/{wildcards.model}/{{task}}' --threads {threads}"
