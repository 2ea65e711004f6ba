"""The size ladder (glassbox.ladder, configs/ladder/) and its GPU script
(benchmarks/scale_gpu.sh): every rung's kinds matched on active parameters with equal
tokens, the rungs a machine runs, the steps a budget fits, the summary read from the
rungs' reports, and the script end to end on a CPU with the tiny rung."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from glassbox.archs import Transformer, load_pretrained
from glassbox.archs.errors import ArgumentError
from glassbox.archs.weight_sparsity import apply_weight_sparsity, nonzero_params
from glassbox.ladder import (
    add_arguments,
    load_ladder_config,
    pick_rungs,
    publish,
    run_configs,
    rung_config,
    rung_params,
    steps_for_budget,
    tokens_per_step,
)
from glassbox.ladder_report import (
    circuit_ratio,
    edges_ratio,
    read_rung,
    task_edges,
    write_ladder_summary,
)
from glassbox.report import Report
from glassbox.results import RunResult

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"S": (128, 2), "M": (256, 4), "L": (256, 8)}  # d_model x layers, as the issue names them


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name each other from the repository root


@pytest.mark.parametrize("rung", ["S", "M", "L"])
def test_each_rung_matches_active_parameters_and_tokens(rung):
    cc = rung_config(load_ladder_config(), rung, "gpu")
    cfgs = run_configs(cc)
    assert set(cfgs) == {"dense", "moe", "transcoder", "weight_sparse"}
    d_model, layers = SIZES[rung]
    assert (cfgs["dense"].model.d_model, cfgs["dense"].model.n_layers) == (d_model, layers)
    assert all(c.data.source == "code" for c in cfgs.values())
    # equal tokens: the same rows per step, the same steps, the same data
    assert len({(tokens_per_step(c), c.trainer.max_steps) for c in cfgs.values()}) == 1
    assert len({json.dumps(str(c.data), sort_keys=True) for c in cfgs.values()}) == 1
    p = rung_params(cc)
    dense = p["dense"]["active"]
    assert p["dense"]["total"] == dense
    # moe and weight_sparse within 1% of dense's active (non-zero) parameters; the
    # transcoder below it (its k decoder rows), as configs/model/transcoder.yaml says
    assert abs(p["moe"]["active"] / dense - 1) < 0.01 < p["moe"]["total"] / dense - 1
    assert abs(p["weight_sparse"]["nonzero"] / dense - 1) < 0.001
    assert p["weight_sparse"]["total"] > 2.5 * dense  # twice as wide, most of it zeros
    assert 0.75 < p["transcoder"]["active"] / dense < 1


def test_counted_nonzero_is_what_pruning_keeps():
    """The tiny rung's weight_sparse model built for real and pruned to its target
    density holds exactly the non-zero parameters --params counts on the meta device."""
    lc = load_ladder_config("configs/ladder/tiny/ladder.yaml")
    cc = rung_config(lc, "T", "cpu")
    cfg = run_configs(cc)["weight_sparse"]
    model = Transformer(cfg.model)
    apply_weight_sparsity(model, cfg.model.weight_sparsity.target_density)
    counted = rung_params(cc)["weight_sparse"]
    assert nonzero_params(model) == counted["nonzero"] < counted["total"] == model.num_params()


def test_rungs_grow_and_share_one_budget():
    lc = load_ladder_config()
    dense = [rung_params(rung_config(lc, r, "gpu"))["dense"]["active"] for r in lc.rungs]
    assert dense == sorted(dense) and len(set(dense)) == 3
    budgets = set()
    for rung in lc.rungs:
        cfg = run_configs(rung_config(lc, rung, "gpu"))["dense"]
        budgets.add((tokens_per_step(cfg), cfg.trainer.max_steps, cfg.optim.lr))
    assert len(budgets) == 1  # the same tokens and schedule at every size


def test_the_machine_picks_its_rungs():
    lc = load_ladder_config()
    assert pick_rungs(lc, None, "cpu") == ["S"]
    assert pick_rungs(lc, None, "gpu") == ["S", "M", "L"]
    assert pick_rungs(lc, "L,S", "cpu") == ["S", "L"]  # asked: in the ladder's order
    with pytest.raises(ArgumentError, match="--rungs='XL'"):
        pick_rungs(lc, "XL", "gpu")


def test_device_overrides_reach_every_run():
    lc = load_ladder_config()
    cpu = run_configs(rung_config(lc, "S", "cpu", ["trainer.max_steps=7"]))
    gpu = run_configs(rung_config(lc, "S", "gpu"))
    assert all(c.trainer.max_steps == 7 and not c.trainer.compile for c in cpu.values())
    assert all(c.trainer.compile and c.trainer.max_steps == 4000 for c in gpu.values())
    assert rung_config(lc, "S", "cpu").out_dir == str(Path(lc.out_dir) / "S")


def test_steps_fit_the_budget_and_each_kind_has_its_share():
    cc = rung_config(load_ladder_config(), "L", "gpu")
    rate = 1e14  # FLOP/s
    steps, share = steps_for_budget(cc, 300.0, rate)
    per_step = tokens_per_step(run_configs(cc)["dense"])
    flops = sum(p["flops_per_token"] for p in rung_params(cc).values()) * per_step
    assert steps * flops <= 300 * rate < (steps + 1) * flops
    assert math.isclose(sum(share.values()), steps * flops / rate)
    assert share["weight_sparse"] > 3 * share["dense"]  # twice as wide: ~4x the FLOPs


def _run(arch, seed, val_loss, lift, twin, params, edges=None):
    """A scored run as compare saves it: capability from metrics.json, audited scores
    with their 95% intervals (key_ci) beside the untrained twin's, and where `edges`
    ({task: edges}) says so, the micro-task circuits of those tasks."""
    micro = {f"interp.microcircuit.{t}.edges": e for t, e in (edges or {}).items()}
    if edges:
        micro.update({"interp.microcircuit_tasks": len(edges),
                      "interp.microcircuit_faithfulness_heldout": 0.9,
                      "interp.microcircuit_beats_random": 1.0})  # fmt: skip
    return RunResult(
        arch=arch, seed=seed, run_dir=f"runs/{arch}-seed{seed}",
        capability={"val_loss": val_loss, "params.active": params, "params.total": 2 * params,
                    "params.nonzero": 2 * params, "train.tokens": 1000},
        interp={"interp.lift_pooled": lift[0], "interp.lift_pooled_ci": lift[1:],
                "baselines.init.interp.lift_pooled": twin[0],
                "baselines.init.interp.lift_pooled_ci": twin[1:], **micro},
    )  # fmt: skip


def test_summary_reads_the_rungs_reports(tmp_path):
    """Two rungs' report.json as compare writes them -> one table per score with a
    column per rung, the report's interval and † (not informative) kept, the gap to
    the rung's dense model, the plot and the JSON."""
    rungs = []
    for name, n, moe_lift in (("S", 1000, (0.01, -0.01, 0.03)), ("M", 4000, (0.2, 0.15, 0.25))):
        runs = (
            _run("dense", 0, 2.0, (0.10, 0.08, 0.12), (0.0, -0.01, 0.01), n),
            _run("moe", 0, 2.2, moe_lift, (0.0, -0.01, 0.01), n),
        )
        Report(out_dir=tmp_path / name, seeds=(0,), config={}, runs=runs).write()
        rungs.append(read_rung(name, tmp_path / name / "report.json", {"python": "3.12"}))
    md = write_ladder_summary(tmp_path, rungs).read_text()
    assert "| kind | S (0.00M) | M (0.00M) |" in md
    assert "| dense | 0.100 [0.080, 0.120] (twin 0.000) | 0.100 [0.080, 0.120] (twin 0.000) |" in md
    # moe at S is within its twin's interval: marked, as its rung's report marks it;
    # its interval is below dense's at S and above it at M, and the cells say so
    assert (
        "| moe | 0.010 [-0.010, 0.030] (twin 0.000), below dense † "
        "| 0.200 [0.150, 0.250] (twin 0.000), above dense |" in md
    )
    assert "above / below dense: the 95% interval of the difference" in md
    assert "| moe | 2.200 (+10.0%) | 2.200 (+10.0%) |" in md  # val loss and its gap to dense
    assert "| S | 1,000 | 1,000 / 2,000 | 1,000 / 2,000 |" in md
    data = json.loads((tmp_path / "ladder.json").read_text())
    assert data["M"]["kinds"]["moe"]["interp.lift_pooled"]["ci"] == [0.15, 0.25]
    assert data["S"]["not_informative"]["moe"] == ["interp.lift_pooled"]
    assert (tmp_path / "ladder.png").stat().st_size > 10_000


def test_kinds_are_told_apart_only_on_scores_read_at_equal_chances(tmp_path):
    """A kind twice as wide has twice the units to pick each feature's best from: its
    held-out coverage over every unit is apart from dense's, at 512 candidates a kind
    (matched coverage) the two overlap. The ladder says "above dense" on neither of
    them but where the chances were equal and the intervals apart."""

    def run(arch, every, matched):
        return RunResult(
            arch=arch, seed=0, run_dir=f"runs/{arch}-seed0",
            capability={"val_loss": 2.0, "params.active": 1000, "params.total": 2000,
                        "params.nonzero": 2000, "train.tokens": 1000},
            interp={"interp.coverage_heldout": every[0], "interp.coverage_heldout_ci": every[1:],
                    "interp.coverage_matched": matched[0], "interp.coverage_matched_ci": matched[1:],
                    "baselines.init.interp.coverage_heldout": 0.1,
                    "baselines.init.interp.coverage_heldout_ci": [0.09, 0.11],
                    "baselines.init.interp.coverage_matched": 0.1,
                    "baselines.init.interp.coverage_matched_ci": [0.09, 0.11]},
        )  # fmt: skip

    def summary(runs) -> str:  # ladder.md of one rung holding these runs
        Report(out_dir=tmp_path / "S", seeds=(0,), config={}, runs=runs).write()
        rung = read_rung("S", tmp_path / "S" / "report.json", {"python": "3.12"})
        return write_ladder_summary(tmp_path, [rung]).read_text()

    runs = (run("dense", (0.30, 0.29, 0.31), (0.30, 0.29, 0.31)),
            run("weight_sparse", (0.36, 0.35, 0.37), (0.31, 0.30, 0.32)))  # fmt: skip
    md = summary(runs)
    assert "| weight_sparse | 0.360 [0.350, 0.370] (twin 0.100) |" in md  # apart, not marked
    assert "| weight_sparse | 0.310 [0.300, 0.320] (twin 0.100) |" in md  # overlapping
    assert ", above dense" not in md and ", below dense" not in md
    # the same wide kind whose matched coverage is apart from dense's is marked there
    md = summary((runs[0], run("weight_sparse", (0.36, 0.35, 0.37), (0.34, 0.33, 0.35))))
    assert "| weight_sparse | 0.340 [0.330, 0.350] (twin 0.100), above dense |" in md
    assert md.count(", above dense") == 1


def test_kinds_are_told_from_dense_by_the_interval_of_the_difference(tmp_path):
    """Three seeds a kind, each known to +-0.01 from its examples: dense at 0.08, 0.10,
    0.12; the transcoder 0.08 higher at every seed. The t interval of each mean (2
    degrees of freedom, 4.303 x 0.02 / sqrt(3) = +-0.0497) overlaps the other's, yet
    Welch's interval of the difference (4 degrees of freedom, 2.7764 x sqrt(2 x 0.0004
    / 3) = +-0.0453) is [0.035, 0.125]: above dense, and the ladder says so. The moe,
    0.04 higher, is not told apart ([-0.005, 0.085]) and is not marked, though each
    seed, against dense's of the same seed, is above (0.04 +- 0.014 from the two
    intervals): the cell says both."""

    def runs(arch, shift):
        return [_run(arch, s, 2.0, (v + shift, v + shift - 0.01, v + shift + 0.01),
                     (0.0, -0.01, 0.01), 1000) for s, v in enumerate((0.08, 0.10, 0.12))]  # fmt: skip

    rows = runs("dense", 0.0) + runs("moe", 0.04) + runs("transcoder", 0.08)
    Report(out_dir=tmp_path / "S", seeds=(0, 1, 2), config={}, runs=tuple(rows)).write()
    rung = read_rung("S", tmp_path / "S" / "report.json", {"python": "3.12"})
    dense_ci = rung.stat("dense", "interp.lift_pooled")["ci"]
    assert rung.stat("transcoder", "interp.lift_pooled")["ci"][0] < dense_ci[1]  # overlap
    md = write_ladder_summary(tmp_path, [rung]).read_text()
    assert "| transcoder | 0.180 ± 0.020 [0.130, 0.230] (twin 0.000), above dense |" in md
    assert "| moe | 0.140 ± 0.020 [0.090, 0.190] (twin 0.000) |" in md
    every = "(seeds 0, 1, 2: above, above, above)"
    assert f"| pooled lift: transcoder | +0.080 [0.035, 0.125], above {every} |" in md
    assert f"| pooled lift: moe | +0.040 [-0.005, 0.085], same {every} |" in md
    data = json.loads((tmp_path / "ladder.json").read_text())["S"]["vs_dense"]
    assert data["transcoder"]["interp.lift_pooled"] == pytest.approx([0.034661, 0.125339], abs=1e-6)


def test_edges_ratio_is_the_geometric_mean_over_shared_tasks():
    """Known answers: half of dense's edges on every shared task is 0.5 with no spread
    (a task dense did not learn does not count); 2x on one task and 0.05x on the other
    is sqrt(0.1) with the t interval of one degree of freedom, exp(mean log +- 12.706 x
    the standard error); no shared task is no ratio, one is a ratio with no interval."""
    dense = {"a": 100.0, "b": 1000.0}
    half = edges_ratio({"a": 50.0, "b": 500.0, "only_here": 1.0}, dense)
    assert half["tasks"] == ["a", "b"]
    assert math.isclose(half["ratio"], 0.5) and all(math.isclose(x, 0.5) for x in half["ci"])
    mixed = edges_ratio({"a": 200.0, "b": 50.0}, dense)
    assert math.isclose(mixed["ratio"], math.sqrt(0.1))
    se = (math.log(2.0) - math.log(0.05)) / 2  # the std of two values over sqrt(2)
    want = [math.sqrt(0.1) * math.exp(s * 12.7062 * se) for s in (-1, 1)]
    assert mixed["ci"] == pytest.approx(want, rel=1e-4)
    assert edges_ratio({"c": 10.0}, dense) is None
    one = edges_ratio({"a": 300.0}, dense)
    assert math.isclose(one["ratio"], 3.0) and one["ci"] is None


def test_edges_ratio_does_not_call_two_tasks_larger():
    """The case the interval must not credit: 1.2x and 2x dense's edges on the only two
    tasks. A percentile bootstrap over the two tasks gives [1.2, 2.0], "larger", though
    two tasks say little about a third; the t interval over them holds 1. Seven tasks
    all near 1.5x (1.4 to 1.6) are larger: the interval lies above 1, inside the tasks'
    range."""
    dense = {t: 100.0 for t in "abcdefg"}
    two = edges_ratio({"a": 120.0, "b": 200.0}, dense)
    assert two["ci"][0] < 1.0 < two["ci"][1]
    seven = edges_ratio(
        dict(zip("abcdefg", (140.0, 145.0, 150.0, 150.0, 150.0, 155.0, 160.0))), dense
    )
    assert 1.4 < seven["ci"][0] < 1.5 < seven["ci"][1] < 1.6


def test_summary_shows_circuits_where_a_rung_scored_them(tmp_path):
    """A rung with micro-task circuits gets the edges-to-dense table and the circuits'
    controls; a kind sharing no learned task with dense gets no ratio; a ladder whose
    rungs scored no circuits shows none of it."""
    lift, twin = (0.1, 0.08, 0.12), (0.0, -0.01, 0.01)
    runs = (
        _run("dense", 0, 2.0, lift, twin, 1000, {"a": 100, "b": 1000}),
        _run("moe", 0, 2.0, lift, twin, 1000, {"a": 50, "b": 500}),
        _run("transcoder", 0, 2.0, lift, twin, 1000, {"c": 7}),
        _run("weight_sparse", 0, 2.0, lift, twin, 1000, {"a": 300, "c": 7}),
    )
    Report(out_dir=tmp_path / "S", seeds=(0,), config={}, runs=runs).write()
    rung = read_rung("S", tmp_path / "S" / "report.json")
    md = write_ladder_summary(tmp_path, [rung]).read_text()
    assert "## Micro-task circuits: edges / dense's" in md
    # the same lift interval as dense's: overlapping, so not marked above or below
    assert "| moe | 0.100 [0.080, 0.120] (twin 0.000) |" in md
    assert "| moe | 0.50x [0.50, 0.50], smaller (2 tasks) |" in md
    assert "| dense | 1.00x [1.00, 1.00] (2 tasks) |" in md
    assert "| transcoder | – |" in md
    # one shared task: a ratio, but no interval to decide by
    assert "| weight_sparse | 3.00x (no interval), same (1 task) |" in md
    assert "## micro-tasks learned" in md
    data = json.loads((tmp_path / "ladder.json").read_text())
    assert math.isclose(data["S"]["microcircuit_edges_to_dense"]["moe"]["ratio"], 0.5)
    assert data["S"]["microcircuit_edges_to_dense"]["transcoder"] is None
    bare = (_run("dense", 0, 2.0, lift, twin, 1000), _run("moe", 0, 2.0, lift, twin, 1000))
    Report(out_dir=tmp_path / "T", seeds=(0,), config={}, runs=bare).write()
    md = write_ladder_summary(
        tmp_path, [read_rung("T", tmp_path / "T" / "report.json")]
    ).read_text()
    assert "Micro-task circuits" not in md and "micro-tasks learned" not in md


def test_circuit_ratio_pairs_seeds_and_widens_where_they_disagree(tmp_path):
    """Known answers over two seeds. moe at 10x dense's edges at seed 0 and 0.1x at seed
    1: the mean of its edges over seeds equals dense's, but paired by seed the ratios
    disagree, so the ratio is 1 with an interval holding both 0.1 and 10 (not the
    spread-free 1.00x the seed-averaged edges would give). The transcoder at 2x at both
    seeds, on every task: 2.00x with no spread. weight_sparse has seed 0 only, paired
    with dense's seed 0 alone (4x), not with dense's mean over both seeds (0.73x)."""
    lift, twin = (0.1, 0.08, 0.12), (0.0, -0.01, 0.01)
    runs = (
        _run("dense", 0, 2.0, lift, twin, 1000, {"a": 100, "b": 100}),
        _run("dense", 1, 2.0, lift, twin, 1000, {"a": 1000, "b": 1000}),
        _run("moe", 0, 2.0, lift, twin, 1000, {"a": 1000, "b": 1000}),
        _run("moe", 1, 2.0, lift, twin, 1000, {"a": 100, "b": 100}),
        _run("transcoder", 0, 2.0, lift, twin, 1000, {"a": 200, "b": 200}),
        _run("transcoder", 1, 2.0, lift, twin, 1000, {"a": 2000, "b": 2000}),
        _run("weight_sparse", 0, 2.0, lift, twin, 1000, {"a": 400, "b": 400}),
    )
    Report(out_dir=tmp_path / "S", seeds=(0, 1), config={}, runs=runs).write()
    rung = read_rung("S", tmp_path / "S" / "report.json")
    moe = circuit_ratio(rung, "moe")
    assert moe["seeds"] == [0, 1]
    assert [e["ratio"] for e in moe["per_seed"].values()] == pytest.approx([10.0, 0.1])
    assert [e["said"] for e in moe["per_seed"].values()] == ["larger", "smaller"]
    assert math.isclose(moe["ratio"], 1.0) and moe["said"] == "same"
    assert moe["ci"][0] < 0.1 and moe["ci"][1] > 10.0
    averaged = edges_ratio(task_edges(rung, "moe"), task_edges(rung, "dense"))
    assert averaged["ci"] == pytest.approx([1.0, 1.0])
    tc = circuit_ratio(rung, "transcoder")
    assert math.isclose(tc["ratio"], 2.0) and tc["ci"] == pytest.approx([2.0, 2.0])
    ws = circuit_ratio(rung, "weight_sparse")
    assert ws["seeds"] == [0] and math.isclose(ws["ratio"], 4.0)
    md = write_ladder_summary(tmp_path, [rung]).read_text()
    # each seed's ratio and decision beside the ratio over seeds; dense, the reference, none
    assert (
        "| moe | 1.00x [" in md
        and "same (2 tasks; seeds 0, 1: 10.00x larger, 0.10x smaller) |" in md
    )
    assert (
        "| transcoder | 2.00x [2.00, 2.00], larger (2 tasks; seeds 0, 1: 2.00x larger, 2.00x larger) |"
        in md
    )
    assert "| weight_sparse | 4.00x [4.00, 4.00], larger (2 tasks) |" in md
    assert "| dense | 1.00x [1.00, 1.00] (2 tasks, 2 seeds) |" in md


def test_circuit_ratio_over_seeds_keeps_a_seed_with_one_task(tmp_path):
    """moe shares one task with dense at seed 0 (2x, no interval) and two at seed 1 (4x
    on both, no spread): over the seeds the ratio is sqrt(8), with the t interval of
    one degree of freedom over the seeds' log ratios (12.706 x |log 4 - log 2| / 2),
    which holds 1, so "same"; seed 0 keeps its missing interval."""
    lift, twin = (0.1, 0.08, 0.12), (0.0, -0.01, 0.01)
    runs = (
        _run("dense", 0, 2.0, lift, twin, 1000, {"a": 100, "b": 100}),
        _run("dense", 1, 2.0, lift, twin, 1000, {"a": 100, "b": 100}),
        _run("moe", 0, 2.0, lift, twin, 1000, {"a": 200}),
        _run("moe", 1, 2.0, lift, twin, 1000, {"a": 400, "b": 400}),
    )
    Report(out_dir=tmp_path / "S", seeds=(0, 1), config={}, runs=runs).write()
    moe = circuit_ratio(read_rung("S", tmp_path / "S" / "report.json"), "moe")
    assert moe["per_seed"][0]["ci"] is None and moe["per_seed"][1]["said"] == "larger"
    assert math.isclose(moe["ratio"], math.sqrt(8.0))
    half = 12.7062 * math.log(2.0) / 2
    want = [math.sqrt(8.0) * math.exp(s * half) for s in (-1, 1)]
    assert moe["ci"] == pytest.approx(want, rel=1e-4) and moe["said"] == "same"


def test_publish_keeps_each_rung_after_its_run_folders_are_gone(tmp_path):
    """Rung S published, its folder then gone, rung M scored: publishing M keeps S's
    report where it was published, and the summary there has both rungs, each link to a
    rung's report a file beside it, the corpus records copied. The ladder's own folder,
    or a ladder with no report, is refused in one line."""
    lc = load_ladder_config()
    lc.out_dir = str(tmp_path / "out")
    dest = tmp_path / "published"
    lift, twin = (0.1, 0.08, 0.12), (0.0, -0.01, 0.01)

    def scored(name, n):
        runs = (_run("dense", 0, 2.0, lift, twin, n), _run("moe", 0, 2.2, lift, twin, n))
        Report(
            out_dir=tmp_path / "out" / name, seeds=(0,), config={"seeds": [0]}, runs=runs
        ).write()
        corpus = {"summary": {"python": f"3.{n}", "packages": 2, "chars": {}, "package_names": []}}
        (tmp_path / "out" / f"{name}.corpus.json").write_text(json.dumps(corpus))

    with pytest.raises(ArgumentError, match="no rung there has a report.json"):
        publish(lc, "cpu", [], dest)
    scored("S", 1000)
    publish(lc, "cpu", [], dest)
    shutil.rmtree(tmp_path / "out")
    scored("M", 4000)
    md = publish(lc, "cpu", [], dest).read_text()
    assert "| kind | S (0.00M) | M (0.00M) |" in md
    assert "| moe | 2.200 (+10.0%) | 2.200 (+10.0%) |" in md
    links = re.findall(r"\]\(([^)]+\.md)\)", md)
    assert sorted(links) == ["M/report.md", "S/report.md"]
    assert all((dest / link).is_file() for link in links)
    assert json.loads((dest / "S.corpus.json").read_text())["summary"]["python"] == "3.1000"
    assert set(json.loads((dest / "ladder.json").read_text())) == {"S", "M"}
    with pytest.raises(ArgumentError, match="other than the ladder's own"):
        publish(lc, "cpu", [], tmp_path / "out")


def test_command_line_parses():
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--rungs", "L", "--train-only", "--arch", "dense", "trainer.max_steps=3"])
    assert (a.rungs, a.train_only, a.arch, a.overrides) == ("L", True, "dense", ["trainer.max_steps=3"])  # fmt: skip
    with pytest.raises(SystemExit):  # one thing at a time
        p.parse_args(["--params", "--train-only"])


def _python_without_glassbox(tmp_path: Path) -> tuple[Path, str]:
    """A Python that has this environment's packages but not glassbox, as on a GPU
    machine that was sent the tree and installs nothing: -S skips site's .pth files,
    among them the editable install's, and PYTHONPATH names site-packages instead."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    import site

    return wrapper, os.pathsep.join(site.getsitepackages())


def test_the_gpu_scripts_python_cannot_import_an_installed_glassbox(tmp_path):
    """The premise of the end-to-end test below: its Python finds no glassbox, so the
    script runs on the tree alone (benchmarks/gpu_env.sh's namespace)."""
    python, path = _python_without_glassbox(tmp_path)
    done = subprocess.run(
        [str(python), "-c", "import torch, datasets, omegaconf; import glassbox"],
        env={**os.environ, "PYTHONPATH": path}, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "No module named 'glassbox'" in done.stderr, done.stderr


@pytest.mark.slow
def test_gpu_script_end_to_end_on_cpu(tmp_path):
    """benchmarks/scale_gpu.sh with the tiny rung on a CPU (ACCEL=cpu SMALL=1), run by a
    Python without glassbox installed (as on the GPU machine): corpus, every kind trained
    21 steps (one throughput window), tokens/s and MFU printed, scored, and one archive
    holding each kind's checkpoint and log, the corpus manifest and the ladder's report.
    About three minutes."""
    from glassbox.training.data.code import write_snapshot

    python, path = _python_without_glassbox(tmp_path)
    lc = load_ladder_config("configs/ladder/tiny/ladder.yaml")
    tiny = rung_config(lc, "T", "cpu", [f"data.cache_dir={tmp_path / 'here'}"])
    snap = write_snapshot(next(iter(run_configs(tiny).values())).data, tmp_path / "corpus.json.xz")
    env = {**os.environ, "PYTHON": str(python), "PYTHONPATH": path, "ACCEL": "cpu",
           "SMALL": "1", "STEPS": "21", "OVERHEAD_S": "20", "SCORE_S": "10",
           "CKPT_KINDS": "dense,weight_sparse", "OUT": str(tmp_path / "out"),
           "TMPDIR": str(tmp_path), "SNAPSHOT": snap["path"]}  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "scale_gpu.sh")], env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "out" / "scale_gpu_summary.txt").read_text()
    assert "21 steps x 256 tokens = 5376 tokens per kind" in summary
    assert f"from snapshot {snap['sha256'][:16]}" in summary  # the corpus read here
    for arch in ("dense", "moe", "transcoder", "weight_sparse"):
        line = next(x for x in summary.splitlines() if x.startswith(arch + " "))
        assert "steady" in line and "MFU" in line and "nan" not in line, line
        assert "steps (max_steps)" in line, line  # not stopped by trainer.max_seconds
    assert "scored in" in summary
    with tarfile.open(tmp_path / "out" / "scale_gpu.tar.gz") as tar:
        names = set(tar.getnames())
        corpus = json.load(tar.extractfile("ladder/T.corpus.json"))
        tar.extractall(tmp_path / "back", filter="data")
    sparse = load_pretrained(tmp_path / "back" / "bf16" / "weight_sparse")  # as it came back
    # the kinds left out of the archive keep their bf16 copies in the scratch folder
    assert list(tmp_path.glob("glassbox-scale-gpu.*/bf16/moe/model.safetensors"))
    assert sparse.cfg.weight_sparsity.enabled and sparse.tokenizer is not None
    for arch in ("dense", "moe", "transcoder", "weight_sparse"):
        run = f"ladder/T/runs/{arch}-seed0"
        assert {f"{run}/checkpoint/metrics.json", f"{run}/logs/metrics.csv",
                f"logs/train_{arch}.log", f"{run}/checkpoint/corpus_manifest.json"} <= names  # fmt: skip
        # the weights: bf16 copies of the kinds CKPT_KINDS names, no fp32 ones
        assert f"{run}/checkpoint/model.safetensors" not in names
        bf16 = {f"bf16/{arch}/model.safetensors", f"bf16/{arch}/tokenizer.json"}
        assert bf16 <= names if arch in ("dense", "weight_sparse") else not bf16 & names
    assert {"ladder/T/report.json", "ladder/ladder.md", "ladder/ladder.png"} <= names
    assert not any(n.endswith(".ckpt") for n in names)
    assert corpus["manifest"]["packages"]["json"]["split"] == "val"
    assert corpus["rows"]["train"] > 0 and corpus["summary"]["packages"] == 6


def test_snapshot_goes_with_prepare_and_one_rung(tmp_path):
    """--snapshot writes one rung's corpus while --prepare builds it: asked otherwise,
    one line, and nothing is written."""
    from glassbox.ladder import main

    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "corpus.json.xz"
    for argv in (["--snapshot", str(out)], ["--prepare", "--rungs", "S,M", "--snapshot", str(out)]):  # fmt: skip
        with pytest.raises(ArgumentError, match="--snapshot.*one rung"):
            main(p.parse_args(argv))
    assert not out.exists()
