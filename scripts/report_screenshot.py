#!/usr/bin/env python3
"""Screenshots of the Snakemake report, taken with headless Chromium (for the README; not needed by CI).

Two PNGs: the landing page as a reader first sees it (the study, the list of figures with their meaning, the
rule graph), and one figure opened from that list, its description (the caption) in the left panel beside it. The
second view is reached by a copy of the report that calls the report's own ``app.showResultInfo`` and
``app.setView`` when it loads, the calls its links and buttons make:

    python scripts/report_screenshot.py --report reports/report.html --out docs/report-landing.png \\
        --figure reports/figures/figure1_behavior.png --figure-out docs/report-figure.png

Needs a Chromium binary (Debian: ``apt-get install chromium``); exits with status 2 and a message if none is
found.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow_screenshot import add_browser_options, find_browser  # this folder: scripts/
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(browser: str, page: Path, out: Path, size: str, wait_ms: int, profile: Path) -> None:
    """Render ``page`` in headless Chromium and save a PNG of the window."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and take the screenshots; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", default="reports/report.html", help="the report (default: %(default)s)")
    p.add_argument("--out", default="docs/report-landing.png", help="landing-page PNG (default: %(default)s)")
    p.add_argument("--figure", default="reports/figures/figure1_behavior.png", help="figure to open")
    p.add_argument("--figure-out", default="docs/report-figure.png", help="figure-view PNG (default: %(default)s)")
    add_browser_options(p, size="1600,1000", wait_ms=8000)
    a = p.parse_args(argv)
    browser = find_browser(a.browser)
    if browser is None:
        return 2
    report = Path(a.report)
    with tempfile.TemporaryDirectory() as tmp:
        screenshot(browser, report, Path(a.out), a.size, a.wait_ms, Path(tmp) / "profile")
        target = json.dumps(a.figure)
        opener = ("<script>window.addEventListener('load', () => setTimeout(() => { "
                  f"app.showResultInfo({target}); app.setView({{navbarMode: 'resultinfo', resultPath: {target}, "
                  f"content: 'img', contentPath: results[{target}].data_uri}}); }}, 500));</script>")
        html = report.read_text()
        opened = Path(tmp) / "opened.html"
        head, _, tail = html.rpartition("</body>")  # the page's own end (embedded scripts quote the tag too)
        opened.write_text(head + opener + "</body>" + tail)
        screenshot(browser, opened, Path(a.figure_out), a.size, a.wait_ms, Path(tmp) / "profile")
    print(f"{a.out}: landing page; {a.figure_out}: {a.figure} with its description")
    return 0


if __name__ == "__main__":
    sys.exit(main())
