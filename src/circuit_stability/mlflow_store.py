"""MLflow plumbing (design §7): where the tracking database is, one writer at a time, retries while SQLite
reports itself locked, and the few client calls the tracking stage needs. What is logged is decided in
:mod:`circuit_stability.tracking`.

SQLite loses runs under parallel writers ("database is locked"): writers on one SQLite database are serialised
with a file lock beside it (:func:`tracking_lock`), and every client call is retried with back-off while the
database reports itself locked (:class:`RetryingClient`), so concurrent ``track`` processes (two studies built at
once) neither lose nor duplicate runs.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

KIND = "cs.kind"  # "checkpoint" (one (model, task, step)) or "pipeline" (one invocation of the track rule)
CHECKPOINT, PIPELINE = "checkpoint", "pipeline"
PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under this parent


def default_tracking_uri(project_dir: str | Path = ".") -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute project dir>/mlflow.db`` (design §7)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs/x.db`` is absolute), else ``None``."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def tracking_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` for a SQLite URI (no-op for a tracking server)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _locked_error(exc: BaseException) -> bool:
    while exc is not None:
        if "database is locked" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class RetryingClient:
    """Proxy of an ``MlflowClient`` whose calls are retried (with back-off) while SQLite says it is locked."""

    def __init__(self, client, attempts: int = 10):
        self._client, self._attempts = client, attempts

    def __getattr__(self, name):
        fn = getattr(self._client, name)

        def call(*args, **kwargs):
            for attempt in range(self._attempts):
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 (MlflowException wraps sqlalchemy's OperationalError)
                    if not _locked_error(e) or attempt == self._attempts - 1:
                        raise
                    time.sleep(min(5.0, 0.2 * 2 ** attempt))
        return call


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (or restored from MLflow's trash) if needed."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # created meanwhile by another writer (tracking server): use that one
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def active_checkpoint_runs(client, experiment_id: str, study: str) -> dict[str, list]:
    """Active checkpoint runs of a study by ``model/task/step``, newest first."""
    from mlflow.entities import ViewType

    runs: dict[str, list] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{KIND}` = '{CHECKPOINT}' AND tags.`cs.study` = '{study}'",
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        for r in page:
            t = r.data.tags
            runs.setdefault(f"{t['cs.model']}/{t['cs.task']}/{t['cs.step']}", []).append(r)
        token = page.token
        if not token:
            return runs


def log_batch(client, run_id: str, params: dict | None = None, metrics: dict | None = None, step: int = 0,
              tags: dict | None = None, series: list[tuple[str, float, int]] | None = None) -> None:
    """Params, tags and metrics (``metrics`` at ``step``; ``series`` as (key, value, step)) in batches."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    ms = [Metric(k, v, now, step) for k, v in (metrics or {}).items()]
    ms += [Metric(k, v, now, s) for k, v, s in (series or [])]
    ps = [Param(k, str(v)) for k, v in (params or {}).items()]
    ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    while ms or ps or ts:  # MLflow caps one batch at 100 params, 100 tags and 1000 entries in all
        p, ps = ps[:100], ps[100:]
        t, ts = ts[:100], ts[100:]
        n = 1000 - len(p) - len(t)
        m, ms = ms[:n], ms[n:]
        client.log_batch(run_id, metrics=m, params=p, tags=t)
