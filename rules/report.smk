# Tables (long-format parquet over the whole study) and the figures drawn from them, at the study's own paths
# (TABLES, FIGURES, REPORT: rules/common.smk).

rule tables:
    input:
        behavior=lambda w: validated(per_model("results/behavior/{model}/{task}/step{step}.json")),
        circuits=lambda w: validated(per_model("results/circuits/{model}/{task}/step{step}.json", scored=True)),
        components=lambda w: validated(COMPONENT_FILES),
        stability=lambda w: validated(STABILITY_FILES),
        similarity=lambda w: validated(SIMILARITY_FILES),
        audit=rules.audit_table.output,  # written beside the tables first, so `--until tables` includes it
    output:
        behavior=f"{TABLES}/behavior.parquet",
        circuits=f"{TABLES}/circuits.parquet",
        emergence=f"{TABLES}/emergence.parquet",
        faithfulness=f"{TABLES}/faithfulness.parquet",
        components=f"{TABLES}/components.parquet",
        component_emergence=f"{TABLES}/component_emergence.parquet",
        roles=f"{TABLES}/roles.parquet",
        handovers=f"{TABLES}/handovers.parquet",
        component_lag=f"{TABLES}/component_lag.parquet",
        algorithm=f"{TABLES}/algorithm.parquet",
        similarity=f"{TABLES}/similarity.parquet",
        composition=f"{TABLES}/composition.parquet",
        cross_model=f"{TABLES}/cross_model.parquet",
        findings=f"{TABLES}/findings.parquet",
    params:
        tables=TABLES,
        emergence=ANALYSIS["emergence_fraction"],
        learnt=json.dumps(ANALYSIS["learnt"], sort_keys=True, separators=(",", ":")),
        thresholds=json.dumps(config["components"]["thresholds"], sort_keys=True, separators=(",", ":")),
        # the planted controls (derived members), for the findings' control rows; none: the option is left out, so
        # a study without them keeps its command
        derived=(" --derived '" + json.dumps({m: {"source": e["derived_from"], "layer": e["permute_heads"]["layer"],
                 "order": e["permute_heads"]["order"], "from_step": e["from_step"]} for m, e in DERIVED.items()},
                 sort_keys=True, separators=(",", ":")) + "'") if config["source"] == "suite" and DERIVED else "",
    message:
        f"Tables: behaviour, circuits, faithfulness, emergence, components and roles of the whole study ({TABLES}/)"
    log:
        "logs/tables.log",
    shell:
        "circuit-stability --log {log} tables --behavior {input.behavior} --circuits {input.circuits} "
        "--components {input.components} --stability {input.stability} --similarity {input.similarity} "
        "--component-thresholds '{params.thresholds}' "
        "--emergence-fraction {params.emergence} --learnt '{params.learnt}' --out {params.tables}{params.derived}"


rule figures:
    input:
        rules.tables.output,
    output:
        # labels: columns of each category's table, so a figure's one-line meaning stands beside it (the full
        # caption is its "Description"); report/workflow.rst lists the same figures on the landing page
        report(f"{FIGURES}/figure1_behavior.png", caption="../report/behavior.rst",
               category="Figure 1: behaviour over training",
               labels={"figure": "task behaviour", "shows": "each task's metric against tokens seen, per model"}),
        report(f"{FIGURES}/circuit_size.png", caption="../report/circuit_size.rst",
               category="Figure 5: circuit size over training",
               labels={"figure": "minimal-circuit size",
                       "shows": "edges of the minimal circuit against tokens seen; grey x: not valid"}),
        report(f"{FIGURES}/emergence.png", caption="../report/emergence.rst",
               category="Figure 1: behaviour over training",
               labels={"figure": "emergence", "shows": "tokens seen when each task is first learnt at half its final metric"}),
        report(f"{FIGURES}/faithfulness_curves.png", caption="../report/faithfulness.rst",
               category="Circuit faithfulness",
               labels={"figure": "faithfulness curves",
                       "shows": "f_norm against the fraction of edges kept, largest model"}),
        report(f"{FIGURES}/figure2_components.png", caption="../report/components.rst",
               category="Figure 2: components over training",
               labels={"figure": "strongest component heads",
                       "shows": "score of each model's strongest in-circuit head of each type against tokens seen"}),
        report(f"{FIGURES}/figure3_top_heads.png", caption="../report/top_heads.rst",
               category="Figure 3: component heads of the largest model",
               labels={"figure": "top heads", "shows": "the largest model's top 5 heads of each score over training"}),
        report(f"{FIGURES}/component_lag.html", caption="../report/component_lag.rst",
               category="Figure 2: components over training",
               labels={"figure": "component lag (table)",
                       "shows": "components before, with or after their task's onset; hand-overs"}),
        report(f"{FIGURES}/figure4_algorithm.png", caption="../report/algorithm.rst",
               category="Figure 4: the IOI algorithm over training",
               labels={"figure": "IOI algorithm", "shows": "share of each IOI stage's path-patching effect carried "
                       "by its class of heads, against tokens seen; the largest model's circuit by role"}),
        report(f"{FIGURES}/similarity.png", caption="../report/similarity.rst",
               category="Circuit similarity and its noise floor",
               labels={"figure": "circuit similarity", "shows": "Jaccard with the previous and the final checkpoint "
                       "against tokens seen, over the bootstrap noise floor"}),
        report(f"{FIGURES}/findings.html", caption="../report/findings.rst",
               category="Findings",
               labels={"figure": "findings (table)", "shows": "the paper's four findings and the noise-floor one, "
                       "measured on this study"}),
    params:
        tables=TABLES,
        figures=FIGURES,
        models=",".join(MODELS),
        dpi=config["plots"]["dpi"],
        tokens_axis=config["plots"]["tokens_axis"],
    message:
        f"Figures: {FIGURES}/ from the tables"
    log:
        "logs/figures.log",
    shell:
        "circuit-stability --log {log} plot --tables {params.tables} --out {params.figures} --models {params.models} "
        "--dpi {params.dpi} --tokens-axis {params.tokens_axis}"


# The circuit over training, interactive (circuit_stability.views): one self-contained page per model, a view per
# task with a step slider over the scored checkpoints.
VIEW_FILES = [f"{FIGURES}/circuits_{m}.html" for m in MODELS]


rule circuit_view:
    input:
        tables=rules.tables.output,
        circuits=lambda w: per_model_files("results/circuits/{model}/{task}/step{step}.json", w.model),
        scores=lambda w: per_model_files("results/scores/{model}/{task}/step{step}.parquet", w.model),
    output:
        report(f"{FIGURES}/circuits_{{model}}.html", caption="../report/circuit_view.rst",
               category="Circuits over training",
               labels={"figure": "circuit over training ({model}, interactive)",
                       "shows": "each task's minimal circuit at every scored checkpoint, heads coloured by role"}),
    params:
        tasks=",".join(TASKS),
        steps=lambda w: ",".join(map(str, SCORED_OF[w.model])),
        tables=TABLES,
    threads: THREADS
    priority: model_priority
    message:
        "Circuit view: model {wildcards.model}, every task at its scored checkpoints (interactive HTML)"
    log:
        "logs/view/{model}.log",
    shell:
        "circuit-stability --log {log} view --model {wildcards.model} --tasks {params.tasks} --steps {params.steps} "
        "--circuits-dir results/circuits/{wildcards.model} --scores-dir results/scores/{wildcards.model} "
        "--tables {params.tables} --out {output}"


# The self-contained HTML report (every figure with its caption), built by the build itself so that
# `snakemake --cores all` makes every file dvc.yaml versions. It runs `snakemake --report` on this workflow after
# the figures exist (without the lock, which this running build holds).
rule report:
    input:
        rules.figures.output,
        rules.audit_table.output,
        VIEW_FILES,
    output:
        REPORT,
    params:
        configfiles=CONFIGFILES,
    localrule: True
    message:
        "Report: every figure with its caption in one HTML file"
    log:
        "logs/report.log",
    shell:
        "snakemake --report {output} --configfile {params.configfiles} --nolock 2> {log}"
