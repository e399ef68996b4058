"""The cpu_kernels switch: the environment that pins every numerical layer's code path takes effect."""

import subprocess
import sys

import pytest

from circuit_stability.kernels import PORTABLE, env_prefix


def test_env_prefix():
    assert env_prefix("native") == ""
    prefix = env_prefix("portable")
    assert prefix.startswith("env ") and all(f"{k}=" in prefix for k in PORTABLE)
    with pytest.raises(ValueError, match=r"valid: \['native', 'portable'\]"):
        env_prefix("fast")


def test_portable_kernels_take_effect():
    """Under the portable prefix torch dispatches to its baseline kernels and MKL runs in its reproducibility
    mode (the variables are read when the libraries load, so they must be in the process's environment)."""
    probe = ("import torch; print(torch.backends.cpu.get_cpu_capability()); "
             "print((torch.ones(64, 64) @ torch.ones(64, 64))[0, 0].item())")
    out = subprocess.run(["bash", "-c", env_prefix("portable") + f"{sys.executable} -c '{probe}'"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["DEFAULT", "64.0"]
    native = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert native[0] != "DEFAULT"  # this machine offers more than the baseline: the switch changed something
