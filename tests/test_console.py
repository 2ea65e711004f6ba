"""The console of the long commands: Lightning's known messages are dropped one by
one (others still show), the overall progress line counts jobs, every command's help
says what it does with an example, and the processes a compare starts end with it."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from glassbox.cli import COMMANDS, build_parser
from glassbox.console import PARENT_ENV, Jobs, quiet_third_party


def test_known_lightning_messages_are_dropped_and_others_are_not(caplog):
    quiet_third_party()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info(
            "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
            "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, ..."
        )
        log.info("GPU available: False, used: False")
        log.info("something Lightning has not said before")
    assert [r.getMessage() for r in caplog.records] == ["something Lightning has not said before"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()  # after simplefilter: its exact filters come first again
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1
        )
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another deprecation"]


def test_jobs_line_off_a_terminal_counts_and_estimates(capsys):
    with Jobs(3, "compare", console=Console(file=io.StringIO(), force_terminal=False)) as jobs:
        jobs.done("compare: scored dense seed 0")
        jobs.set_total(2)
        jobs.done("compare: scored moe seed 0")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("compare: scored dense seed 0  [1/3 jobs, 0:00 elapsed")
    assert lines[1].startswith("compare: scored moe seed 0  [2/2 jobs,")
    assert "left" not in lines[1]  # finished: nothing left to estimate


def test_jobs_bar_on_a_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with Jobs(2, "compare", console=console) as jobs:
        jobs.done("compare: trained dense-seed0 in 3 s")
        jobs.done("compare: trained moe-seed0 in 3 s")
    text = out.getvalue()
    assert "compare: trained moe-seed0" in text and "2/2" in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_says_what_it_does_with_an_example(name, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    text = capsys.readouterr().out
    assert f"example:\n  glassbox {name} " in text
    assert COMMANDS[name][1].split()[0] in text and "DESIGN" not in text


def test_top_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "glassbox compare configs/compare_shipped.yaml" in text
    assert "imports what it needs" not in text and "DESIGN" not in text
    assert all(name in text for name in COMMANDS)


def test_train_without_a_bar_prints_a_line_per_tenth(capsys):
    from types import SimpleNamespace

    from glassbox.training.callbacks import ProgressLines

    lines = ProgressLines(parts=4)
    trainer = SimpleNamespace(max_steps=8, global_step=0)
    lines.on_train_start(trainer, None)
    for step in range(1, 9):
        for _ in range(2):  # two batches per optimiser step (gradient accumulation)
            trainer.global_step = step
            lines.on_train_batch_end(trainer, None, None, None, 0)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in out] == [f"train: step {s}/8" for s in (2, 4, 6, 8)]
    assert "left" in out[0] and "left" not in out[-1]


def test_the_last_call_decides_which_messages_are_dropped(caplog):
    """A train (fits=False) in the same process before a compare: the compare's filter
    still drops the fit set-up lines; and a train after it shows them again."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for fits, shown in ((False, ["GPU available: False, used: False"]), (True, [])):
        quiet_third_party(fits=False)
        quiet_third_party(fits=fits)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=log.name):
            log.info("GPU available: False, used: False")
        assert [r.getMessage() for r in caplog.records] == shown
    quiet_third_party()


# a parent that starts one spawned child (which calls exit_with on it where told) and
# sleeps: the child writes its pid, then sleeps as long
PARENT = """
import multiprocessing, os, sys, time
from glassbox.console import exit_with

def child(path, watch):
    if watch:
        exit_with(os.getppid())
    open(path, "w").write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(
        target=child, args=(sys.argv[1], sys.argv[2] == "1")).start()
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (an exited child no one has reaped yet is a zombie: not alive)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _until(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("watch", [True, False])
def test_a_process_a_compare_starts_ends_when_the_compare_is_killed(tmp_path, watch):
    """A child that called exit_with(its parent) runs while the parent does and is gone
    within seconds of the parent's SIGKILL; one that did not (the case exit_with must
    make the difference in) is still running then."""
    script, pid_file = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), "1" if watch else "0"])
    child = None
    try:
        assert _until(lambda: pid_file.is_file() and pid_file.read_text(), 60)
        child = int(pid_file.read_text())
        time.sleep(2.5)  # two of the watcher's checks: the parent is there, the child stays
        assert _alive(child)
        parent.kill()
        parent.wait()
        assert _until(lambda: not _alive(child), 10) == watch
    finally:
        parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("parent_is_there", [True, False])
def test_a_command_a_compare_started_runs_while_it_is_there(tmp_path, parent_is_there):
    """`glassbox` with PARENT_ENV naming its parent runs the command (here: one line on
    a missing checkpoint); naming a process that is not its parent (the compare is
    gone), it exits at once, saying and doing nothing."""
    parent = os.getpid() if parent_is_there else os.getpid() + 999_999
    env = {**os.environ, PARENT_ENV: str(parent)}
    missing = tmp_path / "no-such-checkpoint"
    done = subprocess.run(
        [sys.executable, "-m", "glassbox.cli", "eval", str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert (str(missing) in done.stderr) == parent_is_there
