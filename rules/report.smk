# Tables (long-format parquet over the whole study) and the figures drawn from them.

rule tables:
    input:
        behavior=expand("results/behavior/{model}/{task}/step{step}.json", model=MODELS, task=TASKS, step=STEPS),
        circuits=expand("results/circuits/{model}/{task}/step{step}.json", model=MODELS, task=TASKS, step=SCORED),
    output:
        behavior="results/tables/behavior.parquet",
        circuits="results/tables/circuits.parquet",
    log:
        "logs/tables.log",
    shell:
        "circuit-stability tables --behavior {input.behavior} --circuits {input.circuits} "
        "--out results/tables 2> {log}"


# Figures are marked for `snakemake --report reports/report.html`: caption (what it shows, from which tables)
# and category (the paper figure it reproduces).
rule figures:
    input:
        rules.tables.output,
    output:
        [report(f"reports/figures/behavior_{task}.png", caption="../report/behavior.rst",
                category="Figure 1: behaviour over training", labels={"figure": "task behaviour", "task": task})
         for task in TASKS],
        report("reports/figures/circuit_size.png", caption="../report/circuit_size.rst",
               category="Figure 5: circuit size over training",
               labels={"figure": "minimal-circuit size", "task": ", ".join(TASKS)}),
    params:
        models=",".join(MODELS),
        dpi=config.get("plots", {}).get("dpi", 120),
    log:
        "logs/figures.log",
    shell:
        "circuit-stability plot --tables results/tables --out reports/figures --models {params.models} "
        "--dpi {params.dpi} 2> {log}"
