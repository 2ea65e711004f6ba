"""MFU on every device: the datasheet table matches the names GPUs report, a measured
matmul peak stands in elsewhere (closed form on a fake clock), and a run logs
train/mfu and writes train.flops_per_second and train.mfu to metrics.json."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import glassbox.training.flops as flops
from glassbox.training.config import load_config
from glassbox.training.flops import device_peak_flops, matmul_dtype, table_peak
from glassbox.training.train import train

T = 1e12


@pytest.mark.parametrize(
    "name, dtype, peak",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4 * T),
        ("NVIDIA H100 PCIe", "bf16", 756 * T),
        ("NVIDIA H100 NVL", "bf16", 835.5 * T),
        ("NVIDIA H200", "bf16", 989.4 * T),
        ("NVIDIA H200 NVL", "tf32", 417.5 * T),
        ("NVIDIA GH200 480GB", "fp32", 66.9 * T),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156 * T),
        ("NVIDIA A100 80GB PCIe", "bf16", 312 * T),
        ("NVIDIA L4", "bf16", 121 * T),
        ("NVIDIA L40S", "bf16", 362 * T),
        ("NVIDIA L40", "bf16", 181 * T),
        ("NVIDIA A10", "bf16", 125 * T),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2 * T),
        ("Tesla V100-SXM2-16GB", "fp16", 125 * T),
        ("Tesla V100-PCIE-32GB", "fp16", 112 * T),
        ("Tesla T4", "fp16", 65 * T),
    ],
)
def test_datasheet_table_matches_reported_names(name, dtype, peak):
    hit = table_peak(name, dtype)
    assert hit is not None and hit[0] == pytest.approx(peak)


@pytest.mark.parametrize(
    "name, dtype",
    [
        ("NVIDIA A10G", "bf16"),
        ("Tesla V100-SXM2-16GB", "bf16"),
        ("Tesla T4", "tf32"),
        ("NVIDIA B200", "bf16"),
    ],
)
def test_unknown_gpu_or_dtype_is_not_guessed(name, dtype):
    assert table_peak(name, dtype) is None


def test_matmul_dtype_of_lightning_precisions():
    assert matmul_dtype("bf16-mixed", "cuda") == "bf16"
    assert matmul_dtype("bf16-true", "cpu") == "bf16"
    assert matmul_dtype("16-mixed", "cuda") == "fp16"
    assert matmul_dtype("32-true", "cpu") == "fp32"
    was = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert matmul_dtype("32-true", "cuda") == "tf32"
        torch.set_float32_matmul_precision("highest")
        assert matmul_dtype("32-true", "cuda") == "fp32"
    finally:
        torch.set_float32_matmul_precision(was)


def test_measured_peak_is_2n3_over_the_best_time(monkeypatch):
    ticks = iter(
        [0.0, 1.0, 10.0, 10.5, 20.0, 20.25, 30.0, 30.5]
    )  # warm-up 1 s, then 0.5, 0.25, 0.5
    monkeypatch.setattr(flops.time, "perf_counter", lambda: next(ticks))
    assert flops.measure_matmul_peak(torch.device("cpu"), "fp32", n=64, reps=3) == 2 * 64**3 / 0.25


def test_device_peak_from_the_table_or_measured(monkeypatch):
    monkeypatch.setattr(flops.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_peak_flops(torch.device("cuda"), "bf16-mixed") == (
        989.4 * T,
        "datasheet H100/H200 SXM bf16",
    )
    asked = []
    monkeypatch.setattr(flops.torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10G")
    monkeypatch.setattr(
        flops, "measure_matmul_peak", lambda d, dt: asked.append((d.type, dt)) or 7e13
    )
    peak, source = device_peak_flops(torch.device("cuda"), "bf16-mixed")
    assert (peak, asked) == (7e13, [("cuda", "bf16")]) and "measured bf16" in source
    peak, source = device_peak_flops(torch.device("cpu"), "32-true")
    assert asked[-1] == ("cpu", "fp32") and "measured fp32" in source


def test_measured_cpu_peak_is_plausible():
    peak = flops.measure_matmul_peak(torch.device("cpu"), "fp32", n=128, reps=2)
    assert 1e8 < peak < 1e14  # between a slow core and far past any CPU


def test_a_run_logs_mfu_and_writes_it_to_metrics(tmp_path):
    cfg = load_config(
        "configs/dense.yaml",
        [
            "model.d_model=32",
            "model.ffn.d_ff=64",
            "model.max_seq_len=64",
            "data.mix={copy: 1, modadd: 0, reverse: 0, sort: 0, addition: 0, dyck: 0, facts: 0, ioi: 0}",
            "data.copy.max_len=5",
            "data.n_train=500",
            "data.n_val=50",
            "data.n_test=50",
            "data.n_ood=20",
            "data.batch_size=8",
            "trainer.max_steps=40",
            "trainer.log_every_n_steps=20",
            "trainer.val_every_n_steps=40",
            "trainer.limit_val_batches=1",
            "trainer.progress_bar=false",
            "trainer.loggers=[csv]",
            "optim.warmup_steps=5",
            "run.eval_max_batches=1",
            f"data.cache_dir={tmp_path / 'data'}",
            f"run.out_dir={tmp_path / 'run'}",
        ],
    )
    export = train(cfg)
    t = json.loads((export / "metrics.json").read_text())["train"]
    assert t["tokens_per_second"] > 0 and "measured fp32 matmul on cpu" in t["peak_source"]
    assert t["flops_per_second"] == pytest.approx(
        t["tokens_per_second"] * t["flops"] / t["tokens"], rel=1e-6
    )
    assert t["mfu"] == pytest.approx(t["flops_per_second"] / t["peak_flops"])
    assert 0 < t["mfu"] < 1
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        logged = [float(r["train/mfu"]) for r in csv.DictReader(f) if r.get("train/mfu")]
    assert len(logged) == 2 and all(0 < m < 1 and math.isfinite(m) for m in logged)
