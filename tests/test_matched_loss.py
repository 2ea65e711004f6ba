"""Circuit size at matched loss (analysis.matched_loss, glassbox matched-loss): the
size read at a loss between checkpoints, the tasks compared, and a whole command on a
tiny compare."""

from __future__ import annotations

import json
import math

import pytest

from glassbox.analysis.matched_loss import (
    Point,
    common_tasks,
    curve,
    ratio_at_matched_loss,
    size_at_loss,
)


def _point(step: int, loss: float, **sizes: tuple[int, int] | None) -> Point:
    """sizes: task -> (nodes, edges), or None for a task not learned at this point."""
    tasks = {
        name: {"learned": s is not None, "nodes": s and s[0], "edges": s and s[1]}
        for name, s in sizes.items()
    }
    return Point(step, loss, tasks)


def _dense():
    """Loss falls 1.0 -> 0.5 -> 0.25 while the circuit doubles at each checkpoint."""
    return [
        _point(1000, 1.0, a=(10, 100), b=(10, 100)),
        _point(2000, 0.5, a=(20, 200), b=(20, 200)),
        _point(3000, 0.25, a=(40, 400), b=(40, 400)),
    ]


def test_size_between_checkpoints_is_log_linear_and_never_extrapolated():
    c = curve(_dense(), ["a", "b"], "edges")
    assert [s for *_, s in c] == pytest.approx([100, 200, 400])
    assert size_at_loss(c, 0.5) == pytest.approx(200)  # an evaluated point
    assert size_at_loss(c, 0.375) == pytest.approx(math.sqrt(200 * 400))  # halfway in log size
    assert size_at_loss(c, 0.75) == pytest.approx(math.sqrt(100 * 200))
    assert size_at_loss(c, 0.2) is None and size_at_loss(c, 1.5) is None  # outside: no answer


def test_a_non_monotone_curve_is_read_at_its_latest_crossing():
    c = [(1, 1.0, 10.0), (2, 0.5, 20.0), (3, 0.8, 40.0), (4, 0.4, 80.0)]
    # loss 0.7 is crossed three times; the last pair (0.8 -> 0.4) is the one read
    assert size_at_loss(c, 0.7) == pytest.approx(
        math.exp(0.75 * math.log(40) + 0.25 * math.log(80))
    )


def test_ratio_at_matched_loss_reads_the_baseline_at_the_kinds_final_loss():
    """A sparse run ending at loss 0.5 with edges 50 against dense's 200 at that loss:
    1/4 at matched loss, though 1/8 against dense's final checkpoint."""
    sparse = [_point(1000, 0.9, a=(5, 30), b=(5, 30)), _point(3000, 0.5, a=(4, 50), b=(4, 50))]
    r = ratio_at_matched_loss(sparse, _dense(), "edges")
    assert r["tasks"] == ["a", "b"] and r["loss"] == 0.5 and r["read"] == "baseline"
    assert r["ratio"] == pytest.approx(0.25) and r["final_ratio"] == pytest.approx(50 / 400)
    assert ratio_at_matched_loss(sparse, _dense(), "nodes")["ratio"] == pytest.approx(4 / 20)


def test_the_run_that_ends_lower_is_the_one_read():
    """The kind ends at a lower loss than dense (0.25 against 0.5): the kind's own curve
    is read at dense's final loss."""
    dense = _dense()[:2]  # ends at 0.5 with 200
    kind = [_point(1000, 1.0, a=(1, 10), b=(1, 10)), _point(3000, 0.25, a=(4, 40), b=(4, 40))]
    r = ratio_at_matched_loss(kind, dense, "edges")
    assert r["read"] == "kind" and r["loss"] == 0.5
    at = math.exp((0.5 / 0.75) * math.log(40) + (0.25 / 0.75) * math.log(10))
    assert r["kind_size"] == pytest.approx(at) and r["ratio"] == pytest.approx(at / 200)


def test_only_tasks_both_finals_learned_each_on_the_points_that_learned_it():
    """Task c is learned by dense alone: not compared. Dense's middle checkpoint has
    not learned b: b's curve skips it, so loss 0.5 falls between 1.0 and 0.25 for b,
    while a is read at that checkpoint; the ratio is the per-task ratios' geometric mean."""
    dense = _dense()
    dense[1] = _point(2000, 0.5, a=(20, 200), b=None)
    for p in dense:
        p.tasks["c"] = {"learned": True, "nodes": 1, "edges": 1}
    sparse = [_point(3000, 0.5, a=(4, 50), b=(4, 50), c=None)]
    assert common_tasks(sparse, dense) == ["a", "b"]
    r = ratio_at_matched_loss(sparse, dense, "edges")
    b = 100 ** (1 / 3) * 400 ** (2 / 3)  # two thirds of the way from loss 1.0 to 0.25, in log size
    assert r["per_task"]["a"]["baseline"] == pytest.approx(200)
    assert r["per_task"]["b"]["baseline"] == pytest.approx(b)
    assert r["tasks_read"] == ["a", "b"] and r["baseline_size"] == pytest.approx(math.sqrt(200 * b))
    assert r["ratio"] == pytest.approx(math.sqrt(50 / 200 * 50 / b))


def test_what_cannot_be_compared_says_why():
    sparse = [_point(3000, 2.0, a=(4, 50))]
    r = ratio_at_matched_loss(sparse, _dense(), "edges")
    assert r["ratio"] is None and "reaches loss 2.0000" in r["why"]  # dense never had loss 2
    nothing = [_point(3000, 0.5, a=None)]
    assert "no micro-task" in ratio_at_matched_loss(nothing, _dense())["why"]


@pytest.mark.slow
def test_matched_loss_command_on_a_tiny_compare(tmp_path):
    """Two kinds trained 6 steps with every 2-step checkpoint kept; each checkpoint
    scored once (a second command reads the saved points) into the three files."""
    from glassbox.cli import main
    from tests.test_training import FAST

    args = [
        "configs/compare_matched.yaml",
        f"out_dir={tmp_path / 'out'}",
        "seeds=[0]",
        "jobs=1",
        *FAST,
        f"data.cache_dir={tmp_path / 'data'}",
        "trainer.max_steps=6",
        "trainer.val_every_n_steps=6",
        "trainer.checkpoint_every_n_steps=2",
        "optim.warmup_steps=1",
        "--from-step",
        "0",
    ]
    assert main(["matched-loss", *args]) == 0
    out = tmp_path / "out"
    result = json.loads((out / "matched_loss.json").read_text())
    steps = [p["step"] for p in result["points"]["dense-seed0"]]
    assert (
        steps == [2, 4, 6] and [p["step"] for p in result["points"]["weight_sparse-seed0"]] == steps
    )
    assert all(p["loss"] > 0 for p in result["points"]["dense-seed0"])
    assert set(result["per_seed"]["weight_sparse"]["0"]) == {"nodes", "edges"}
    assert (out / "matched_loss.png").stat().st_size > 0
    assert "# Circuit size at matched pretraining loss" in (out / "matched_loss.md").read_text()
    saved = sorted((out / "runs/dense-seed0/analysis/along").glob("step=*.json"))
    assert len(saved) == 3
    before = [f.stat().st_mtime_ns for f in saved]
    # the points read in worker processes
    assert main(["matched-loss", *args[:-2], "jobs=2", *args[-2:]]) == 0
    assert [f.stat().st_mtime_ns for f in saved] == before  # read, not scored again
    # with the residual channels as units: points of their own, files of their own
    assert main(["matched-loss", *args, "--residual"]) == 0
    assert len(sorted((out / "runs/dense-seed0/analysis/along").glob("step=*.residual.json"))) == 3
    assert [f.stat().st_mtime_ns for f in saved] == before  # the default points untouched
    residual = json.loads((out / "matched_loss_residual.json").read_text())
    assert [p["step"] for p in residual["points"]["dense-seed0"]] == [2, 4, 6]
    md = (out / "matched_loss_residual.md").read_text()
    assert "residual channels as units" in md and "--residual" in md
    assert "(matched_loss_residual.png)" in md
    assert (out / "matched_loss.md").is_file()  # beside the default files
