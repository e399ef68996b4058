"""Reference pages of the documentation site, generated from their one source (mkdocs.yml's hook,
scripts/docs_hooks.py): the configuration reference from the study-config schema (``schema.yaml``: every key, its
type, default and description) and the command-line reference from the ``circuit-stability`` parser (every stage,
its options, defaults and help). Neither page is kept by hand, so neither can drift from what it describes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SCHEMA = Path(__file__).with_name("schema.yaml")


class UndocumentedError(ValueError):
    """A schema key or a command-line option without a description: the generated reference would have a hole."""


def _resolve(node: dict, schema: dict) -> dict:
    """``node`` with a ``$ref`` into ``$defs`` replaced by its target (the target's keys under the node's own)."""
    ref = node.get("$ref")
    if not ref:
        return node
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"unsupported $ref {ref!r}: only #/$defs/<name>")
    return {**schema["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: dict) -> str:
    """A key's type in words: ``integer ≥ 1``, ``one of: skip, error, keep``, ``'all' or list of integer``."""
    if "enum" in node:
        return "one of: " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_type(alt) for alt in node[key])
    kind = node.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if text == "array" and isinstance(node.get("items"), dict):
        text = f"list of {_type(node['items'])}"
    bounds = [f"≥ {node['minimum']}" if "minimum" in node else "", f"> {node['exclusiveMinimum']}"
              if "exclusiveMinimum" in node else "", f"≤ {node['maximum']}" if "maximum" in node else "",
              f"< {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else ""]
    return " ".join([text, *[b for b in bounds if b]])


def _cell(text: str) -> str:
    """Table-cell text: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def config_rows(schema: dict) -> list[dict]:
    """Every key of the study-config schema, depth first: ``{"key", "type", "default", "required", "description"}``
    (``key`` dotted, ``<name>`` for a free-form mapping's keys, e.g. ``suite.models.<name>.n_layers``).

    Raises:
        UndocumentedError: naming every key without a ``description``.
    """
    rows, missing = [], []

    def walk(node: dict, prefix: str) -> None:
        required = set(node.get("required", []))
        for name, child in node.get("properties", {}).items():
            child = _resolve(child, schema)
            key = f"{prefix}{name}"
            if not str(child.get("description", "")).strip():
                missing.append(key)
            rows.append({"key": key, "type": _type(child), "required": name in required,
                         "default": json.dumps(child["default"]) if "default" in child else "",
                         "description": child.get("description", "")})
            walk(child, f"{key}.")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(_resolve(extra, schema), f"{prefix}<name>.")

    walk(schema, "")
    if missing:
        raise UndocumentedError(f"{len(missing)} key(s) of the config schema have no description: "
                                f"{', '.join(missing)} (add `description:` in src/circuit_stability/schema.yaml)")
    return rows


def config_reference(schema: dict) -> str:
    """The configuration reference page (Markdown): one table per top-level key of the study config.

    Raises:
        UndocumentedError: a key without a description (:func:`config_rows`).
    """
    rows = config_rows(schema)
    sections = {r["key"].split(".")[0] for r in rows if "." in r["key"]}
    # top-level settings without sub-keys first, in one table; then one table per section (suite, hub, tasks, ...)
    rows = ([r for r in rows if r["key"] not in sections and "." not in r["key"]]
            + [r for r in rows if r["key"] in sections or "." in r["key"]])
    out = ["# Configuration reference", "",
           "Every key of a study config (`config/*.yaml`), generated from `src/circuit_stability/schema.yaml`, the one "
           "home of every default: the Snakefile validates a config against it before any job starts and fills in "
           "the defaults. A study config may state only what differs from another with `extends: <file>` "
           "(`config/seeds.yaml`, `config/long.yaml`). **required** keys have no default.", ""]
    top = None
    for row in rows:
        head = row["key"].split(".")[0]
        head = head if head in sections else "Study-wide settings"
        if head != top:
            top = head
            out += ["", f"## `{head}`" if head in sections else f"## {head}", "",
                    "| key | type | default | description |", "|---|---|---|---|"]
        default = "**required**" if row["required"] and not row["default"] else (f"`{row['default']}`"
                                                                                 if row["default"] else "")
        out.append(f"| `{row['key']}` | {_cell(row['type'])} | {_cell(default)} | {_cell(row['description'])} |")
    return "\n".join(out) + "\n"


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """The command-line reference page (Markdown): each ``circuit-stability`` stage with its description and a
    table of its options (flags, default, help).

    Raises:
        UndocumentedError: naming every option without help text.
    """
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    out = ["# Command-line reference", "",
           "`circuit-stability <stage> [options]`, generated from the parser (`src/circuit_stability/cli.py`). The "
           "workflow's rules call these stages; each can be run by hand. Global options: "
           + ", ".join(f"`{'`, `'.join(a.option_strings)}` ({_cell(a.help)})" for a in parser._actions
                       if a.option_strings and a.dest != "help") + ".", ""]
    missing = []
    for name, p in sub.choices.items():
        out += [f"## `{name}`", "", _cell(helps.get(name) or ""), ""]
        if p.description and p.description != helps.get(name):
            out += [" ".join(p.description.split()), ""]
        out += ["| option | default | help |", "|---|---|---|"]
        for a in p._actions:
            if a.dest == "help":
                continue
            flags = ", ".join(f"`{f}`" for f in a.option_strings) or f"`{a.dest}` (positional)"
            if not (a.help or "").strip():
                missing.append(f"{name} {flags}")
            default = "" if a.default in (None, argparse.SUPPRESS, False) or a.required else f"`{a.default}`"
            help_text = (a.help or "").replace("%(default)s", str(a.default))
            out.append(f"| {flags} | {_cell(default)} | {_cell(help_text)} |")
        out.append("")
    if missing:
        raise UndocumentedError(f"{len(missing)} command-line option(s) have no help: {'; '.join(missing)}")
    return "\n".join(out)
