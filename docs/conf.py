"""Sphinx configuration of the documentation site (`sphinx-build -W -b html docs site`; tests/test_docs.py builds it
with warnings as errors). Sphinx with MyST: the pages are the Markdown files under docs/ as they are (GitHub renders
them too); the configuration and command-line references are generated at each build from the config schema and
the parser (circuit_stability.docs), into docs/reference/ (git-ignored), so neither is kept by hand."""

from pathlib import Path

import yaml

from circuit_stability.cli import build_parser
from circuit_stability.docs import SCHEMA, cli_reference, config_reference

project = "circuit-stability"
author = "circuit-stability contributors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve (and a missing anchor warns)
html_theme = "furo"
html_title = "circuit-stability"
html_static_path: list[str] = []
suppress_warnings: list[str] = []


def _write_references(app) -> None:
    """Write reference/config.md and reference/cli.md before Sphinx reads the sources (a key or option without a
    description raises circuit_stability.docs.UndocumentedError, naming it: the build fails)."""
    out = Path(app.srcdir) / "reference"
    out.mkdir(exist_ok=True)
    pages = {"config.md": config_reference(yaml.safe_load(SCHEMA.read_text())),
             "cli.md": cli_reference(build_parser())}
    for name, text in pages.items():
        path = out / name
        if not path.is_file() or path.read_text() != text:  # unchanged: Sphinx keeps its cached build of the page
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", _write_references)
