# MLflow tracking (design §7): one serial job logs every (model, task, step) of the study as one MLflow run,
# after the per-checkpoint jobs, so parallel jobs never write to the SQLite database at once. Idempotent: an
# unchanged checkpoint is not logged again; a re-run one gets a new run and the old one is marked superseded.
# The output is a summary of this machine's MLflow state (run ids), so it is not versioned by DVC: after a
# `dvc pull` the build logs the pulled results into the local database. Delete it (or `--forcerun track`) to
# log again into a new database; MLFLOW_TRACKING_URI overrides the default sqlite:///<project>/mlflow.db.
from circuit_stability.config import config_hash


rule track:
    input:
        behavior=per_model("results/behavior/{model}/{task}/step{step}.json"),
        scores=per_model("results/scores/{model}/{task}/step{step}.parquet", scored=True),
        circuits=per_model("results/circuits/{model}/{task}/step{step}.json", scored=True),
        figures=rules.figures.output,
        audit=rules.audit_table.output.table,
    output:
        f"results/tracking/{config['study']}.json",
    params:
        study=config["study"],
        config_hash=config_hash(config),
        seed=config["seed"],
    localrule: True
    message:
        "MLflow: logging study {params.study} (one run per model, task and step) to the tracking database"
    log:
        "logs/tracking.log",
    shell:
        "circuit-stability --log {log} track --study {params.study} --behavior {input.behavior} --scores {input.scores} "
        "--circuits {input.circuits} --figures {input.figures} --configfile " + CONFIGFILES + " "
        "--config-hash {params.config_hash} --seed {params.seed} --benchmarks logs/benchmarks --audit {input.audit} "
        "--out {output}"
