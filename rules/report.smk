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
        report("reports/figures/figure1_behavior.png", caption="../report/behavior.rst",
               category="Figure 1: behaviour over training", labels={"figure": "task behaviour"}),
        report("reports/figures/circuit_size.png", caption="../report/circuit_size.rst",
               category="Figure 5: circuit size over training", labels={"figure": "minimal-circuit size"}),
        report("reports/figures/emergence.png", caption="../report/emergence.rst",
               category="Figure 1: behaviour over training", labels={"figure": "emergence"}),
        report("reports/figures/faithfulness_curves.png", caption="../report/faithfulness.rst",
               category="Circuit faithfulness", labels={"figure": "faithfulness curves"}),
    params:
        models=",".join(MODELS),
        dpi=config.get("plots", {}).get("dpi", 120),
    log:
        "logs/figures.log",
    shell:
        "circuit-stability plot --tables results/tables --out reports/figures --models {params.models} "
        "--dpi {params.dpi} 2> {log}"
