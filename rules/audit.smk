# The checkpoint audit (circuit_stability.audit, docs/checkpoint-audit.md): does checkpoint "step N" hold the weights
# of step N? One job per model reads every checkpoint of it before any analysis job does: a suite model at the file
# level (each checkpoint's weight-file SHA-256) and the tensor level (digests; relative L2 distances to the first,
# the final and the neighbouring checkpoints); a hub model at the file level from the hub's metadata (the git-LFS
# SHA-256 of each revision's weight files; no weights downloaded, so a flagged checkpoint is never downloaded); a
# suite model of a seeds study also at the lineage level (its early checkpoints against the other seeds' step 0).
# Its gate then applies the study's policy (suite.integrity / hub.integrity) to the checkpoints planned for analysis;
# every analysis job (and a hub study's downloads) waits for the gate (checkpoints_of, rules/common.smk).

# A suite model's lineage (EleutherAI/pythia #203): its early checkpoints against the step 0 of every trained member
# of its shape from another weight seed (a seeds study's runs; none in the default study, whose members differ in
# shape). Members sharing its weight seed start from its step 0, and a derived member is its source's weights.
LINEAGE_OF = {m: [o for o in TRAINED if o != m and SHAPE_PARAMS[o] == SHAPE_PARAMS[m]
                  and SEEDS[o].weight != SEEDS[m].weight] if m in TRAINED else []
              for m in MODELS} if config["source"] == "suite" else {m: [] for m in MODELS}


rule audit:
    input:
        checkpoints=lambda w: expand("models/{model}/step{step}/model.safetensors", model=w.model,
                                     step=AUDITED_OF[w.model]) if config["source"] == "suite" else [],
        lineage=lambda w: [f"models/{o}/step0/model.safetensors" for o in LINEAGE_OF[w.model]],
    output:
        "results/audit/{model}.parquet",
    params:
        name=lambda w: MODEL_NAMES[w.model],
        steps=lambda w: ",".join(map(str, AUDITED_OF[w.model])),
        tensors="--tensors" if config["source"] == "suite" else "",
        lineage=lambda w: f"--lineage-with {','.join(LINEAGE_OF[w.model])}" if LINEAGE_OF[w.model] else "",
    threads: THREADS
    priority: DATASET_PRIORITY
    resources:
        **({"hf_io": 1} if config["source"] != "suite" else {}),
    message:
        "Checkpoint audit: {params.name}, " + ("file and tensor level" if config["source"] == "suite" else
                                               "file level (hub metadata, no weights downloaded)")
    log:
        "logs/audit/{model}.log",
    shell:
        "circuit-stability --log {log} audit {params.name} --suite-dir models --steps {params.steps} "
        "{params.tensors} {params.lineage} --out {output}"


rule audit_gate:
    input:
        "results/audit/{model}.parquet",
    output:
        "results/audit/{model}.passed",
    params:
        planned=lambda w: STEPS_OF[w.model],  # a change (a skipped checkpoint) reruns the gate
        policy=INTEGRITY,
    localrule: True
    priority: DATASET_PRIORITY
    message:
        "Checkpoint audit gate: {wildcards.model}, " + INTEGRITY_KEY + " " + INTEGRITY
    run:
        kept = integrity_gate(wildcards.model, flagged_steps(input[0]), params.planned, params.policy, INTEGRITY_KEY,
                              record=f"results/audit/{wildcards.model}.skipped.json")
        Path(output[0]).write_text(
            f"{wildcards.model}: {len(params.planned)} checkpoints planned for analysis passed the audit"
            + (f"; flagged and kept ({INTEGRITY_KEY}: keep): steps {kept}" if kept else "") + "\n")


# The study's audit table (every model's rows, with what the policy did to each flagged checkpoint: `action`) and
# its page in the report.
rule audit_table:
    input:
        tables=[f"results/audit/{m}.parquet" for m in MODELS],
        gates=[f"results/audit/{m}.passed" for m in MODELS],
    output:
        table=f"{TABLES}/checkpoint_audit.parquet",
        page=report(f"{FIGURES}/checkpoint_audit.html", caption="../report/checkpoint_audit.rst",
                    category="Checkpoint audit",
                    labels={"figure": "checkpoint audit (table)",
                            "shows": "checkpoints audited and flagged per model; what the integrity policy did"}),
    params:
        planned={m: STEPS_OF[m] for m in MODELS},
    localrule: True
    message:
        f"Tables: the checkpoint audit of every model ({TABLES}/checkpoint_audit.parquet, {FIGURES}/checkpoint_audit.html)"
    run:
        import pandas as pd
        from circuit_stability.artifacts import atomic_path, write_parquet
        from circuit_stability.audit import audit_page, study_audit_table

        table = study_audit_table([pd.read_parquet(f) for f in input.tables], params.planned, INTEGRITY)
        write_parquet(table, output.table)
        with atomic_path(output.page) as tmp:
            Path(tmp).write_text(audit_page(table, INTEGRITY_KEY))
