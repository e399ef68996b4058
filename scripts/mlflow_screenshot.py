#!/usr/bin/env python3
"""Screenshot of the MLflow UI's run list for a study, taken with headless Chromium (not needed by CI).

Starts ``mlflow server`` on a free loopback port against a copy of the project's database, waits until it
answers, opens the experiment's run list (the per-checkpoint runs grouped by model, with chosen param and
metric columns) in headless Chromium, saves a PNG and stops the server:

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

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


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


def view_state(uri: str, experiment: str, columns: list[str]) -> str:
    """Store a run-list view (per-checkpoint runs grouped by model, with ``columns``) as the experiment tag
    ``mlflow.sharedViewState.<key>``, which the UI reads for ``?viewStateShareKey=<key>``; return the key."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {uri}")
    state = {"selectedColumns": [c.split(".", 1)[0] + ".`" + c.split(".", 1)[1] + "`" for c in columns],
             "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": "model"}]},
             "searchFilter": "tags.`cs.kind` = 'checkpoint'", "orderByKey": "attributes.start_time",
             "orderByAsc": True}
    key = "circuitstabilityscreenshot"
    client.set_experiment_tag(exp.experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
    return key


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve the database, take the screenshot; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="mlflow.db", help="SQLite tracking database (default: ./mlflow.db)")
    p.add_argument("--experiment", required=True, help="experiment (= study) whose runs to show")
    p.add_argument("--out", default="docs/mlflow-runs.png", help="PNG to write")
    p.add_argument("--browser", default=None, help="Chromium binary (default: the first of %s on PATH)" % (BROWSERS,))
    p.add_argument("--columns", default="params.model,params.task,params.step,metrics.task_metric,"
                   "metrics.accuracy,metrics.f_paper,metrics.circuit_size,metrics.seconds",
                   help="run-list columns, comma-separated <params|metrics|tags>.<key>")
    p.add_argument("--size", default="2000,1000", help="window width,height in pixels")
    p.add_argument("--wait-ms", type=int, default=20000, help="virtual time the page gets to render (ms)")
    a = p.parse_args(argv)

    browser = a.browser or next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print(f"no Chromium found (tried {', '.join(BROWSERS)}); install one, e.g. `apt-get install chromium`",
              file=sys.stderr)
        return 2
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        # Serve a copy: the view below (columns, grouping, filter) is stored as an experiment tag, the way
        # the UI's "share view" stores it, and the project's own database is left untouched.
        db = Path(tmp) / "mlflow.db"
        shutil.copyfile(Path(a.db).resolve(), db)
        key = view_state(f"sqlite:///{db}", a.experiment, a.columns.split(","))
        server = subprocess.Popen(["mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host",
                                   "127.0.0.1", "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd=tmp, start_new_session=True)
        try:
            wait_healthy(base, server)
            query = urllib.parse.urlencode({"experiment_name": a.experiment})
            with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=30) as r:
                exp_id = json.loads(r.read())["experiment"]["experiment_id"]
            url = f"{base}/#/experiments/{exp_id}/runs?viewStateShareKey={key}"
            out = Path(a.out).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
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
