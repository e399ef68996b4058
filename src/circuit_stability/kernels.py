"""CPU kernel paths: ``native`` (each library picks the fastest kernels this CPU offers) or ``portable`` (every
numerical layer pinned to its baseline x86-64 code path, the same on every x86-64 CPU).

Float rounding depends on the kernels, and the kernels on the CPU: the same config trains a different suite on
a machine with other instruction sets (design §6). ``portable`` pins each layer that picks kernels by CPU:

- ATen's own kernels: ``ATEN_CPU_CAPABILITY=default`` (no AVX2/AVX-512 dispatch; PyTorch's documented switch);
- MKL (BLAS): ``MKL_CBWR=COMPATIBLE``, MKL's conditional numerical reproducibility, which documents identical
  results on Intel and compatible x86 processors for a fixed thread count (Intel oneMKL developer guide,
  "Obtaining Numerically Reproducible Results");
- oneDNN: ``ONEDNN_MAX_CPU_ISA=SSE41``;
- glibc's libm (ATen's baseline kernels call it): ``GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA,...``, so
  ``exp``/``log`` take their SSE2 variants, not the FMA ones.

Threads stay as configured (one by default; thread count changes reduction order). The variables must be set
before torch loads, so the workflow puts them in front of the command (:func:`env_prefix`).
``benchmarks/cpu_kernels.py`` measures what the setting costs and shows that it does not depend on the
instruction sets a CPU offers (emulated on one machine).
"""

from __future__ import annotations

import shlex

PORTABLE: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-FMA4,-AVX512F",
}
KERNELS = {"native": {}, "portable": PORTABLE}


def env_prefix(kernels: str) -> str:
    """``env VAR=value …`` to put in front of a command (empty for ``native``).

    Raises:
        ValueError: naming the valid settings, for an unknown one.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown cpu_kernels {kernels!r}; valid: {list(KERNELS)}")
    env = KERNELS[kernels]
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " if env else ""
