"""Atomic, deterministic writers for every artefact the pipeline produces (design §3: writes are atomic).

Each writer writes to a temporary name in the destination folder, then renames it over the target, so a
killed job never leaves a partial file that looks complete, and a failed job never clobbers a good one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success rename it to ``path``, on error delete it.

    The file gets the permissions of the user's umask (0644 under the usual 022), not ``mkstemp``'s 0600, so the
    members of a shared project folder can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (a folder) as a whole, with the
    permissions of the user's umask (0755 under 022), not ``mkdtemp``'s 0700, and so does every file and folder
    written into it: files 0644 under 022 (safetensors writes ``model.safetensors`` 0600, unreadable by the other
    users of a shared cluster folder), executable bits kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        mask = _umask()
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                f = os.path.join(root, f)
                if not os.path.islink(f):
                    os.chmod(f, (0o777 if os.stat(f).st_mode & 0o111 else 0o666) & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(obj, path: str | Path) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str | Path):
    """Read a JSON artefact."""
    return json.loads(Path(path).read_text())


def write_parquet(df: pd.DataFrame | pa.Table, path: str | Path, metadata: dict | None = None) -> None:
    """Write a table as parquet, atomically, with ``metadata`` (JSON-encoded values) in the file metadata.

    Files are written without pandas' index and with a fixed writer setup, so identical tables give
    identical bytes.
    """
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    for key, value in (metadata or {}).items():
        meta[key.encode()] = json.dumps(value, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def parquet_metadata(path: str | Path) -> dict:
    """The JSON-decoded file metadata written by :func:`write_parquet`."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k.decode()] = json.loads(v)
        except ValueError:
            out[k.decode()] = v.decode()
    return out
