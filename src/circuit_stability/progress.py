"""What a running job tells a person: plain progress lines in its log, and the few that matter on the console.

A progress bar redraws one line with carriage returns, which a log file keeps as one unreadable line; these
are plain lines instead. :class:`Progress` stays silent for work that ends within ``every`` seconds and
otherwise prints a line at most every ``every`` seconds and one when the work ends, e.g.
``[progress] edge attribution (5 interpolation point(s), 1487 edges): 3/7 backward passes (43%), 31.1 s
elapsed, ~41 s left``.

Lines go to stderr (a workflow job's log file) and, when the CLI was given a log file (``circuit-stability
--log FILE <stage>``), also to the console the job was started from (:func:`set_console`): the Snakemake console
then shows one line per checkpoint and a progress line at least every 30 s of a long computation, while the
log keeps everything (library warnings, loading bars).
"""

from __future__ import annotations

import os
import sys
import time

# Seconds between two progress lines; CIRCUIT_STABILITY_PROGRESS_SECONDS overrides it (0: every update).
DEFAULT_EVERY = float(os.environ.get("CIRCUIT_STABILITY_PROGRESS_SECONDS", 30.0))
_console = None


def set_console(stream) -> None:
    """Also write :func:`say` lines to ``stream`` (the terminal), besides stderr (the log)."""
    global _console
    _console = stream


def say(line: str, stream=None) -> None:
    """Write ``line`` to ``stream`` (default stderr) and to the console set by :func:`set_console`."""
    print(line, file=stream or sys.stderr, flush=True)
    if _console is not None and stream is None:
        print(line, file=_console, flush=True)


class Progress:
    """Count units of work and print a progress line now and then (see the module docstring).

    Args:
        desc: what is being done (the first words of every line).
        total: number of units expected (``None`` when unknown).
        unit: the units' name, plural.
        every: seconds between lines; no line at all for work that ends sooner.
        stream: where to write (default: :func:`say`'s log and console).
    """

    def __init__(self, desc: str, total: int | None, unit: str = "items", every: float | None = None,
                 stream=None):
        self.desc, self.total, self.unit = desc, total, unit
        self.every = DEFAULT_EVERY if every is None else every
        self.stream = stream
        self.done = 0
        self.note = ""  # appended to each line, e.g. the current loss
        self.printed = False
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Record ``n`` more finished units; print a line if ``every`` seconds have passed since the last one, or
        the last unit is done and a line was printed before."""
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if now - self._last >= self.every or (finished and self.printed):
            self._last = now
            self._print()

    def close(self) -> None:
        """Print the final line of work that printed before (unless :meth:`update` just printed it)."""
        if self.printed and (self.total is None or self.done < self.total):
            self._print()

    def _print(self) -> None:
        self.printed = True
        elapsed = time.monotonic() - self.start
        if self.total:
            frac = self.done / self.total
            line = f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * frac:.0f}%), {elapsed:.1f} s elapsed"
            if 0 < self.done < self.total:
                line += f", ~{elapsed * (1 - frac) / frac:.0f} s left"
        else:
            line = f"{self.desc}: {self.done} {self.unit}, {elapsed:.1f} s elapsed"
        say(f"[progress] {line}{'; ' + self.note if self.note else ''}", self.stream)
