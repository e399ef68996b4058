#!/usr/bin/env python3
"""Screenshot of the MLflow UI's run table for a study, taken with headless Chromium (not needed by CI).

Starts ``mlflow server`` on a free loopback port against a copy of the project's database, waits until it
answers, opens the study's run table as the README's link does (the saved view the ``track`` stage stores,
:func:`circuit_stability.tracking.save_view`: checkpoint runs grouped by model, with the useful columns, on the
model-training side of the UI) in headless Chromium, saves a PNG and stops the server:

    python scripts/mlflow_screenshot.py --experiment quick --out docs/mlflow-runs.png

Needs a Chromium binary (Debian: ``apt-get install chromium``); exits with status 2 and a message if none is
found.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from circuit_stability.tracking import VIEW

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def add_browser_options(p: argparse.ArgumentParser, size: str, wait_ms: int) -> None:
    """The options both screenshot scripts take: the browser, the window size and the render time."""
    p.add_argument("--browser", default=None, help="Chromium binary (default: the first of %s on PATH)" % (BROWSERS,))
    p.add_argument("--size", default=size, help="window width,height in pixels (default: %(default)s)")
    p.add_argument("--wait-ms", type=int, default=wait_ms, help="virtual time the page gets to render (ms)")


def find_browser(given: str | None) -> str | None:
    """``given``, else the first Chromium of :data:`BROWSERS` on PATH; None (after saying so) if there is none."""
    browser = given or next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print(f"no Chromium found (tried {', '.join(BROWSERS)}); install one, e.g. `apt-get install chromium`",
              file=sys.stderr)
    return browser


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Block until ``<base>/health`` answers 200; raise if the server exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"mlflow server at {base} did not answer within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve the database, take the screenshot; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="mlflow.db", help="SQLite tracking database (default: ./mlflow.db)")
    p.add_argument("--experiment", required=True, help="experiment (= study) whose runs to show")
    p.add_argument("--out", default="docs/mlflow-runs.png", help="PNG to write")
    add_browser_options(p, size="2400,1100", wait_ms=20000)
    a = p.parse_args(argv)

    browser = find_browser(a.browser)
    if browser is None:
        return 2
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        # Serve a copy, so the project's own database is left untouched while the server runs.
        db = Path(tmp) / "mlflow.db"
        shutil.copyfile(Path(a.db).resolve(), db)
        server = subprocess.Popen(["mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host",
                                   "127.0.0.1", "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd=tmp, start_new_session=True)
        try:
            wait_healthy(base, server)
            query = urllib.parse.urlencode({"experiment_name": a.experiment})
            with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=30) as r:
                experiment = json.loads(r.read())["experiment"]
            tags = {t["key"] for t in experiment.get("tags", [])}
            if f"mlflow.sharedViewState.{VIEW}" not in tags:
                print(f"experiment {a.experiment!r} has no saved view: build the study (its track stage stores it)",
                      file=sys.stderr)
                return 2
            url = f"{base}/#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning&" \
                  f"viewStateShareKey={VIEW}"
            out = Path(a.out).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            "--disable-sync",
                            f"--user-data-dir={tmp}/profile", f"--window-size={a.size}",
                            f"--virtual-time-budget={a.wait_ms}", f"--screenshot={out}", url],
                           check=True, capture_output=True, timeout=300)
            print(f"{out}: run list of experiment {a.experiment!r} ({url})")
            return 0
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
