"""The study config: validation against the schema, and the schema as the one home of every default.

The Snakefile calls :func:`validate_config` when it loads the config, so a bad config fails before any job
starts; each error names the offending key (as a dotted path) and what would be valid. Validation then fills in
every ``default:`` of the schema (:data:`SCHEMA_PATH`, linked from ``config/schema.yaml``) that the config
leaves out, so rules pass explicit values; the CLI takes its option defaults from the same schema
(:func:`schema_default`), and library functions take these settings as required arguments.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (plain YAML keeps the last one silently, so a
    suite listing a model twice would drop the first's settings)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"key {key!r} is repeated (first at line {first[key] + 1}); give each key once",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path):
    """Parse the YAML file ``path`` with :class:`_UniqueKeyLoader`.

    Raises:
        yaml.YAMLError: on a syntax error or a repeated key (with the line and column).
    """
    return yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)


@lru_cache(maxsize=None)
def _schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The study-config schema (a fresh copy)."""
    return copy.deepcopy(_schema(str(path)))


def _resolve(schema: dict, node: dict) -> dict:
    """``node`` with a local ``$ref`` (``#/$defs/x``) replaced by its target (siblings kept)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def fill_defaults(config: dict, schema: dict) -> dict:
    """A copy of ``config`` with every schema ``default`` filled in where the key is absent, recursively (into
    present objects, objects created from a ``default``, and the values of ``additionalProperties`` maps)."""
    out = copy.deepcopy(config)

    def walk(node: dict, sch: dict) -> None:
        sch = _resolve(schema, sch)
        props = sch.get("properties", {})
        for key, sub in props.items():
            sub = _resolve(schema, sub)
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if isinstance(node.get(key), dict):
                walk(node[key], sub)
        extra = sch.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in node.items():
                if key not in props and isinstance(value, dict):
                    walk(value, extra)

    walk(out, schema)
    return out


def schema_default(path: str, schema_path: str | Path = SCHEMA_PATH):
    """The schema's default of the dotted config key ``path`` (e.g. ``"circuits.threshold"``,
    ``"tasks.ioi.n_examples"``).

    Raises:
        KeyError: naming ``path`` if the schema has no such key or no default for it.
    """
    schema = _schema(str(schema_path))
    node = schema
    for part in path.split("."):
        node = _resolve(schema, node)
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise KeyError(f"the config schema has no key {path!r}")
    node = _resolve(schema, node)
    if "default" not in node:
        raise KeyError(f"the config schema has no default for {path!r}")
    return copy.deepcopy(node["default"])


class ConfigError(ValueError):
    """The study config does not match the schema."""


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.context:  # oneOf/anyOf: report the most specific failure among the alternatives
        repeated = [e for e in error.context if e.validator == "uniqueItems"]
        if repeated:  # a list of the right kind, with a repeat: say that, not that no alternative fits
            return _describe(repeated[0])
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) > len(error.absolute_path):
            return _describe(deepest)
    where = _path(error)
    v = error.validator
    if v == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        if not allowed and isinstance(error.schema.get("additionalProperties"), dict):
            return f"{where}: {error.message}"
        return f"{where}: unknown key(s) {extra}; allowed keys: {allowed}"
    if v == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed values: {error.validator_value}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{where}: {error.instance!r} violates {v} {error.validator_value}"
    if v == "required":
        return f"{where}: {error.message}"
    if v == "uniqueItems":
        seen, twice = set(), []
        for x in error.instance:
            if x in seen and x not in twice:
                twice.append(x)
            seen.add(x)
        return f"{where}: {twice} listed more than once; list each once"
    if v == "oneOf" and where.endswith("steps"):
        return f"{where}: {error.instance!r} is neither 'all' nor a non-empty list of steps >= 0"
    if v == "const":
        return f"{where}: {error.instance!r} is not allowed; allowed value: {error.validator_value!r}"
    return f"{where}: {error.message}"


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` and return a copy with every schema default filled in (:func:`fill_defaults`).

    Raises:
        ConfigError: listing every violation (key path, bad value, what is allowed).
    """
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        lines = "\n  - ".join(_describe(e) for e in errors)
        raise ConfigError(f"invalid config ({len(errors)} problem(s)):\n  - {lines}")
    if config["source"] == "suite" and "suite" not in config:
        raise ConfigError("<top level>: source 'suite' needs a 'suite' section")
    if config["source"] == "hub" and "hub" not in config:
        raise ConfigError("<top level>: source 'hub' needs a 'hub' section")
    filled = fill_defaults(config, schema)
    problems = resolve_derived(config, filled) + semantic_problems(filled)
    if problems:
        lines = "\n  - ".join(problems)
        raise ConfigError(f"invalid config ({len(problems)} problem(s)):\n  - {lines}")
    return filled


# A suite member's architecture fields at their defaults (the schema's), which its records leave out
ARCHITECTURE_DEFAULTS = {"architecture": "gpt-neox", "n_kv_heads": None}


def shape_record(member: dict) -> dict:
    """A suite member's shape as its training job is given it and its manifest records it: the config entry
    without its seeds and the architecture fields at their defaults (:data:`ARCHITECTURE_DEFAULTS`),
    so that a GPT-NeoX member's parameters, manifest and training fingerprint are those it had before members could
    have other architectures (no retraining, no false conflict with a member already built)."""
    return {k: v for k, v in member.items() if not k.endswith("_seed") and ARCHITECTURE_DEFAULTS.get(k, ...) != v}


# What a derived suite member takes from its source (circuit_stability.suite.derive)
INHERITED = ("n_layers", "d_model", "n_heads", "d_mlp", "rotary_pct", "architecture", "n_kv_heads", "weight_seed",
             "data_seed")


def resolve_derived(raw: dict, filled: dict) -> list[str]:
    """Give every derived suite member (``derived_from``) its source's shape and seeds, in ``filled`` (in place),
    and return what is wrong with the derived members: a source that is not a trained member of the study, a
    shape or seed of its own, a layer the source lacks, an order that is not a permutation of its heads that
    moves one, or a ``from_step`` that is not a checkpoint step.

    Args:
        raw: the config as written (to tell keys it sets from filled-in defaults); filled: after
            :func:`fill_defaults`.
    """
    from circuit_stability.checkpoints import checkpoint_schedule
    from circuit_stability.suite.derive import check_order
    from circuit_stability.suite.seeds import member_seeds

    if filled["source"] != "suite":
        return []
    models, problems = filled["suite"]["models"], []
    trained = [k for k, v in models.items() if "derived_from" not in v]
    t = filled["suite"]["training"]
    steps = checkpoint_schedule(t["max_steps"], t["checkpoint_every"], t["log_until"])
    for name, m in models.items():
        if "derived_from" not in m:
            continue
        where, source = f"suite.models.{name}", m["derived_from"]
        own = sorted(k for k in INHERITED if k in raw["suite"]["models"][name])
        if own:
            problems.append(f"{where}: a derived member takes its shape and seeds from its source {source!r}; "
                            f"remove {own}")
        if source not in trained:
            problems.append(f"{where}.derived_from: {source!r} is not a trained member of this study; valid: "
                            f"{trained}")
            continue
        src = models[source]
        seeds = member_seeds(source, src, filled["seed"], filled["suite"]["corpus"]["seed"])
        m.update({k: src[k] for k in INHERITED}, weight_seed=seeds.weight, data_seed=seeds.data)
        if src["architecture"] != "gpt-neox":
            problems.append(f"{where}.derived_from: {source!r} is a {src['architecture']} member; a head permutation "
                            "is implemented for GPT-NeoX members only (valid sources: "
                            f"{[k for k in trained if models[k]['architecture'] == 'gpt-neox']})")
            continue
        layer, order = m["permute_heads"]["layer"], m["permute_heads"]["order"]
        if layer >= src["n_layers"]:
            problems.append(f"{where}.permute_heads.layer: {layer} is not a layer of {source} (valid: 0 to "
                            f"{src['n_layers'] - 1})")
        try:
            check_order(order, src["n_heads"])
        except ValueError as e:
            problems.append(f"{where}.{e}")
        if m["from_step"] not in steps:
            problems.append(f"{where}.from_step: {m['from_step']} is not a checkpoint step; valid steps: {steps}")
    return problems


def semantic_problems(config: dict) -> list[str]:
    """What the schema cannot say about a (filled) config: every suite model can be built (d_model divisible by
    n_heads; an even number of rotary dimensions, since rotary embeddings turn pairs of dimensions, or none;
    ``n_kv_heads`` only for Llama and dividing n_heads; seeds that agree with the model's name,
    :mod:`circuit_stability.suite.seeds`); a hub study's models are of one known, analysable family with a known
    shape, and ``steps: all`` only for Pythia; and every analysed step is a checkpoint of the study (Pythia's 154 for
    a Pythia study, the listed steps for another family's)."""
    from circuit_stability.checkpoints import checkpoint_schedule, pythia_schedule
    from circuit_stability.suite.seeds import member_seeds

    problems = []
    if config["source"] == "suite":
        for name, m in config["suite"]["models"].items():
            where = f"suite.models.{name}"
            if "derived_from" in m:  # its source's shape (resolve_derived)
                continue
            if m["d_model"] % m["n_heads"]:
                problems.append(f"{where}: d_model {m['d_model']} is not divisible by n_heads {m['n_heads']}; "
                                f"valid n_heads divide it, e.g. {[h for h in range(1, 17) if m['d_model'] % h == 0]}")
                continue
            head = m["d_model"] // m["n_heads"]
            arch = m["architecture"]
            if m["n_kv_heads"] is not None and (arch != "llama" or m["n_heads"] % m["n_kv_heads"]):
                problems.append(f"{where}.n_kv_heads: {m['n_kv_heads']} key/value heads need architecture llama "
                                f"(got {arch}) and must divide n_heads {m['n_heads']}; valid: "
                                f"{[k for k in range(1, m['n_heads'] + 1) if m['n_heads'] % k == 0]}")
            if arch == "llama" and head % 2:
                problems.append(f"{where}: a Llama member rotates every dimension of its {head}-dimensional heads; "
                                "rotary embeddings turn pairs, so d_model / n_heads must be even")
            rotary = int(head * m["rotary_pct"]) if arch == "gpt-neox" else 0
            if rotary % 2:
                problems.append(f"{where}: rotary_pct {m['rotary_pct']} of a {head}-dimensional head rotates {rotary} "
                                "dimensions; rotary embeddings turn pairs, so the count must be even (e.g. rotary_pct "
                                f"{(rotary - 1) / head:g} or {(rotary + 1) / head:g})")
            try:
                member_seeds(name, m, config["seed"], config["suite"]["corpus"]["seed"])
            except ValueError as e:
                problems.append(str(e))
        t = config["suite"]["training"]
        if t["decay_steps"] is not None and t["decay_steps"] > t["max_steps"] - t["warmup_steps"]:
            problems.append(f"suite.training.decay_steps: {t['decay_steps']} is more than the "
                            f"{t['max_steps'] - t['warmup_steps']} steps after warm-up (max_steps {t['max_steps']} - "
                            f"warmup_steps {t['warmup_steps']}); valid: 1 to that, or null for a cosine over all of "
                            "them")
        steps = checkpoint_schedule(t["max_steps"], t["checkpoint_every"], t["log_until"])
    else:
        from circuit_stability.models import hub_family
        from circuit_stability.scale import hub_shape

        families = {}
        for i, name in enumerate(config["hub"]["models"]):
            try:
                families[name] = hub_family(name)
                hub_shape(name)  # the scheduler's resources need the model's size
            except (ValueError, NotImplementedError) as e:
                problems.append(f"hub.models.{i}: {e}")
        kinds = sorted(set(families.values()))
        if len(kinds) > 1:  # one tokenizer per study: its task datasets are tokenised once (rules/datasets.smk)
            problems.append(f"hub.models: a study's hub models come from one family (they share its tokenizer and "
                            f"its datasets); these come from {kinds}: {families}; write a study per family")
        hub = config["hub"]["steps"]
        if kinds in ([], ["pythia"]):
            steps = pythia_schedule()
            bad = [] if hub == "all" else sorted(set(hub) - set(steps))
            if bad:
                problems.append(f"hub.steps: {bad} are not Pythia checkpoints; valid: 0, 1, 2, 4, ..., 512, then "
                                "every 1000 to 143000")
            steps = steps if hub == "all" else sorted(set(hub) & set(steps))
        elif hub == "all":
            problems.append(f"hub.steps: 'all' names Pythia's 154 checkpoints; a {'/'.join(kinds)} "
                            "repository's are known only from the hub: list them (`circuit-stability checkpoints "
                            f"{config['hub']['models'][0]} --steps`, or --every k / --log n for a subset)")
            steps = []
        else:  # checked against the repository's revisions when each is downloaded
            steps = sorted(hub)
        from circuit_stability.models import hub_steps

        for name in config["hub"]["models"]:
            if steps and not hub_steps(name, steps, warn=lambda message: None):
                problems.append(f"hub.steps: every listed checkpoint of {name} is missing upstream ({steps}); list "
                                "other steps")
    analysed = config["analysis"]["steps"]
    bad = [] if analysed == "all" else sorted(set(analysed) - set(steps))
    if bad:
        problems.append(f"analysis.steps: {bad} are not checkpoints of this study; valid steps: {steps}")
    if config["similarity"]["resamples"] and config["analysis"]["method"] == "exact":
        problems.append(f"similarity.resamples: {config['similarity']['resamples']} bootstrap resamples need "
                        "per-example scores, which analysis.method 'exact' does not give; use EAP or EAP-IG, or set "
                        "similarity.resamples: 0")
    if config["similarity"]["resamples"] == 1:
        problems.append("similarity.resamples: 1 resample gives no interval; use 0 (no noise floor) or >= 2 (50 for "
                        "a 95% interval)")
    return problems


# Named collections an overlay replaces as a whole (a study lists *its* models and tasks); every other mapping
# is merged key by key, and scalars and lists replace.
REPLACED_BY_OVERLAY = (("suite", "models"), ("tasks",))


def merge_overlay(base: dict, overlay: dict, _at: tuple = ()) -> dict:
    """``base`` with ``overlay`` laid over it (both left unchanged): mappings merge key by key, except the named
    collections of :data:`REPLACED_BY_OVERLAY` (``suite.models``, ``tasks``), which the overlay replaces whole, as
    it replaces scalars and lists."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        at = (*_at, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and at not in REPLACED_BY_OVERLAY:
            out[key] = merge_overlay(out[key], value, at)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_extends(config: dict, origin: str | Path, _chain: tuple = ()) -> dict:
    """A config with its ``extends:`` resolved: the named base config (a path relative to ``origin``, the folder
    of the file that says ``extends``; itself possibly extending another) with the rest of ``config`` laid over
    it by :func:`merge_overlay`. A config without ``extends`` is returned as it is.

    So a study states only what differs from the one it extends (``config/seeds.yaml``: the study name and the
    models), and cannot drift from the corpus and settings it shares with it.

    Raises:
        ConfigError: if ``extends`` is not a path, names a file that cannot be read or parsed, or the chain of
            ``extends`` returns to a file already in it.
    """
    if "extends" not in config:
        return config
    target = config["extends"]
    if not isinstance(target, str) or not target:
        raise ConfigError(f"extends: expected the path of the study config this one extends (e.g. config.yaml, "
                          f"relative to this file's folder); got {target!r}")
    path = (Path(origin) / target).resolve()
    if path in _chain:
        raise ConfigError(f"extends: {target} extends itself (chain: {' -> '.join(map(str, [*_chain, path]))})")
    base = resolve_extends(load_config(path, resolve=False), path.parent, (*_chain, path))
    return merge_overlay(base, {k: v for k, v in config.items() if k != "extends"})


def load_config(path: str | Path, resolve: bool = True) -> dict:
    """Read a study config file (YAML or JSON) and, unless ``resolve`` is False, resolve its ``extends:``
    (:func:`resolve_extends`).

    Raises:
        ConfigError: naming the file, the line and column and the parser's message, if it is not valid YAML or
            repeats a key within one mapping, or if it does not hold a mapping; or as :func:`resolve_extends`.
    """
    try:
        config = read_yaml(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a study config is a mapping of keys to values; this file holds "
                          f"{type(config).__name__}")
    if not resolve:
        return config
    try:
        return resolve_extends(config, Path(path).parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_hash(config: dict) -> str:
    """Short SHA-256 of the canonical JSON of ``config`` (identifies a study's settings)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def study_outputs(study: str, default_study: str | None) -> dict[str, str]:
    """Where a study's study-wide outputs go: ``tables`` (folder of the long-format parquet tables), ``figures``
    (folder) and ``report`` (the HTML report). The default study (``default_study``: the one
    ``config/config.yaml`` names, which ``dvc.yaml`` versions; None when there is none) writes ``results/tables``,
    ``reports/figures`` and ``reports/report.html``; any other study writes the same names under
    ``results/studies/<study>/`` and ``reports/studies/<study>/``, so building one study never overwrites
    another's tables, figures or report. Per-model outputs (``models/<model>``, ``results/<stage>/<model>/``)
    are named by model and shared by every study listing that model.
    """
    if study == default_study:
        return {"tables": "results/tables", "figures": "reports/figures", "report": "reports/report.html"}
    return {"tables": f"results/studies/{study}/tables", "figures": f"reports/studies/{study}/figures",
            "report": f"reports/studies/{study}/report.html"}


def trained_elsewhere(root: str | Path, corpora: dict[str, dict], members: dict[str, dict]) -> list[str]:
    """What this study would retrain or regenerate over another's work: each corpus folder or trained member
    folder under ``root`` whose manifest records other settings than this study asks for (a study sharing a
    name with another study's member or corpus, or this study's settings edited after it was built). Snakemake
    would rerun such a job and overwrite the folder; the caller refuses instead, before any job starts.

    Args:
        root: the project folder (holding ``data/corpus/`` and ``models/``).
        corpora: corpus name -> what its ``corpus.json`` must record: ``seed``, ``weights`` and ``shape``
            (``[max_steps, batch_size, context]``).
        members: trained member name -> what its ``suite.json`` must record: the shape's keys (``n_layers``,
            ``d_model``, ...) and ``training`` (the training settings with the weight seed as ``seed``).

    Returns:
        One line per conflicting folder, naming it, each differing setting (recorded -> asked), and the two
        ways out; empty if there is none. A folder without a readable manifest is not a conflict (Snakemake
        rebuilds an incomplete one anyway).
    """
    root = Path(root)
    problems = []

    def flat(d: dict, at: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{at}{k}.") if isinstance(v, dict) and k != "weights" else {f"{at}{k}": v})
        return out

    def differences(recorded: dict, asked: dict) -> list[str]:
        have, want = flat(json.loads(json.dumps(recorded))), flat(json.loads(json.dumps(asked)))
        return [f"{k}: {have.get(k)!r} -> {v!r}" for k, v in sorted(want.items()) if have.get(k) != v]

    for kind, folder, manifest, wanted in (
            *(("corpus", f"data/corpus/{name}", "corpus.json", asked) for name, asked in corpora.items()),
            *(("model", f"models/{name}", "suite.json", asked) for name, asked in members.items())):
        try:
            recorded = json.loads((root / folder / manifest).read_text())
        except (OSError, ValueError):
            continue
        diff = differences(recorded, wanted)
        if diff:
            problems.append(f"{folder} holds a {kind} built with other settings ({'; '.join(diff)}): another "
                            f"study's, or this study's before its config changed. Building would overwrite it: give "
                            f"this study's {kind} another name, or delete {folder} to rebuild it")
    return problems
