# Components: head-function scores of every head at every checkpoint (induction, duplicate-token, previous-token,
# successor; with the IOI task copy and negative copy, direct effects, name movers and the S-inhibition test), one
# parquet per step. A few forward passes and weight products per checkpoint, so one job per model covers every
# step, as behaviour does.

IOI_DATASET = f"data/tasks/{FAMILY}/ioi.parquet" if "ioi" in TASKS else None
# every model's components files, all checkpoints (rule all and the tables rule read this list)
COMPONENT_FILES = [f"results/components/{m}/step{s}.parquet" for m in MODELS for s in STEPS_OF[m]]

for g, group in enumerate(STEP_GROUPS):
  chunks = chunked(group["steps"], MODEL_PER_JOB)
  for i, chunk in enumerate(chunks):

    rule:
        name:
            group_rule(chunk_rule("components", i, chunk, len(chunks)), g)
        wildcard_constraints:
            model=group_models(g),
        input:
            ioi=[IOI_DATASET] if IOI_DATASET else [],
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/components/{{model}}/step{step}.parquet", step=chunk),
        params:
            model=model_options,
            steps=steps_param(chunk),
            ioi=f"--ioi-dataset {IOI_DATASET}" if IOI_DATASET else "",
            tokens_per_step=TOKENS_PER_STEP,
            test=(f"--length {config['components']['length']} --batch {config['components']['batch']} "
                  f"--seed {config['components']['seed']} --top-k {config['components']['top_k']}"
                  + (f" --name-mover-copy {config['components']['thresholds']['copy']}"
                     f" --candidate-effect {config['components']['candidate_effect']}" if IOI_DATASET else "")),
        threads: THREADS
        priority: model_priority
        resources:
            **model_resources("components", len(chunk)),
        retries: RETRIES
        message:
            "Components: model {wildcards.model}, steps {params.steps}" + RESOURCES_MESSAGE
        log:
            f"logs/components/{{model}}/steps{chunk[0]}-{chunk[-1]}.log",
        benchmark:
            f"logs/benchmarks/components/{{model}}/steps{chunk[0]}-{chunk[-1]}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} heads {params.model} --steps {params.steps} {params.ioi} "
            "{params.test} --tokens-per-step {params.tokens_per_step} --out-dir results/components/{wildcards.model}"
