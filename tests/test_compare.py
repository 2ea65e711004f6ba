"""The gap report: aggregation with known answers, the frontier, and a tiny end-to-end
compare that trains, analyses, writes the report and then reuses its checkpoints."""

from __future__ import annotations

import json
import statistics

import pytest

from glassbox.analysis.intervals import paired_interval
from glassbox.archs.config import ConfigError
from glassbox.archs.errors import GlassboxError
from glassbox.cli import main
from glassbox.compare import compare, gap_percent, load_compare_config, plan_runs
from glassbox.frontier import pareto_front
from glassbox.metrics import POSTHOC
from glassbox.report import Report
from glassbox.results import RunResult, aggregate, capability_values
from glassbox.scoring import add_replicates


def _row(arch, seed, loss, acc, cov, interp=None, tools=None, steps=None):
    capability = {
        "val_loss": loss, "mean_accuracy": acc, "mean_exact_match": acc / 2, "ood_accuracy": None,
        "skills.copy.accuracy": acc, "params.active": 10, "params.total": 20,
        "train.tokens": 100, "train.flops": 1e6, "train.steps": steps,
    }  # fmt: skip
    return RunResult(
        arch, seed, f"runs/{arch}-seed{seed}", capability,
        interp={"interp.coverage": cov, **(interp or {})}, tools=tools,
    )  # fmt: skip


def test_aggregate_means_spread_and_gap():
    rows = [
        _row("dense", 0, 1.0, 0.8, 0.3),
        _row("dense", 1, 2.0, 0.6, 0.5),
        _row("moe", 0, 3.0, 0.7, 0.9),
    ]
    agg = aggregate(rows)
    assert agg["dense"]["val_loss"]["mean"] == pytest.approx(1.5)
    assert agg["dense"]["val_loss"]["std"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    assert agg["dense"]["interp.coverage"]["mean"] == pytest.approx(0.4)
    assert agg["moe"]["val_loss"]["std"] == 0.0 and agg["moe"]["val_loss"]["n"] == 1
    assert agg["dense"]["ood_accuracy"] is None
    assert gap_percent(
        agg["moe"]["val_loss"]["mean"], agg["dense"]["val_loss"]["mean"]
    ) == pytest.approx(100.0)
    assert gap_percent(0.6, 0.8) == pytest.approx(-25.0)


def test_pareto_front():
    pts = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.5, 0.2)]
    assert pareto_front(pts) == [(0.1, 0.9), (0.5, 0.5), (0.9, 0.1)]


def test_compare_config_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("architectures: {moe: configs/moe.yaml}\n")
    with pytest.raises(ConfigError, match="dense"):
        load_compare_config(p)
    p.write_text("seeds: []\narchitectures: {dense: configs/dense.yaml}\n")
    with pytest.raises(ConfigError, match="seed"):
        load_compare_config(p)
    p.write_text("seedz: [0]\n")
    with pytest.raises(ConfigError, match="seedz"):
        load_compare_config(p)
    cc = load_compare_config("configs/compare.yaml", ["seeds=[3]", "trainer.max_steps=11"])
    assert cc.seeds == [3] and cc.overrides[-1] == "trainer.max_steps=11"


@pytest.mark.slow
def test_tiny_compare_end_to_end(tmp_path):
    from tests.test_training import FAST

    args = [
        f"out_dir={tmp_path / 'report'}",
        "seeds=[0]",
        "architectures={dense: configs/dense.yaml, transcoder: configs/transcoder.yaml}",
        "analysis_examples=48",
        "posthoc.steps=10",
        "posthoc.d_latent=128",
        *FAST,
        f"data.cache_dir={tmp_path / 'data'}",
        "trainer.max_steps=12",
        "optim.warmup_steps=2",
        "model.ffn.transcoder.d_latent=128",
        "model.ffn.transcoder.k=16",
    ]
    cc = load_compare_config("configs/compare.yaml", args)
    report = compare(cc)
    text = report.path.read_text()
    assert text.startswith("# What interpretability costs")
    assert "| dense |" in text and "| transcoder |" in text and "post-hoc" in text
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    runs = {r["arch"]: r for r in data["runs"]}
    assert 0.0 <= runs["transcoder"]["interp"]["interp.coverage"] <= 1.0
    assert runs["transcoder"]["interp"]["interp.l0"] == pytest.approx(16.0)
    assert runs["dense"]["posthoc"]["cost"]["ratio"] > 0
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 0
    # kinds at one seed against dense: the paired interval of their saved replicates
    interp = {r.arch: r.interp for r in report.runs}
    paired = paired_interval(
        interp["transcoder"]["interp.lift_pooled_boot"], interp["dense"]["interp.lift_pooled_boot"]
    )
    assert paired is not None and report.vs_dense("transcoder", "interp.lift_pooled") == paired
    # the post-hoc latents read the dense run's examples too: paired with its neurons
    route, key = report.posthoc[0].values(), "interp.coverage_matched"
    post = paired_interval(route[f"{key}_boot"], interp["dense"][f"{key}_boot"])
    (m,) = [m for m in report.section(POSTHOC) if m.key == key]
    column = report.posthoc_versus().headers.index(m.header)
    cell = dict(report.posthoc_versus().rows)["post-hoc − dense"][column]
    assert post is not None and cell.endswith(f"({m.format_diff(route[key] - interp['dense'][key], post)})")  # fmt: skip
    # a run scored before the replicates were kept gets them, checked against its scores
    row = tmp_path / "report/runs/transcoder-seed0/analysis/row.json"
    saved = json.loads(row.read_text())
    boots = {k: v for k, v in saved["result"]["interp"].items() if k.endswith("_boot")}
    scores = [f"interp.{k}" for k in ("lift_pooled", "coverage_matched", "info_beyond_token")]
    controls = [
        "baselines.random.interp.lift_pooled",
        "baselines.random.interp.coverage_matched",
        "baselines.shuffled.interp.info_beyond_token",
    ]
    expected = scores + [f"baselines.init.{k}" for k in scores] + controls
    assert set(boots) == {f"{k}_boot" for k in expected}
    older = {k: v for k, v in saved["result"]["interp"].items() if k not in boots}
    row.write_text(json.dumps({**saved, "result": {**saved["result"], "interp": older}}))
    (run,) = [r for r in plan_runs(cc, tmp_path / "report") if r.arch == "transcoder"]
    assert add_replicates(run, cc) == sorted(boots)
    assert json.loads(row.read_text()) == saved and add_replicates(run, cc) == []
    tampered = {**older, "interp.lift_pooled": older["interp.lift_pooled"] + 0.01}
    row.write_text(json.dumps({**saved, "result": {**saved["result"], "interp": tampered}}))
    with pytest.raises(GlassboxError, match="interp.lift_pooled computed again"):
        add_replicates(run, cc)
    # `glassbox compare --replicates` adds them, then reports: paired again
    row.write_text(json.dumps({**saved, "result": {**saved["result"], "interp": older}}))
    assert main(["compare", "configs/compare.yaml", *args, "--replicates"]) == 0
    assert json.loads(row.read_text()) == saved
    assert Report.read(report.path.with_suffix(".json")).vs_dense("transcoder", "interp.lift_pooled") == paired  # fmt: skip
    # a second compare loads the exported checkpoints instead of training again
    again = compare(cc)
    assert again.path == report.path and not any(r.trained_now for r in again.runs)
    assert [r.key for r in again.runs] == [r.key for r in report.runs]
    # other analysis settings: the checkpoints are reused, the scores are not
    changed = compare(load_compare_config("configs/compare.yaml", [*args, "analysis_examples=40", "posthoc.steps=5"]))  # fmt: skip
    assert not any(r.trained_now for r in changed.runs)
    assert all(a.key != b.key for a, b in zip(changed.runs, report.runs))
    assert changed.posthoc[0].steps == 5 and changed.posthoc[0].key != report.posthoc[0].key
    saved = json.loads((tmp_path / "report/runs/dense-seed0/analysis/posthoc.json").read_text())
    assert saved["key"] == changed.posthoc[0].key and "(5 steps)" in changed.path.read_text()


def _tool_rows():
    dense = [
        _row("dense", s, 1.0 + s, 0.5, 0.3, steps=600,
             tools={"tools.exact_match": 0.2, "tools.addition_2x": 0.0})
        for s in (0, 1)
    ]  # fmt: skip
    tool = [
        _row("tool", s, 0.8, 0.9, 0.2, steps=600, interp={"interp.tool_reliance": 0.96},
             tools={"tools.exact_match": 1.0, "tools.addition_2x": 0.0})
        for s in (0, 1)
    ]  # fmt: skip
    return dense + tool


def _report(tmp_path, runs, **kw):
    return Report(out_dir=tmp_path, seeds=(0, 1), config={}, runs=tuple(runs), **kw)


def _cells(text: str, label: str) -> list[str]:
    """The cells of the first table row of report.md labelled `label`."""
    line = next(row for row in text.splitlines() if row.startswith(f"| {label} |"))
    return [c.strip() for c in line.split("|")[2:-1]]


def test_report_tables_from_constructed_rows(tmp_path):
    text = _report(tmp_path, _tool_rows()).write().read_text()
    assert "| dense | 1.500 ± 0.707 | +0.0% | 50.0 ± 0.0 | +0.0% |" in text
    assert "| tool | 0.800 ± 0.000 | -46.7% | 90.0 ± 0.0 | +80.0% |" in text
    assert "| tool | 100.0 ± 0.0 | – | 0.0 ± 0.0 |" in text  # the tool-calling table
    assert "96.0 ± 0.0 |" in text  # reliance
    assert "600 optimiser steps" in text
    assert (tmp_path / "pareto.png").is_file() and json.loads(
        (tmp_path / "report.json").read_text()
    )["runs"]


@pytest.mark.parametrize(
    "path",
    ["configs/compare.yaml", "configs/compare_gpu.yaml", "configs/compare_long.yaml",
     "configs/compare_matched_kinds.yaml"],
)  # fmt: skip
def test_shipped_compare_configs_load_every_run(path):
    """Every architecture's run config with the compare's overrides is valid, and the
    configs keep active parameters matched to dense within 2% (the routers are the
    difference)."""
    import dataclasses

    from glassbox import archs
    from glassbox.compare import check_runs, run_overrides
    from glassbox.training.config import load_config

    cc = load_compare_config(path)
    check_runs(cc)
    active = {}
    for arch, p in cc.architectures.items():
        cfg = load_config(p, run_overrides(cc, arch))
        model = archs.Transformer(dataclasses.replace(cfg.model, vocab_size=256))
        active[arch] = model.num_params(active=True)
    for arch in ("moe", "moe_relu"):
        assert abs(active[arch] - active["dense"]) / active["dense"] < 0.02, active


def test_registry_drives_the_columns(tmp_path):
    """A registry entry is a column of report.md and a key of report.json; without
    the entry, neither."""
    import dataclasses

    from glassbox.metrics import INTERPRETABILITY, METRICS, Metric

    runs = [_row(a, s, 1.0, 0.5, 0.3, interp={"interp.novelty": 0.25 + s}) for a in ("dense", "moe") for s in (0, 1)]  # fmt: skip
    new = Metric("interp.novelty", "novelty", "a made-up score", section=INTERPRETABILITY)
    report = _report(tmp_path / "with", runs, metrics=(*METRICS.values(), new))
    report.write()
    text = report.path.read_text()
    assert "## Other scores" in text  # a key no topic names still gets a table
    assert _cells(text, "score") == ["dense", "moe"]  # a column per architecture
    assert _cells(text, "coverage") == ["0.300 ± 0.000"] * 2
    assert _cells(text, "novelty") == ["0.750 ± 0.707"] * 2  # the new row, both columns
    assert "- **novelty**: a made-up score." in text
    data = json.loads((tmp_path / "with" / "report.json").read_text())
    assert data["architectures"]["moe"]["interp"]["interp.novelty"]["mean"] == pytest.approx(0.75)

    less = tuple(m for m in METRICS.values() if m.key != "interp.purity")
    report = _report(tmp_path / "without", runs, metrics=less)
    report.write()
    text = report.path.read_text()
    assert "purity" not in text and "novelty" not in text
    arch = json.loads((tmp_path / "without" / "report.json").read_text())["architectures"]
    assert (
        "interp.purity" not in arch["moe"]["interp"]
        and "interp.novelty" not in arch["moe"]["interp"]
    )
    # a per-skill entry expands to one column per skill the runs hold, a baseline sits beside
    per_skill = Metric("skills.{skill}.accuracy", "{skill}", section=INTERPRETABILITY,
                       baselines=("init",))  # fmt: skip
    report = _report(tmp_path / "skill", runs, metrics=(*METRICS.values(), per_skill))
    headers = [m.header for m in report.section(INTERPRETABILITY)]
    assert headers[-2:] == ["copy", "copy (init)"]
    rows = [t.rows for t in report.topic_tables() if t.title == "Other scores"][0]
    assert [label for label, _ in rows] == ["copy"]  # a row no run has a value for is left out
    assert dataclasses.replace(per_skill).placeholder == "skill"


def test_replicates_leave_runs_not_yet_scored_to_the_compare(tmp_path, capsys):
    """`glassbox compare --replicates` on a compare nothing of which is trained yet says
    so per run and adds nothing (the compare then scores them, replicates and all)."""
    from glassbox.compare import add_replicates_to_runs

    cc = load_compare_config(
        "configs/compare.yaml", [f"out_dir={tmp_path}", "seeds=[0]",
                                 "architectures={dense: configs/dense.yaml}"],
    )  # fmt: skip
    add_replicates_to_runs(cc)
    assert capsys.readouterr().out == "replicates: dense-seed0: not scored yet (the compare scores it with them)\n"  # fmt: skip
    assert not (tmp_path / "runs" / "dense-seed0" / "analysis" / "row.json").exists()


def test_score_keys_follow_what_changes_the_scores(tmp_path):
    """A saved score is reused only under the same key: analysis_examples changes a
    run's scores and the post-hoc route's, posthoc.steps only the post-hoc route's, and
    a retrained checkpoint (new metrics.json) both."""
    from glassbox.compare import plan_runs
    from glassbox.scoring import posthoc_key, score_key

    def keys(*overrides):
        cc = load_compare_config(
            "configs/compare.yaml",
            ["seeds=[0]", "architectures={dense: configs/dense.yaml}", *overrides],
        )
        (run,) = plan_runs(cc, tmp_path)
        run.export.mkdir(parents=True, exist_ok=True)
        if not (run.export / "metrics.json").is_file():
            (run.export / "metrics.json").write_text('{"val_loss": 1.0}')
        return score_key(run, cc), posthoc_key(run, None, cc)

    base = keys()
    assert keys() == base
    examples = keys("analysis_examples=100")
    assert examples[0] != base[0] and examples[1] != base[1]
    steps = keys("posthoc.steps=7")
    assert steps[0] == base[0] and steps[1] != base[1]
    assert keys("trainer.max_steps=601") != base  # another run config
    (tmp_path / "runs" / "dense-seed0" / "checkpoint" / "metrics.json").write_text(
        '{"val_loss": 2}'
    )
    assert keys() != base  # retrained: a new checkpoint


def test_scores_that_did_not_move_with_learning_are_marked(tmp_path):
    """The trust rule: a score whose trained value lies within the seed spread
    (max(std, 0.02)) of the untrained twin's is marked not informative, in the table
    and in words; one that moved is not; the report.json lists the marked keys."""
    from glassbox.table import NOT_INFORMATIVE

    def interp(seed):
        return {
            "interp.coverage_lift": 0.20 + 0.01 * seed,
            "baselines.init.interp.coverage_lift": -0.50 - 0.01 * seed,
            "baselines.init.interp.coverage": 0.36 + 0.002 * seed,  # coverage: 0.36, 0.38
            "baselines.token.interp.coverage": 0.45,
            "interp.skill_circuit_size.copy": 12 + seed,
            "interp.skill_circuit_fraction.copy": 0.1,
        }

    runs = [_row("dense", s, 1.0, 0.5, 0.36 + 0.02 * s, interp=interp(s)) for s in (0, 1)]
    report = _report(tmp_path, runs)
    report.write()
    text = report.path.read_text()
    assert _cells(text, "coverage") == [f"0.370 ± 0.014 {NOT_INFORMATIVE}"]
    assert _cells(text, "coverage (init)") == ["0.361 ± 0.001"]
    assert _cells(text, "coverage (token)") == ["0.450 ± 0.000"]
    assert _cells(text, "contextual lift") == ["0.205 ± 0.007"]  # moved: not marked
    # the headline: a headline score beside its twin
    from dataclasses import replace

    from glassbox.metrics import METRICS

    heads = ("mean_accuracy", "interp.coverage_lift")
    ms = tuple(replace(m, headline=m.key in heads) for m in METRICS.values())
    headline = _report(tmp_path / "h", runs, metrics=ms).headline()
    assert headline.headers == ["answer accuracy", "gap", "contextual lift"]
    assert headline.rows[0][1][2] == "0.205 ± 0.007 (twin -0.505)"
    assert "Not informative at this budget" in text and "dense: coverage." in text
    assert _cells(text, "copy whole-skill size") == ["12 ± 1"]
    assert _cells(text, "copy whole-skill fraction") == [
        "0.100 ± 0.000"
    ]  # the per-skill circuit table
    data = json.loads((tmp_path / "report.json").read_text())["architectures"]["dense"]
    assert data["not_informative"] == ["interp.coverage"]
    assert data["baselines"]["baselines.init.interp.coverage_lift"]["mean"] == pytest.approx(-0.505)
    assert data["interp"]["interp.skill_circuit_size.copy"]["mean"] == pytest.approx(12.5)


def _tiny_plan(tmp_path, *extra: str, archs: str = "{dense: configs/dense.yaml}", seeds="[0, 1]"):
    from glassbox.compare import plan_runs
    from tests.test_training import FAST

    cc = load_compare_config(
        "configs/compare.yaml",
        [
            f"out_dir={tmp_path / 'report'}",
            f"seeds={seeds}",
            f"architectures={archs}",
            *FAST,
            f"data.cache_dir={tmp_path / 'data'}",
            "trainer.max_steps=3",
            "trainer.val_every_n_steps=3",
            "optim.warmup_steps=1",
            *extra,
        ],
    )
    return cc, plan_runs(cc, tmp_path / "report")


def test_jobs_config_and_threads_per_job(monkeypatch):
    from glassbox.scheduling import threads_per_job
    from glassbox.training.config import load_config

    with pytest.raises(ConfigError, match="jobs=0"):
        load_compare_config("configs/compare.yaml", ["jobs=0"])
    assert load_compare_config("configs/compare_long.yaml").jobs == 2
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cpu = load_config("configs/dense.yaml", ["trainer.cpu_threads=0"])
    assert threads_per_job(cpu, 2) == 8 and threads_per_job(cpu, 32) == 1  # the cores shared out
    one = load_config("configs/dense.yaml")  # trainer.cpu_threads=1: never more
    assert threads_per_job(one, 2) == 1
    gpu = load_config("configs/dense.yaml", ["trainer.accelerator=gpu"])
    assert threads_per_job(gpu, 2) is None  # a GPU run keeps its own setting


def test_scoring_starts_with_the_longest_jobs(tmp_path):
    """The shipped compare's jobs are ordered by the weights their checkpoints store,
    largest first (the weight-sparse model, then the MoEs, the dense-sized ones last,
    the post-hoc route at half of dense's), so two workers end close together; a job
    whose result is saved is not in the list."""
    from glassbox.compare import plan_runs
    from glassbox.scheduling import expected_cost, scoring_todo

    cc = load_compare_config("configs/compare_shipped.yaml")
    plan = plan_runs(cc, tmp_path / "report")
    todo = scoring_todo(plan, cc)
    costs = [expected_cost(job) for job in todo]
    assert costs == sorted(costs, reverse=True) and len(todo) == len(plan) + 1
    assert todo[0].run.arch == "weight_sparse" and todo[-1].posthoc
    assert {todo[1].run.arch, todo[2].run.arch} == {"moe", "moe_relu"}
    dense = next(job for job in todo if job.run.arch == "dense")
    assert expected_cost(todo[-1]) * 2 == expected_cost(dense)


def test_training_starts_with_the_costliest_runs(tmp_path, monkeypatch):
    """The runs to train are ordered by their training FLOPs, costliest first, so the
    slowest does not start after the others: weight_sparse (twice as wide, its matmuls
    dense: 3.6x dense's FLOPs a token at rung M, where on 2 cores it trained for 58
    minutes against 11 to 24) first, each kind's seeds in order, the transcoder (fewer
    active parameters) last; twice the steps cost twice as much; a current run is not
    trained."""
    from glassbox.ladder import LADDER_CONFIG, load_ladder_config, rung_config, rung_params
    from glassbox.runs import Run
    from glassbox.scheduling import training_cost, training_todo

    plan = plan_runs(load_compare_config("configs/compare.yaml"), tmp_path / "report")
    todo = training_todo(plan)
    assert [r.name for r in todo[:2]] == ["weight_sparse-seed0", "weight_sparse-seed1"]
    assert [r.arch for r in todo[-2:]] == ["transcoder", "transcoder"] and len(todo) == len(plan)
    costs = [training_cost(r) for r in todo]
    assert costs == sorted(costs, reverse=True)
    _, (short,) = _tiny_plan(tmp_path / "a", seeds="[0]")
    _, (long,) = _tiny_plan(tmp_path / "b", "trainer.max_steps=6", seeds="[0]")
    assert training_cost(long) == 2 * training_cost(short)

    cc = rung_config(load_ladder_config(str(LADDER_CONFIG)), "M", "cpu", [])
    m = {r.arch: r for r in plan_runs(cc, tmp_path / "M")}
    flops = rung_params(cc)  # the ladder's own count (glassbox ladder --params)
    ratio = training_cost(m["weight_sparse"]) / training_cost(m["dense"])
    assert ratio == pytest.approx(flops["weight_sparse"]["flops_per_token"] / flops["dense"]["flops_per_token"])  # fmt: skip
    assert 3.5 < ratio < 3.7
    monkeypatch.setattr(Run, "is_current", lambda run: run.arch == "weight_sparse")
    assert [r.arch for r in training_todo(list(m.values()))] == ["moe", "dense", "transcoder"]


@pytest.mark.slow
def test_parallel_training_equals_training_in_process(tmp_path):
    """jobs=2 trains both seeds as separate processes, each logging to its run
    directory, and makes the same weights as training in this process; a second
    pass finds them current and trains nothing."""
    import torch

    from glassbox import archs
    from glassbox.compare import train_runs
    from glassbox.training.train import train

    cc, plan = _tiny_plan(tmp_path)
    train_runs(plan, jobs=2)
    assert all(run.trained_now and run.is_current() for run in plan)
    assert all("max_steps=3" in run.log.read_text() for run in plan)
    _, again = _tiny_plan(tmp_path)
    train_runs(again, jobs=2)
    assert not any(run.trained_now for run in again)
    here = train(_tiny_plan(tmp_path / "here", seeds="[1]")[1][0].cfg)
    a, b = archs.load_pretrained(plan[1].export), archs.load_pretrained(here)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_a_run_stopped_on_the_clock_is_current_only_under_a_clock(tmp_path):
    """trainer.max_seconds is not part of a run's identity (a time limit, like where it
    is written), but a run it stopped short of max_steps counts as trained only for a
    call with a time limit too (benchmarks/scale_gpu.sh's scoring); without one, it is
    trained again to its steps."""
    from glassbox.compare import train_runs

    _, (run,) = _tiny_plan(
        tmp_path, "trainer.max_steps=100000", "trainer.max_seconds=2", seeds="[0]"
    )
    train_runs([run], jobs=1)
    metrics = json.loads((run.export / "metrics.json").read_text())
    assert metrics["train"]["stopped"] == "max_seconds" and run.is_current()
    _, (limited,) = _tiny_plan(
        tmp_path, "trainer.max_steps=100000", "trainer.max_seconds=600", seeds="[0]"
    )
    _, (unlimited,) = _tiny_plan(tmp_path, "trainer.max_steps=100000", seeds="[0]")
    assert limited.config_key == unlimited.config_key == run.config_key
    assert limited.is_current() and not unlimited.is_current()
    _, (other,) = _tiny_plan(tmp_path, "trainer.max_steps=99999", seeds="[0]")
    assert other.config_key != run.config_key


def test_a_failed_parallel_run_fails_the_compare_in_one_line(tmp_path):
    """A run that fails inside `glassbox train` (here: examples longer than the
    model's context, found only once the data is built) stops the compare with one
    line naming the run and its log; the run beside it still finishes."""
    from glassbox.compare import train_runs

    cc, plan = _tiny_plan(
        tmp_path,
        "arch_overrides={short: [model.max_seq_len=4]}",
        archs="{dense: configs/dense.yaml, short: configs/dense.yaml}",
        seeds="[0]",
    )
    with pytest.raises(GlassboxError) as e:
        train_runs(plan, jobs=2)
    msg = str(e.value)
    log = tmp_path / "report" / "runs" / "short-seed0" / "train.log"
    assert "\n" not in msg and "short-seed0" in msg and str(log) in msg
    assert "max_seq_len" in msg  # the child's own one-line error, from its log
    dense, short = plan
    assert dense.is_current() and not short.is_current()


def test_scoring_never_trains(tmp_path, monkeypatch):
    """Scoring reads checkpoints: a run without one is one line naming the run, in this
    process and in a scoring worker (its job gets the run, not a plan to redo), and
    nothing is trained or written for it."""
    import pickle

    from glassbox.scheduling import ScoreJob, _score_job
    from glassbox.scoring import score_posthoc, score_run

    def no_training(cfg):
        raise AssertionError("scoring trained a run")

    monkeypatch.setattr("glassbox.runs.train", no_training)
    cc, (run,) = _tiny_plan(tmp_path, seeds="[0]")
    with pytest.raises(GlassboxError) as e:
        score_run(run, cc)
    msg = str(e.value)
    assert "\n" not in msg and "dense-seed0 has no checkpoint" in msg and str(run.export) in msg
    with pytest.raises(GlassboxError, match="dense-seed0 has no checkpoint"):
        score_posthoc(run, None, cc)
    job = pickle.loads(pickle.dumps(ScoreJob(run)))  # what a worker process gets
    error = _score_job(job, cc, threads=None)
    assert error == f"GlassboxError: {msg}"
    assert not run.run_dir.exists()


def test_active_params_count_only_nonzero_weights():
    """A weight-sparse model's pruned weights are zeros, not active parameters; an
    MoE's inactive experts are not active however many of its weights are non-zero."""
    sparse = {"params": {"total": 2_222_336, "active": 2_222_336, "nonzero": 586_560}}
    moe = {"params": {"total": 1_774_720, "active": 595_072, "nonzero": 1_774_720}}
    dense = {"params": {"total": 586_880, "active": 586_880, "nonzero": 586_880}}
    assert capability_values(sparse)["params.active"] == 586_560
    assert capability_values(moe)["params.active"] == 595_072
    assert capability_values(dense)["params.active"] == 586_880
    assert capability_values(sparse)["params.total"] == 2_222_336


def test_a_free_slot_trains_first_then_takes_the_longest_ready_scoring_job(tmp_path):
    """next_work: while a run waits to be trained, a free slot trains it (a trained run
    frees its scoring); then it takes the longest scoring job whose runs are trained,
    never one on a run still training (the post-hoc route reads dense and the
    transcoder both); with every job waiting on a training, nothing."""
    from glassbox.compare import plan_runs
    from glassbox.scheduling import expected_cost, next_work, scoring_jobs

    cc = load_compare_config("configs/compare_shipped.yaml")
    plan = plan_runs(cc, tmp_path / "report")
    jobs = scoring_jobs(plan, cc)
    by_name = {job.name: job for job in jobs}
    assert next_work(plan[2:], jobs, {r.name for r in plan[2:]}) is plan[2]
    assert next_work([], jobs, set()) is by_name["weight_sparse seed 0"]
    moe = next_work([], jobs, {"weight_sparse-seed0"})
    assert moe.run.arch in {"moe", "moe_relu"} and expected_cost(moe) > 0
    transcoder_training = next_work([], [by_name["dense seed 0"], jobs[-1]], {"transcoder-seed0"})
    assert jobs[-1].posthoc and transcoder_training is by_name["dense seed 0"]
    assert next_work([], [jobs[-1]], {"transcoder-seed0"}) is None
    assert next_work([], [jobs[-1]], {"dense-seed0"}) is None
    assert next_work([], [jobs[-1]], set()) is jobs[-1]


@pytest.mark.slow
def test_a_run_is_scored_while_another_still_trains(tmp_path, monkeypatch):
    """With two jobs at once, the run trained first is scored beside the run still
    training: the slow run's training here waits (up to five minutes) for the fast
    run's saved scores before it trains, and would find none if scoring waited for
    every training to end."""
    import time

    from glassbox.runs import Run

    cc, _ = _tiny_plan(
        tmp_path,
        "analysis_examples=24",
        "microcircuits=false",
        "posthoc.enabled=false",
        "jobs=2",
        archs="{dense: configs/dense.yaml, slow: configs/dense.yaml}",
        seeds="[0]",
    )
    fast_scores = tmp_path / "report" / "runs" / "dense-seed0" / "analysis" / "row.json"
    seen: list[bool] = []
    train = Run.train_in_subprocess

    def slow_train(run: Run, threads: int | None) -> int:
        if run.arch == "slow":
            deadline = time.monotonic() + 300
            while not fast_scores.is_file() and time.monotonic() < deadline:
                time.sleep(0.5)
            seen.append(fast_scores.is_file())
        return train(run, threads)

    monkeypatch.setattr(Run, "train_in_subprocess", slow_train)
    report = compare(cc)
    assert seen == [True]
    assert {r.arch for r in report.runs} == {"dense", "slow"}
    assert all(r.trained_now for r in report.runs)
