"""What the long commands (`compare`, `analyze`, `ship`, `train`) print: one overall
progress bar (rich) and none of the known messages Lightning and torch print from
inside our own calls.

    quiet_third_party()                       once per process (the CLI, each worker)
    with Jobs(total=7, what="compare") as jobs:
        ...
        jobs.done("scored moe seed 0")        a line, and the bar advanced

`Jobs` draws rich's bar (jobs done / total, elapsed, estimated time left) on a
terminal; where the output is not one (a log file, CI) each finished job is one line
that says the same. Messages are filtered one by one, by their exact text (NOISE_LOGS,
NOISE_WARNINGS): any other warning still shows.

The processes a compare starts (`glassbox train` runs, scoring workers) end with it,
killed or not (exit_with): none goes on using the cores for a compare that is gone.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Lightning's log lines (logger "lightning.pytorch...") that say nothing about our run:
# its advertising tips, and the set-up summary and stop notice of the short fits we run
# inside scoring (post-hoc transcoders), whose accelerator the config already states.
NOISE_LOGS = (
    r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]",
    r"💡 Tip: For seamless cloud uploads and versioning, try installing \[litmodels\]",
)
FIT_NOISE_LOGS = (
    r"GPU available: (True|False)",
    r"TPU available: (True|False), using: \d+ TPU cores",
    r"HPU available: (True|False), using: \d+ HPUs",
    r"`Trainer.fit` stopped: `max_steps=\d+` reached\.",
)
# (message regex, category): deprecations raised inside Lightning's own code by the torch
# we pin, which a user of glassbox can do nothing about.
NOISE_WARNINGS = ((r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),)


class _DropMessages(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_third_party(fits: bool = True) -> None:
    """Drop the known messages of NOISE_LOGS and NOISE_WARNINGS (and, with fits, of
    FIT_NOISE_LOGS) in this process; the last call decides which. Every other message
    still shows."""
    patterns = NOISE_LOGS + (FIT_NOISE_LOGS if fits else ())
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, _DropMessages)]:
            logger.removeFilter(f)  # a train's filter (fits=False) gives way to this one
        logger.addFilter(_DropMessages(patterns))
    for message, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class Jobs:
    """One overall progress bar over `total` jobs: `done(line)` marks one finished,
    `total` may be changed once the count is known (`set_total`)."""

    def __init__(self, total: int, what: str, console: Console | None = None) -> None:
        self.what = what
        self.console = console or Console(file=sys.stdout)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn(f"[bold]{what}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("jobs, elapsed"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
            # the time left from the mean pace since the start: jobs finish in bursts
            # (two workers at once), so rich's default 30 s window swings wildly
            speed_estimate_period=24 * 3600,
        )
        self.task = self.progress.add_task(what, total=total)

    def __enter__(self) -> Jobs:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No bar while the body runs (it may draw its own, as Lightning's does)."""
        if not self.live:
            yield
            return
        self.progress.stop()
        try:
            yield
        finally:
            self.progress.start()

    @property
    def total(self) -> int:
        return int(self.progress.tasks[0].total or 0)

    def set_total(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def say(self, line: str) -> None:
        """A line above the bar (printed as it is where there is no bar)."""
        if self.live:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def done(self, line: str) -> None:
        """One job finished: the bar advances; off a terminal, `line` with the count,
        the elapsed time and the estimate of the time left."""
        self.progress.advance(self.task)
        task = self.progress.tasks[0]
        if self.live:
            self.say(line)
            return
        left = task.time_remaining
        eta = f", about {_clock(left)} left" if left is not None and not task.finished else ""
        total = int(task.total) if task.total is not None else "?"
        print(
            f"{line}  [{int(task.completed)}/{total} jobs, {_clock(task.elapsed or 0)} elapsed{eta}]",
            flush=True,
        )


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


# set in the environment of each `glassbox train` process a compare starts: the pid of
# the compare, which the process ends with (exit_with)
PARENT_ENV = "GLASSBOX_EXIT_WITH"


def exit_with(parent: int) -> None:
    """End this process (exit status 1) once process `parent`, its parent, is gone: for
    the processes a compare starts (its `glassbox train` runs, its scoring workers). A
    compare killed by a signal would otherwise leave them training or scoring on its
    cores for the rest of their jobs and saving results nobody reads. A daemon thread
    checks once a second that this process's parent is still `parent`."""
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
