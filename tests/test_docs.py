"""The documentation site (docs/, Sphinx with MyST) builds with warnings as errors; its configuration and
command-line references are generated from the config schema and the parser, so an undocumented key or a link to a
page that does not exist fails the build."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from circuit_stability import docs
from circuit_stability.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _copy_docs(tmp_path: Path) -> Path:
    """A copy of docs/ (without generated pages) beside a copy of examples/, which a page includes."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("reference", "_build"))


def _build(src: Path, out: Path, capsys) -> tuple[int, str]:
    """Build the site from ``src`` into ``out`` in this process (so a test can change what conf.py imports), with
    warnings as errors; returns the exit status and everything Sphinx printed."""
    from sphinx.cmd.build import build_main

    code = build_main(["-W", "--keep-going", "-q", "-E", "-b", "html", str(src), str(out)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_site_builds_with_warnings_as_errors_and_documents_every_key_and_stage(tmp_path, capsys):
    src = _copy_docs(tmp_path)
    code, text = _build(src, tmp_path / "site", capsys)
    assert code == 0, text[-3000:]
    config = (tmp_path / "site/reference/config.html").read_text()
    rows = docs.config_rows(yaml.safe_load(docs.SCHEMA.read_text()))
    assert len(rows) > 100 and all(f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{r['key']}" in
                                   config.replace("&lt;", "<").replace("&gt;", ">") for r in rows)
    cli = (tmp_path / "site/reference/cli.html").read_text()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert all(f"<span class=\"pre\">{name}</span>" in cli for name in sub.choices)
    for page in ("index", "getting-started", "long-study", "checkpoint-audit", "results", "cluster"):
        assert (tmp_path / f"site/{page}.html").is_file()
    for page in (tmp_path / "site").glob("*.html"):  # readable offline: nothing loaded from the web
        assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=[\"']https?://", page.read_text()), page.name


def test_a_key_without_description_or_a_link_to_a_missing_page_fails_the_build(tmp_path, capsys, monkeypatch):
    schema = yaml.safe_load(docs.SCHEMA.read_text())
    del schema["properties"]["suite"]["properties"]["integrity"]["description"]
    with pytest.raises(docs.UndocumentedError, match=r"1 key\(s\) of the config schema have no description: "
                                                     r"suite.integrity"):
        docs.config_reference(schema)
    broken = tmp_path / "schema.yaml"
    broken.write_text(yaml.safe_dump(schema))
    src = _copy_docs(tmp_path)
    monkeypatch.setattr(docs, "SCHEMA", broken)
    code, text = _build(src, tmp_path / "site", capsys)
    assert code != 0 and "suite.integrity" in text, text[-3000:]
    monkeypatch.undo()
    code, text = _build(src, tmp_path / "site", capsys)
    assert code == 0, text[-3000:]
    (src / "long-study.md").write_text((src / "long-study.md").read_text() + "\nSee [the results](no-such-page.md).\n")
    code, text = _build(src, tmp_path / "site", capsys)
    assert code != 0 and "no-such-page" in text, text[-3000:]
