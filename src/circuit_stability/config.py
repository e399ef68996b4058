"""Validate a study config against ``config/schema.yaml`` with messages a researcher can act on.

The Snakefile calls :func:`validate_config` when it loads the config, so a bad config fails before any job
starts. Each error names the offending key (as a dotted path) and what would be valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """The study config does not match the schema."""


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.context:  # oneOf/anyOf: report the most specific failure among the alternatives
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
    if v == "oneOf" and where.endswith("steps"):
        return f"{where}: {error.instance!r} is neither 'all' nor a non-empty list of steps >= 0"
    if v == "const":
        return f"{where}: {error.instance!r} is not allowed; allowed value: {error.validator_value!r}"
    return f"{where}: {error.message}"


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate ``config``; return it unchanged.

    Raises:
        ConfigError: listing every violation (key path, bad value, what is allowed).
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        lines = "\n  - ".join(_describe(e) for e in errors)
        raise ConfigError(f"invalid config ({len(errors)} problem(s)):\n  - {lines}")
    if config["source"] == "suite" and "suite" not in config:
        raise ConfigError("<top level>: source 'suite' needs a 'suite' section")
    if config["source"] == "hub" and "hub" not in config:
        raise ConfigError("<top level>: source 'hub' needs a 'hub' section")
    return config


def config_hash(config: dict) -> str:
    """Short SHA-256 of the canonical JSON of ``config`` (identifies a study's settings)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
