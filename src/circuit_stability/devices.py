"""GPU slots: each running model job on one machine gets a GPU of its own.

Snakemake's ``--resources gpu=N`` only counts: it starts at most N jobs that declare ``gpu=1`` but tells none of
them which device to use. Each model command therefore claims a slot before torch starts CUDA: an exclusive
``flock`` on ``<lock dir>/gpu<id>.lock`` for the first free device, then ``CUDA_VISIBLE_DEVICES=<id>``. The lock
belongs to the process's open file: the kernel releases it when the process ends in any way (exit, crash,
``kill -9``), so a killed job never holds a device, and there are no stale lock files to clean up.

Devices: ``CIRCUIT_STABILITY_GPUS`` (comma-separated ids) if set, else ``CUDA_VISIBLE_DEVICES`` if set, else the
GPUs ``nvidia-smi -L`` lists; none (a CPU-only machine) means no slot and the job runs on the CPU. Under SLURM
(``SLURM_JOB_ID`` set) the scheduler has already chosen the job's devices, and nothing is claimed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "circuit-stability-gpu-slots"
_held: list[int] = []  # the claimed slot's open file descriptor, kept for the life of the process


@dataclass(frozen=True)
class Slot:
    """A claimed GPU: its id (as CUDA_VISIBLE_DEVICES names it) and how long the claim waited, in seconds."""

    device: str
    waited: float


def visible_gpus() -> list[str]:
    """The ids of this machine's GPUs a job may claim (module docstring); ``[]`` on a CPU-only machine."""
    for var in ("CIRCUIT_STABILITY_GPUS", "CUDA_VISIBLE_DEVICES"):
        if os.environ.get(var) is not None:
            return [d.strip() for d in os.environ[var].split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def claim_gpu(lock_dir: str | Path | None = None, poll: float = 0.5, say=None) -> Slot | None:
    """Claim a free GPU for this process and set ``CUDA_VISIBLE_DEVICES`` to it; wait while every GPU is taken.

    Must run before torch initialises CUDA (the model commands import torch after it).

    Args:
        lock_dir: folder of the lock files (default ``CIRCUIT_STABILITY_GPU_LOCKS`` or
            ``<tmp>/circuit-stability-gpu-slots``); one per machine, shared by every study on it.
        poll: seconds between tries while every slot is taken.
        say: called once with a line when the claim has to wait.

    Returns:
        The :class:`Slot`, or None under SLURM, on a CPU-only machine, or when this process holds a slot already.
    """
    if os.environ.get("SLURM_JOB_ID") or _held:
        return None
    devices = visible_gpus()
    if not devices:
        return None
    folder = Path(lock_dir or os.environ.get("CIRCUIT_STABILITY_GPU_LOCKS") or DEFAULT_LOCK_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    t0, told = time.monotonic(), False
    while True:
        for device in devices:
            fd = os.open(folder / f"gpu{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held.append(fd)
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            return Slot(device, time.monotonic() - t0)
        if say is not None and not told:
            say(f"every GPU slot ({', '.join(devices)}) is taken; waiting for one to be released")
            told = True
        time.sleep(poll)


def release_gpu() -> None:
    """Release this process's slot before it ends (the kernel releases it at exit anyway)."""
    while _held:
        os.close(_held.pop())
