# IOI algorithm stability (Tigges et al. 2024 §4.2, Fig. 4 B–D): path patching of every head into the IOI receiver
# sets, both forms, at every checkpoint whose IOI circuit is valid; one parquet per step, one job per model (a few
# batched forwards per checkpoint). A model with fewer than three layers cannot host the algorithm's three stages
# (name movers read S-inhibition heads, which read induction and duplicate-token heads): its job loads no model and
# writes each step's file with that reason, so the algorithm table says so for every model.

STABILITY_MODELS = list(MODELS) if "ioi" in TASKS else []
STABILITY_FILES = [f"results/stability/{m}/ioi/step{s}.parquet" for m in STABILITY_MODELS for s in STABILITY_STEPS_OF[m]]

# Models that share their path-patching checkpoints share a set of rules (as STEP_GROUPS do for the other stages).
STABILITY_GROUPS = []
for _m in STABILITY_MODELS:
    _group = next((sg for sg in STABILITY_GROUPS if sg["steps"] == STABILITY_STEPS_OF[_m]), None)
    if _group is None:
        STABILITY_GROUPS.append({"models": [_m], "steps": STABILITY_STEPS_OF[_m]})
    else:
        _group["models"].append(_m)

for g, group in enumerate(STABILITY_GROUPS):
  chunks = chunked(group["steps"], MODEL_PER_JOB)
  for i, chunk in enumerate(chunks if group["steps"] else []):

    rule:
        name:
            chunk_rule("stability" if len(STABILITY_GROUPS) == 1 else f"stability_g{g}", i, chunk, len(chunks))
        wildcard_constraints:
            model="|".join(re.escape(m) for m in group["models"]),
        input:
            ioi=f"data/tasks/{FAMILY}/ioi.parquet",
            components=expand("results/components/{{model}}/step{step}.parquet", step=chunk),
            circuits=expand("results/circuits/{{model}}/ioi/step{step}.json", step=chunk),
            checkpoints=checkpoints_of(chunk),
        output:
            expand("results/stability/{{model}}/ioi/step{step}.parquet", step=chunk),
        params:
            model=model_options,
            steps=steps_param(chunk),
            tokens_per_step=TOKENS_PER_STEP,
            thresholds=(f"--copy-threshold {config['components']['thresholds']['copy']} "
                        f"--negative-copy-threshold {config['components']['thresholds']['negative_copy']} "
                        f"--candidate-effect {config['components']['candidate_effect']}"),
            patching=(f"--forms {','.join(config['stability']['forms'])} "
                      f"--max-rows {config['stability']['max_rows']}"),
        threads: THREADS
        priority: model_priority
        resources:
            **model_resources("stability", len(chunk)),
        retries: RETRIES
        message:
            "Path patching (IOI algorithm): model {wildcards.model}, steps {params.steps}" + RESOURCES_MESSAGE
        log:
            f"logs/stability/{{model}}/steps{chunk[0]}-{chunk[-1]}.log",
        benchmark:
            f"logs/benchmarks/stability/{{model}}/steps{chunk[0]}-{chunk[-1]}.tsv"
        shell:
            KERNELS + "circuit-stability --log {log} stability {params.model} --steps {params.steps} "
            "--ioi-dataset {input.ioi} --components-dir results/components/{wildcards.model} "
            "--circuits-dir results/circuits/{wildcards.model}/ioi {params.thresholds} {params.patching} "
            "--tokens-per-step {params.tokens_per_step} --out-dir results/stability/{wildcards.model}/ioi"
