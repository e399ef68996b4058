# circuit-stability: the study as a DAG (design §3). Rules call the `circuit-stability` CLI.
#   snakemake --cores all                                  # embedded default (config/config.yaml)
#   snakemake --cores all --configfile config/quick.yaml   # minutes-long run used by the tests
from pathlib import Path

from circuit_stability.config import ConfigError, load_config, resolve_extends, validate_config

# The embedded default, unless --configfile names another (Snakemake would otherwise deep-merge the two). Read
# with our loader, so a YAML error names the file, line and column (Snakemake's own names none of them).
DEFAULT_CONFIG = "config/config.yaml"
for _file in workflow.overwrite_configfiles:  # Snakemake read them already, keeping a repeated key's last value
    load_config(_file, resolve=False)  # ConfigError naming the file and line of a repeated key
if not config:
    config.update(load_config(DEFAULT_CONFIG))
elif "extends" in config:  # a study stating only what differs from another (config/seeds.yaml): lay it over that
    origin = next((f for f in reversed(workflow.overwrite_configfiles)
                   if "extends" in load_config(f, resolve=False)), DEFAULT_CONFIG)
    try:
        resolved = resolve_extends(dict(config), Path(origin).parent)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    config.clear()
    config.update(resolved)


# Fail before any job starts: every key, value and step is checked against the schema, whose defaults are
# then filled in, so the rules below read every setting explicitly and repeat no default.
config.update(validate_config(config))


include: "rules/common.smk"
include: "rules/audit.smk"
include: "rules/download.smk"
include: "rules/suite.smk"
include: "rules/datasets.smk"
include: "rules/behavior.smk"
include: "rules/scores.smk"
include: "rules/circuits.smk"
include: "rules/components.smk"
include: "rules/stability.smk"
include: "rules/similarity.smk"
include: "rules/report.smk"
include: "rules/tracking.smk"

# `snakemake --report reports/report.html`: this text heads the report; rules mark figures with report().
report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        # the per-checkpoint results are deliverables: a deleted one is rebuilt (with what depends on it)
        per_model("results/behavior/{model}/{task}/step{step}.json"),
        per_model("results/scores/{model}/{task}/step{step}.parquet", scored=True),
        per_model("results/circuits/{model}/{task}/step{step}.json", scored=True),
        COMPONENT_FILES,
        STABILITY_FILES,
        SIMILARITY_FILES,
        rules.tables.output,
        rules.audit_table.output,  # every model's checkpoint audit (rules/audit.smk)
        rules.figures.output,
        VIEW_FILES,  # the circuit over training, interactive, per model (rules/report.smk)
        rules.report.output,  # reports/report.html
        rules.track.output,  # MLflow: every (model, task, step) logged (rules/tracking.smk)
        EVICT_FILES,  # hub.evict: each checkpoint deleted from HF_HOME once read (rules/download.smk)
