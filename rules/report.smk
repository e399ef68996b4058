# Tables (long-format parquet over the whole study) and the figures drawn from them.

rule tables:
    input:
        behavior=expand("results/behavior/{model}/{task}/step{step}.json", model=MODELS, task=TASKS, step=STEPS),
        circuits=expand("results/circuits/{model}/{task}/step{step}.json", model=MODELS, task=TASKS, step=SCORED),
    output:
        behavior="results/tables/behavior.parquet",
        circuits="results/tables/circuits.parquet",
        emergence="results/tables/emergence.parquet",
        faithfulness="results/tables/faithfulness.parquet",
    log:
        "logs/tables.log",
    shell:
        "circuit-stability tables --behavior {input.behavior} --circuits {input.circuits} "
        "--out results/tables 2> {log}"


rule figures:
    input:
        rules.tables.output,
    output:
        "reports/figures/figure1_behavior.png",
        "reports/figures/circuit_size.png",
        "reports/figures/emergence.png",
        "reports/figures/faithfulness_curves.png",
    params:
        models=",".join(MODELS),
    log:
        "logs/figures.log",
    shell:
        "circuit-stability plot --tables results/tables --out reports/figures --models {params.models} 2> {log}"
