"""The console of the long commands: Lightning's known messages are dropped one by
one (others still show), the overall progress line counts jobs, and every command's
help says what it does with an example."""

from __future__ import annotations

import io
import logging
import warnings

import pytest
from rich.console import Console

from glassbox.cli import COMMANDS, build_parser
from glassbox.console import Jobs, quiet_third_party


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
