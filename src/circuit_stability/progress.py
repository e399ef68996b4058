"""Periodic progress lines for long jobs (their stderr is the job's log file).

A progress bar redraws one line with carriage returns, which a log file keeps as one unreadable line; these
are plain lines instead, one when the work starts, then at most one every ``every`` seconds, and one when it
ends, e.g. ``[progress] scores quick-m ioi step 200: 3/7 batches (43%), 12.1 s elapsed, ~16 s left``.
"""

from __future__ import annotations

import os
import sys
import time

# Seconds between two progress lines; CIRCUIT_STABILITY_PROGRESS_SECONDS overrides it (0: every update).
DEFAULT_EVERY = float(os.environ.get("CIRCUIT_STABILITY_PROGRESS_SECONDS", 10.0))


class Progress:
    """Count units of work and print a progress line to stderr now and then.

    Args:
        desc: what is being done (the first words of every line).
        total: number of units expected (``None`` when unknown).
        unit: the units' name, plural.
        every: seconds between lines (the first and last line are always printed).
    """

    def __init__(self, desc: str, total: int | None, unit: str = "items", every: float | None = None,
                 stream=None):
        self.desc, self.total, self.unit = desc, total, unit
        self.every = DEFAULT_EVERY if every is None else every
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self._last = time.monotonic()
        self._print()

    def update(self, n: int = 1) -> None:
        """Record ``n`` more finished units; print a line if ``every`` seconds have passed or all are done."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every or (self.total is not None and self.done >= self.total):
            self._last = now
            self._print()

    def close(self) -> None:
        """Print the final line (unless :meth:`update` just printed it on reaching ``total``)."""
        if self.total is None or self.done < self.total:
            self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self.start
        if self.total:
            frac = self.done / self.total
            line = f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * frac:.0f}%), {elapsed:.1f} s elapsed"
            if 0 < self.done < self.total:
                line += f", ~{elapsed * (1 - frac) / frac:.0f} s left"
        else:
            line = f"{self.desc}: {self.done} {self.unit}, {elapsed:.1f} s elapsed"
        print(f"[progress] {line}", file=self.stream, flush=True)
