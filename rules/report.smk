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
    params:
        emergence=ANALYSIS["emergence_fraction"],
    log:
        "logs/tables.log",
    shell:
        "circuit-stability tables --behavior {input.behavior} --circuits {input.circuits} "
        "--emergence-fraction {params.emergence} --out results/tables 2> {log}"


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
        dpi=config["plots"]["dpi"],
    log:
        "logs/figures.log",
    shell:
        "circuit-stability plot --tables results/tables --out reports/figures --models {params.models} "
        "--dpi {params.dpi} 2> {log}"


# The self-contained HTML report (every figure with its caption), built by the build itself so that
# `snakemake --cores all` makes every file dvc.yaml versions. It runs `snakemake --report` on this workflow after
# the figures exist (without the lock, which this running build holds).
rule report:
    input:
        rules.figures.output,
    output:
        "reports/report.html",
    params:
        configfiles=CONFIGFILES,
    localrule: True
    message:
        "Report: every figure with its caption in one HTML file"
    log:
        "logs/report.log",
    shell:
        "snakemake --report {output} --configfile {params.configfiles} --nolock 2> {log}"
