# Hub checkpoints (source: hub): one download per (model, step) into the Hugging Face cache (HF_HOME), limited by
# the `hf_io` resource (`--resources hf_io=2`: two downloads at a time); every model job reads its checkpoints
# offline from there (HF_HUB_OFFLINE=1). A hub that cannot be reached or a missing revision fails that download
# alone, with a message naming model, step and revision (run with --keep-going to let the rest go on).
# With hub.evict, each checkpoint is deleted from the cache once every job that reads it has finished.

EVICT = config["source"] == "hub" and config["hub"]["evict"]
EVICT_FILES = []

if config["source"] == "hub":

    rule download:
        input:
            gate="results/audit/{model}.passed",  # the file-level audit passed it (rules/audit.smk)
        output:
            # the marker (revision, commit, files, bytes): temporary with hub.evict, so that a rebuild of a
            # deleted result downloads the checkpoint again
            temp("data/hub/{model}/step{step}.json") if EVICT else "data/hub/{model}/step{step}.json",
        params:
            name=lambda w: MODEL_NAMES[w.model],
        priority: DATASET_PRIORITY
        retries: RETRIES
        resources:
            hf_io=1,
            mem_mb=1000,
            runtime=lambda w: job_resources("download", SHAPE_OF[w.model], "float32", 1, 1, 1, 0)["runtime"],
        message:
            "Download: {params.name} step {wildcards.step} into HF_HOME [hf_io {resources.hf_io}]"
        log:
            "logs/download/{model}/step{step}.log",
        shell:
            "circuit-stability --log {log} download --model-name {params.name} --step {wildcards.step} --out {output}"

    def readers_of(model, step):
        """Every output of a job that reads checkpoint `step` of `model`: what must exist before it is evicted."""
        files = [f"results/behavior/{model}/{t}/step{step}.json" for t in TASKS]
        files.append(f"results/components/{model}/step{step}.parquet")
        if step in SCORED_OF[model]:
            files += [f"results/{kind}/{model}/{t}/step{step}.{ext}" for t in TASKS
                      for kind, ext in (("scores", "parquet"), ("circuits", "json"))]
        if step in STABILITY_STEPS_OF[model] and model in STABILITY_MODELS:
            files.append(f"results/stability/{model}/ioi/step{step}.parquet")
        return files

    if EVICT:
        EVICT_FILES = [f"data/hub/{m}/step{s}.evicted" for m in MODELS for s in STEPS_OF[m]]

        rule evict:
            input:
                marker="data/hub/{model}/step{step}.json",
                readers=lambda w: readers_of(w.model, int(w.step)),
            output:
                "data/hub/{model}/step{step}.evicted",
            params:
                name=lambda w: MODEL_NAMES[w.model],
            localrule: True
            message:
                "Evict: {params.name} step {wildcards.step} from HF_HOME (every job reading it has finished)"
            log:
                "logs/evict/{model}/step{step}.log",
            shell:
                "circuit-stability --log {log} evict --marker {input.marker} --out {output}"
