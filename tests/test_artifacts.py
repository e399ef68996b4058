"""Atomic writes: permissions and all-or-nothing replacement."""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from circuit_stability.artifacts import atomic_dir


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_dir_gives_its_files_the_umask_permissions(tmp_path, mask):
    """A folder written through atomic_dir, and each file in it, get the umask's permissions: safetensors writes
    its files 0600, which other users could not read under 022; an executable keeps its x bits."""
    old = os.umask(mask)
    try:
        with atomic_dir(tmp_path / "step8") as tmp:
            save_file({"w": torch.zeros(2)}, tmp / "model.safetensors")
            (tmp / "sub").mkdir(mode=0o700)
            (tmp / "sub" / "run.sh").write_text("#!/bin/sh\n")
            os.chmod(tmp / "sub" / "run.sh", 0o700)
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "step8", *(tmp_path / "step8").rglob("*")]}
    assert mode == {"step8": 0o777 & ~mask, "model.safetensors": 0o666 & ~mask, "sub": 0o777 & ~mask,
                    "run.sh": 0o777 & ~mask}


def test_a_failed_atomic_dir_leaves_the_old_folder(tmp_path):
    (tmp_path / "step8").mkdir()
    (tmp_path / "step8" / "old").write_text("kept")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "step8") as tmp:
            (tmp / "new").write_text("partial")
            raise RuntimeError("job killed")
    assert [p.name for p in tmp_path.iterdir()] == ["step8"] and (tmp_path / "step8" / "old").read_text() == "kept"
