"""The gap report: aggregation with known answers, the frontier, and a tiny end-to-end
compare that trains, analyses, writes the report and then reuses its checkpoints."""

from __future__ import annotations

import json
import statistics

import pytest

from glassbox.archs.config import ConfigError
from glassbox.compare import aggregate, compare, gap_percent, load_compare_config
from glassbox.report import pareto_front


def _row(arch, seed, loss, acc, cov):
    return {
        "arch": arch, "seed": seed, "val_loss": loss, "mean_accuracy": acc, "mean_exact_match": acc / 2,
        "ood_accuracy": None, "skills": {"copy": acc}, "params": {"active": 10, "total": 20},
        "train": {"tokens": 100, "flops": 1e6}, "interp": {"interp.coverage": cov},
    }  # fmt: skip


def test_aggregate_means_spread_and_gap():
    rows = [
        _row("dense", 0, 1.0, 0.8, 0.3),
        _row("dense", 1, 2.0, 0.6, 0.5),
        _row("moe", 0, 3.0, 0.7, 0.9),
    ]
    agg = aggregate(rows)
    assert agg["dense"]["val_loss"]["mean"] == pytest.approx(1.5)
    assert agg["dense"]["val_loss"]["std"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    assert agg["dense"]["interp"]["interp.coverage"]["mean"] == pytest.approx(0.4)
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
    ]
    cc = load_compare_config("configs/compare.yaml", args)
    report = compare(cc)
    text = report.read_text()
    assert text.startswith("# What interpretability costs")
    assert "| dense |" in text and "| transcoder |" in text and "post-hoc" in text
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    runs = {r["arch"]: r for r in data["runs"]}
    assert 0.0 <= runs["transcoder"]["interp"]["interp.coverage"] <= 1.0
    assert runs["transcoder"]["interp"]["interp.l0"] == pytest.approx(16.0)
    assert runs["dense"]["posthoc"]["cost"]["ratio"] > 0
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 0
    # a second compare loads the exported checkpoints instead of training again
    again = compare(cc)
    rows = json.loads((tmp_path / "report" / "rows.json").read_text())
    assert again == report and not any(r["trained_now"] for r in rows)


def test_report_tables_from_constructed_rows(tmp_path):
    from glassbox.compare import CompareConfig
    from glassbox.report import write_report

    dense = [_row("dense", s, 1.0 + s, 0.5, 0.3) for s in (0, 1)]
    tool = [_row("tool", s, 0.8, 0.9, 0.2) for s in (0, 1)]
    for r in tool:
        r["tools"] = {"tools.exact_match": 1.0, "tools.addition_2x": 0.0}
        r["interp"]["interp.tool_reliance"] = 0.96
    for r in dense:
        r["tools"] = {"tools.exact_match": 0.2, "tools.addition_2x": 0.0}
    rows = dense + tool
    for r in rows:
        r["train"]["steps"] = 600
    cc = CompareConfig(
        seeds=[0, 1], architectures={"dense": "configs/dense.yaml", "tool": "configs/tool.yaml"}
    )
    text = write_report(tmp_path, cc, rows, aggregate(rows)).read_text()
    assert "| dense | 1.500 ± 0.707 | +0.0% | 50.0 ± 0.0 | +0.0% |" in text
    assert "| tool | 0.800 ± 0.000 | -46.7% | 90.0 ± 0.0 | +80.0% |" in text
    assert "| tool | 100.0 ± 0.0 | – | 0.0 ± 0.0 |" in text  # the tool-calling table
    assert "96.0 ± 0.0 |" in text  # reliance
    assert "600 optimiser steps" in text
    assert (tmp_path / "pareto.png").is_file() and json.loads(
        (tmp_path / "report.json").read_text()
    )["runs"]


@pytest.mark.parametrize("path", ["configs/compare.yaml", "configs/compare_gpu.yaml"])
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
