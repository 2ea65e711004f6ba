"""glassbox merge: the runs of reports scored apart make the report they would have made
together, and reports that were not scored the same way, or that give one run two
sets of scores, are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassbox.analysis.microcircuits import is_microcircuit_key, summarise
from glassbox.cli import main
from glassbox.merge import MergeError, merge_reports
from glassbox.report import Report
from glassbox.results import RunResult
from tests.test_audited_scores import _boot_of
from tests.test_report import _markdown_tables

CONFIG = {
    "overrides": ["model.d_model=64"],
    "analysis_examples": 64,
    "posthoc": {"enabled": False},
    "arch_overrides": {},
    "checkpoints": {},
    "microcircuits": False,
}
MICRO = {"interp.microcircuit_nodes_gmean": 12.0, "baselines.init.interp.microcircuit_tasks": 3}


def _run(arch: str, seed: int, lead: float, micro: bool = False, **timing) -> RunResult:
    """A run whose pooled lift is the examples' difficulty plus `lead` (plus a seed's
    offset), with its replicates: every run at one seed reads the same examples."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(200, generator=g, dtype=torch.float64) - 0.6
    per_example = (
        x + lead + 0.01 * seed + 0.004 * torch.randn(200, generator=g, dtype=torch.float64)
    )
    b = _boot_of(per_example)
    reps = torch.tensor(b["replicates"], dtype=torch.float64)
    interp = {
        "interp.lift_pooled": float(per_example.mean()),
        "interp.lift_pooled_ci": [float(reps.quantile(0.025)), float(reps.quantile(0.975))],
        "interp.lift_pooled_boot": b,
        **(MICRO if micro else {}),
    }
    capability = {
        "val_loss": 3.0 + lead,
        "params.active": 100,
        "train.tokens": 1000,
        "train.steps": 10,
    }
    return RunResult(arch, seed, f"runs/{arch}-seed{seed}", capability, interp, **timing)


def _write(folder: Path, runs: list[RunResult], **config) -> Path:
    archs = dict.fromkeys(r.arch for r in runs)
    cfg = {**CONFIG, "architectures": {a: f"configs/{a}.yaml" for a in archs}, **config}
    seeds = tuple(sorted({r.seed for r in runs}))
    Report(out_dir=folder, seeds=seeds, config={**cfg, "seeds": list(seeds)}, runs=tuple(runs)).write()  # fmt: skip
    return folder / "report.json"


LEADS = {"dense": 0.0, "moe": 0.1}


def _vs_dense(report: Report) -> str:
    return dict(report.decisions().rows)["moe"][-1]


def test_runs_scored_apart_make_the_report_scored_together(tmp_path):
    """Known answer: dense and moe at seeds 0, 1 and 2, scored in two places (seeds 0
    and 1 in one report, seed 2 in another), merge into the report of all six: the
    same decisions against dense (moe leads by 0.1 at every seed: above), the same
    table, the replicates kept so that each seed still pairs."""
    together = [_run(a, s, LEADS[a]) for a in LEADS for s in (0, 1, 2)]
    a = _write(tmp_path / "a", [r for r in together if r.seed < 2])
    b = _write(tmp_path / "b", [r for r in together if r.seed == 2])
    merged = merge_reports([a, b], tmp_path / "ab")
    whole = Report.read(_write(tmp_path / "whole", together))
    assert merged.seeds == (0, 1, 2)
    assert [(r.arch, r.seed) for r in merged.runs] == [(r.arch, r.seed) for r in whole.runs]
    assert _vs_dense(merged) == _vs_dense(whole)
    assert _vs_dense(merged).startswith("above")
    assert _markdown_tables(merged.markdown())[0] == _markdown_tables(whole.markdown())[0]
    saved = json.loads((tmp_path / "ab" / "report.json").read_text())
    assert saved["config"]["merged_from"] == [a.as_posix(), b.as_posix()]
    assert all("interp.lift_pooled_boot" in r["interp"] for r in saved["runs"])


def test_a_run_in_two_reports_counts_once_and_must_agree(tmp_path):
    """The same run scored twice (other timings and places) is one run of the merged
    report; one whose scores differ in one key is refused, naming the key: not
    credited as a seed more, nor silently replaced."""
    dense0 = _run("dense", 0, 0.0)
    again = _run("dense", 0, 0.0, train_seconds=99.0, analysis_seconds=5.0)
    a = _write(tmp_path / "a", [dense0, _run("moe", 0, 0.03)])
    b = _write(tmp_path / "b", [again, _run("moe", 1, 0.03), _run("dense", 1, 0.0)])
    merged = merge_reports([a, b], tmp_path / "ab")
    assert sorted((r.arch, r.seed) for r in merged.runs) == [
        ("dense", 0), ("dense", 1), ("moe", 0), ("moe", 1)
    ]  # fmt: skip
    assert next(r for r in merged.runs if (r.arch, r.seed) == ("dense", 0)).train_seconds == 0.0

    moved = RunResult.from_json({**dense0.to_json(), "capability": {**dense0.capability, "val_loss": 3.5}})  # fmt: skip
    c = _write(tmp_path / "c", [moved, _run("moe", 1, 0.03)])
    with pytest.raises(MergeError, match=r"dense at seed 0 differs from .*a/report.json's at capability.val_loss"):  # fmt: skip
        merge_reports([a, c], tmp_path / "ac")
    assert not (tmp_path / "ac").exists()


def test_reports_scored_differently_are_refused(tmp_path):
    """Another analysis_examples, other run overrides, another config for a shared
    architecture: one line naming the key and both reports. No dense, one report, or
    --out a report's own folder: refused before anything is written."""
    a = _write(tmp_path / "a", [_run("dense", 0, 0.0), _run("moe", 0, 0.03)])
    cases = {
        "analysis_examples": _write(tmp_path / "b", [_run("dense", 1, 0.0)], analysis_examples=32),
        "overrides": _write(tmp_path / "c", [_run("dense", 1, 0.0)], overrides=["model.d_model=128"]),
        "architectures.moe": _write(
            tmp_path / "d", [_run("dense", 1, 0.0), _run("moe", 1, 0.03)],
            architectures={"dense": "configs/dense.yaml", "moe": "configs/moe_relu.yaml"},
        ),
    }  # fmt: skip
    for key, other in cases.items():
        with pytest.raises(MergeError, match=key.replace(".", r"\.")) as e:
            merge_reports([a, other], tmp_path / "out")
        assert str(other) in str(e.value) and "\n" not in str(e.value)
    moe_only = _write(
        tmp_path / "e", [_run("moe", 1, 0.03)], architectures={"moe": "configs/moe.yaml"}
    )
    also_moe = _write(
        tmp_path / "f", [_run("moe", 2, 0.03)], architectures={"moe": "configs/moe.yaml"}
    )
    with pytest.raises(MergeError, match="dense baseline"):
        merge_reports([moe_only, also_moe], tmp_path / "out")
    with pytest.raises(MergeError, match="is in --out"):
        merge_reports([a, moe_only], tmp_path / "a")
    with pytest.raises(ValueError, match="at least two"):
        merge_reports([a], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_micro_task_scores_are_kept_only_where_every_report_has_them(tmp_path):
    """Runs scored with the micro-task circuits beside runs scored without: merged
    without (microcircuits false), those keys dropped, the twin's included, every
    other score kept. Not dropped where every report has them."""
    assert is_microcircuit_key("interp.microcircuit.def_colon.nodes")
    assert is_microcircuit_key("baselines.init.interp.microcircuit_tasks")
    assert is_microcircuit_key("interp.nonsense_ratio")
    assert not is_microcircuit_key("interp.lift_pooled")
    task = {"learned": True, "nodes": 4, "nodes_fit": 4, "total_units": 64, "fraction": 0.1,
            "edges": 9, "faithfulness_heldout": 0.9, "accuracy_heldout": 0.8, "accuracy_clean": 0.9,
            "random_faithfulness": 0.1, "random_faithfulness_max": 0.2, "same_heads_faithfulness": 0.3,
            "same_heads_faithfulness_max": 0.4, "cpr": 0.9, "cmd": 0.1, "nonsense_nodes": 40,
            "zero_ablation_nodes": 8, "task_means_nodes": 6}  # fmt: skip
    assert all(is_microcircuit_key(k) for k in summarise({"close_bracket": task}))
    with_mc = [_run("dense", 0, 0.0, micro=True), _run("moe", 0, 0.03, micro=True)]
    a = _write(tmp_path / "a", with_mc, microcircuits=True)
    b = _write(tmp_path / "b", [_run("dense", 1, 0.0), _run("moe", 1, 0.03)])
    merged = merge_reports([a, b], tmp_path / "ab")
    assert merged.config["microcircuits"] is False
    for r in merged.runs:
        assert not any(is_microcircuit_key(k) for k in r.interp)
        assert "interp.lift_pooled_boot" in r.interp
    c = _write(tmp_path / "c", [_run("dense", 1, 0.0, micro=True)], microcircuits=True)
    both = merge_reports([a, c], tmp_path / "ac")
    assert both.config["microcircuits"] is True
    assert all(r.interp["interp.microcircuit_nodes_gmean"] == 12.0 for r in both.runs)


def test_merge_on_the_command_line(tmp_path, capsys):
    a = _write(tmp_path / "a", [_run("dense", 0, 0.0), _run("moe", 0, 0.03)])
    b = _write(tmp_path / "b", [_run("dense", 1, 0.0), _run("moe", 1, 0.03)])
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    out = capsys.readouterr().out
    assert "merged runs (dense 2, moe 2) at seeds [0, 1]" in out
    assert (tmp_path / "ab" / "report.md").is_file() and (tmp_path / "ab" / "report.html").is_file()
    c = _write(tmp_path / "c", [_run("dense", 2, 0.0)], analysis_examples=8)
    assert main(["merge", str(a), str(c), "--out", str(tmp_path / "ac")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "analysis_examples" in err
    assert (
        main(["merge", str(a), str(tmp_path / "nothing.json"), "--out", str(tmp_path / "x")]) == 1
    )
    assert "nothing.json" in capsys.readouterr().err


def test_a_post_hoc_route_in_two_reports_counts_once_and_must_agree(tmp_path):
    """The post-hoc route of one dense run in two reports: kept once where its scores
    agree (its wall-clock times may not), refused where a score differs."""
    from glassbox.results import PostHocResult

    def route(coverage: float, seconds: float) -> PostHocResult:
        return PostHocResult("dense", 0, 10, {"interp.coverage": coverage, "fit_seconds": seconds,
                                              "cost_ratio": seconds / 2})  # fmt: skip

    def report(folder: str, r: PostHocResult, seed: int) -> Path:
        runs = (_run("dense", 0, 0.0), _run("moe", seed, 0.1))
        seeds = tuple(sorted({0, seed}))
        cfg = {
            **CONFIG,
            "architectures": {"dense": "d.yaml", "moe": "m.yaml"},
            "seeds": list(seeds),
        }
        Report(out_dir=tmp_path / folder, seeds=seeds, config=cfg, runs=runs, posthoc=(r,)).write()  # fmt: skip
        return tmp_path / folder / "report.json"

    a, b = report("a", route(0.4, 10.0), 0), report("b", route(0.4, 12.0), 1)
    merged = merge_reports([a, b], tmp_path / "ab")
    assert [(p.arch, p.seed, p.scores["fit_seconds"]) for p in merged.posthoc] == [
        ("dense", 0, 10.0)
    ]
    c = report("c", route(0.5, 10.0), 1)
    with pytest.raises(MergeError, match="post-hoc route of dense at seed 0 differs"):
        merge_reports([a, c], tmp_path / "ac")


def test_some_kinds_of_a_report(tmp_path):
    """`path:kind,kind` takes those kinds' runs alone: a dense run scored again with
    other scores (trained again elsewhere) is left out instead of refused; a kind the
    report does not have is one line naming it."""
    a = _write(tmp_path / "a", [_run("dense", 0, 0.0), _run("dense", 1, 0.0), _run("moe", 0, 0.1)])
    other_dense = _run("dense", 1, 0.01)
    b = _write(tmp_path / "b", [other_dense, _run("moe", 1, 0.1)])
    with pytest.raises(MergeError, match="dense at seed 1 differs"):
        merge_reports([a, b], tmp_path / "ab")
    merged = merge_reports([a, f"{b}:moe"], tmp_path / "ab")
    assert sorted((r.arch, r.seed) for r in merged.runs) == [
        ("dense", 0), ("dense", 1), ("moe", 0), ("moe", 1)
    ]  # fmt: skip
    kept = next(r for r in merged.runs if (r.arch, r.seed) == ("dense", 1))
    assert kept.interp["interp.lift_pooled"] != other_dense.interp["interp.lift_pooled"]
    assert merged.config["merged_from"][1] == f"{b.as_posix()}:moe"
    with pytest.raises(MergeError, match="has no architecture transcoder"):
        merge_reports([a, f"{b}:transcoder"], tmp_path / "ac")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        merge_reports([a, f"{tmp_path / 'nothing.json'}:moe"], tmp_path / "ac")


def test_a_merged_report_says_each_kinds_seeds(tmp_path):
    """Kinds merged with other seeds: the spread is over each kind's own seeds, and the
    report says which; a report whose kinds share their seeds says them once."""
    a = _write(tmp_path / "a", [_run("dense", s, 0.0) for s in (0, 1, 2)] + [_run("moe", 0, 0.1)])
    b = _write(tmp_path / "b", [_run("dense", 1, 0.0), _run("moe", 1, 0.1)])
    text = merge_reports([a, b], tmp_path / "ab").markdown()
    assert "over each kind's seeds (dense: 0, 1, 2; moe: 0, 1; one seed: no spread)" in text
    together = merge_reports([a, f"{b}:moe", _write(tmp_path / "c", [_run("moe", 2, 0.1), _run("dense", 0, 0.0)])], tmp_path / "abc")  # fmt: skip
    assert "over seeds [0, 1, 2]" in together.markdown()


def test_a_merged_report_merges_again_as_its_sources_would(tmp_path):
    """A seed more joins a merged report as it would have joined the reports it was
    merged from: the same runs, the same decisions, the same seed-by-seed table; the
    new merge records its own sources (the merged report among them) and what that
    report was merged from."""
    a = _write(tmp_path / "a", [_run(k, 0, LEADS[k]) for k in LEADS])
    b = _write(tmp_path / "b", [_run(k, 1, LEADS[k]) for k in LEADS])
    c = _write(tmp_path / "c", [_run("dense", 2, 0.01), _run("moe", 2, 0.1)])
    merge_reports([a, b], tmp_path / "ab")
    again = merge_reports([tmp_path / "ab" / "report.json", f"{c}:moe"], tmp_path / "ab_c")
    at_once = merge_reports([a, b, f"{c}:moe"], tmp_path / "abc")
    assert [(r.arch, r.seed) for r in again.runs] == [(r.arch, r.seed) for r in at_once.runs]
    assert sorted((r.arch, r.seed) for r in again.runs) == [
        ("dense", 0), ("dense", 1), ("moe", 0), ("moe", 1), ("moe", 2)
    ]  # fmt: skip
    assert _vs_dense(again) == _vs_dense(at_once)
    assert again.vs_dense_by_seed().rows == at_once.vs_dense_by_seed().rows
    ab = (tmp_path / "ab" / "report.json").as_posix()
    assert again.config["merged_from"] == [ab, f"{c.as_posix()}:moe"]
    # the merged source's own sources are kept, so the chain survives a merge more
    assert again.config["merged_before"] == {ab: {"merged_from": [a.as_posix(), b.as_posix()]}}
    assert "merged_before" not in at_once.config
