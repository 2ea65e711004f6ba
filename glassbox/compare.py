"""`glassbox compare`: train (or load) every architecture at a matched budget over
several seeds, score capability and interpretability, write the gap report.

    report/
      report.md, report.json, pareto.png      the answer
      runs/<arch>-seed<s>/                      each run (glassbox train's run directory)
      runs/<arch>-seed<s>/analysis/             its plots and analysis.json

The budget: every run gets the same data, the same optimiser steps and batch size
(so the same training tokens), and the configs match active parameters per token
to the dense baseline (configs/model/*.yaml state how); the report prints both.
A run whose exported checkpoint exists is loaded, not retrained.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from glassbox.archs.config import ConfigError


@dataclass
class PostHocConfig:
    enabled: bool = True  # fit transcoders to the dense baseline's MLPs (the post-hoc route)
    steps: int = 300  # optimiser steps of each fit
    d_latent: int = 1024  # width, as the by-construction transcoder's
    k: int = 16  # TopK active latents


@dataclass
class CompareConfig:
    out_dir: str = "report"  # report.md, report.json, pareto.png and runs/
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one run per architecture and seed
    # architecture name -> its run config; `dense` is the baseline every gap is measured to
    architectures: dict[str, str] = field(default_factory=dict)
    # key=value overrides applied to every run: the matched budget (steps, batch, data)
    overrides: list[str] = field(default_factory=list)
    # architecture -> more overrides for it alone (sizes that must scale per kind)
    arch_overrides: dict[str, list[str]] = field(default_factory=dict)
    analysis_examples: int = 512  # held-out examples each interpretability score reads
    posthoc: PostHocConfig = field(default_factory=PostHocConfig)


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """The compare YAML plus key=value overrides. Keys of a run section (model.,
    data., optim., trainer., run.) are passed on to every run."""
    base = OmegaConf.structured(CompareConfig)
    run_keys = []
    try:
        cfg = OmegaConf.merge(base, OmegaConf.load(path))
        for item in overrides or []:
            if item.split("=", 1)[0].split(".")[0] in ("model", "data", "optim", "trainer", "run"):
                run_keys.append(item)
            elif "=" not in item:
                raise ConfigError(item, None, "overrides are key=value, e.g. seeds=[0]")
            else:  # replace, not merge: `architectures={dense: ...}` means only those
                key = item.split("=", 1)[0]
                OmegaConf.update(
                    cfg, key, OmegaConf.select(OmegaConf.from_dotlist([item]), key), merge=False
                )
        out: CompareConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise ConfigError(
            getattr(e, "full_key", "?") or "?", None, f"{str(e).splitlines()[0]} (in {path})"
        ) from None
    if "dense" not in out.architectures:
        raise ConfigError(
            "architectures", list(out.architectures), "must include the dense baseline"
        )
    if not out.seeds:
        raise ConfigError("seeds", out.seeds, "at least one seed")
    out.overrides = list(out.overrides) + run_keys
    return out


def run_overrides(cc: CompareConfig, arch: str) -> list[str]:
    """The overrides every run gets, then this architecture's own."""
    return [*cc.overrides, *cc.arch_overrides.get(arch, [])]


def check_runs(cc: CompareConfig) -> None:
    """Load every architecture's run config with its overrides, so a bad key fails
    before hours of training rather than in the middle."""
    from glassbox.training.config import load_config

    for arch, path in cc.architectures.items():
        load_config(path, run_overrides(cc, arch))


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def run_one(arch: str, config_path: str, seed: int, cc: CompareConfig, out: Path) -> dict[str, Any]:
    """Train (or load) one architecture at one seed and score it."""
    from glassbox import archs
    from glassbox.analysis.interp import interp_report
    from glassbox.training.config import load_config
    from glassbox.training.data import build_datasets
    from glassbox.training.train import train

    run_dir = out / "runs" / f"{arch}-seed{seed}"
    cfg = load_config(
        config_path,
        [
            *run_overrides(cc, arch),
            f"run.seed={seed}",
            f"run.name={arch}",
            f"run.out_dir={run_dir}",
        ],
    )
    export = run_dir / "checkpoint"
    saved = run_dir / "analysis" / "row.json"
    if (export / "metrics.json").is_file() and saved.is_file():
        # Trained and scored before: reuse (delete row.json to score it again).
        return {**json.loads(saved.read_text()), "trained_now": False}
    t0 = time.perf_counter()
    trained = not (export / "metrics.json").is_file()
    if trained:
        train(cfg)
    train_seconds = time.perf_counter() - t0
    model = archs.load_pretrained(export)
    metrics = json.loads((export / "metrics.json").read_text())
    suite = build_datasets(cfg.data)
    (run_dir / "analysis").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    interp = interp_report(
        model, suite, run_dir / "analysis", n_examples=cc.analysis_examples, seed=seed
    )
    analysis_seconds = time.perf_counter() - t0
    (run_dir / "analysis" / "analysis.json").write_text(json.dumps(interp, indent=2, default=str))
    tool_summary = None
    if _has_tool_skills(cfg):
        from glassbox.analysis.tools import tool_report

        t0 = time.perf_counter()
        tool_summary = tool_report(model, suite, data_cfg=cfg.data, tools=cfg.tools, seed=seed)[
            "summary"
        ]
        analysis_seconds += time.perf_counter() - t0
        interp["summary"].update({k: v for k, v in tool_summary.items() if k.startswith("interp.")})
    skills = metrics.get("skills", {})
    row = {
        "arch": arch,
        "seed": seed,
        "run_dir": str(run_dir),
        "trained_now": trained,
        "train_seconds": train_seconds,
        "analysis_seconds": analysis_seconds,
        "val_loss": metrics["val_loss"],
        "mean_accuracy": _mean(v["accuracy"] for v in skills.values()),
        "mean_exact_match": _mean(v["exact_match"] for v in skills.values()),
        "ood_accuracy": _mean(v.get("ood_accuracy") for v in skills.values()),
        "skills": {k: v["accuracy"] for k, v in skills.items()},
        "params": metrics.get("params", {}),
        "train": metrics.get("train", {}),
        "interp": interp["summary"],
        "plots": interp.get("moe", {}).get("plots", []),
        "tools": {k: v for k, v in (tool_summary or {}).items() if k.startswith("tools.")},
    }
    saved.write_text(json.dumps(row, indent=2, default=str))
    return row


def _has_tool_skills(cfg) -> bool:
    """Whether the tool analysis applies: the data has addition or facts, plain (the
    dense baseline answers from its weights) or through tools."""
    names = ("addition", "facts", "addition_tool", "facts_tool")
    return cfg.data.source == "skills" and any(cfg.data.mix.get(n, 0) > 0 for n in names)


def posthoc_route(
    dense_row: dict[str, Any], tc_row: dict[str, Any] | None, cc: CompareConfig, out: Path
) -> dict[str, Any]:
    """The post-hoc route on one dense run: fit TopK transcoders to its MLPs (as
    wide and as sparse as the by-construction transcoder), splice them in, and score
    them like any model: ground-truth coverage of the post-hoc latents, FVU, CE loss
    recovered, KL. With a transcoder run of the same seed, the fit is timed against
    reading features off that model (one cached forward) in the same process:
    analysis.feature_cost.measure_feature_cost."""
    saved = out / "runs" / f"dense-seed{dense_row['seed']}" / "analysis" / "posthoc.json"
    if saved.is_file() and not dense_row.get("trained_now", True):
        return json.loads(saved.read_text())
    from glassbox import archs
    from glassbox.analysis.feature_cost import measure_feature_cost
    from glassbox.analysis.interp import coverage_scores, suite_batches
    from glassbox.analysis.splicing import splice_fidelity
    from glassbox.archs.config import TranscoderConfig
    from glassbox.training.config import load_config
    from glassbox.training.data import build_datasets
    from glassbox.training.transcoder_fit import fit_transcoders, splice

    dense = archs.load_pretrained(Path(dense_row["run_dir"]) / "checkpoint")
    cfg = load_config(
        cc.architectures["dense"], [*run_overrides(cc, "dense"), f"run.seed={dense_row['seed']}"]
    )
    suite = build_datasets(cfg.data)
    seed = dense_row["seed"]
    layers = list(range(dense.cfg.n_layers))
    tc_cfg = TranscoderConfig(d_latent=cc.posthoc.d_latent, k=cc.posthoc.k, activation="topk")
    fit_batches = suite_batches(suite, "train", 4096, batch_size=cfg.data.batch_size, seed=seed)
    val = suite_batches(suite, "val", cc.analysis_examples, seed=seed)
    cost = None
    t0 = time.perf_counter()
    if tc_row is not None:
        tc_model = archs.load_pretrained(Path(tc_row["run_dir"]) / "checkpoint")
        cost, transcoders = measure_feature_cost(
            tc_model, dense, val, layers, fit_batches=fit_batches, cfg=tc_cfg,
            return_transcoders=True, max_steps=cc.posthoc.steps, seed=seed,
        )  # fmt: skip
    else:
        transcoders = fit_transcoders(
            dense, fit_batches, layers, tc_cfg, max_steps=cc.posthoc.steps, seed=seed
        )
    fit_seconds = time.perf_counter() - t0
    spliced = splice(dense, transcoders)
    fid = splice_fidelity(dense, spliced, val)
    cov = coverage_scores(spliced, val, suite)
    result = {
        "seed": seed,
        "coverage": cov["interp.coverage"],
        "coverage_by_layer": cov["coverage_by_layer"],
        "fvu": fid.get("fvu"),
        "ce_loss_recovered": fid.get("ce_loss_recovered"),
        "kl_to_clean": fid.get("kl_to_clean"),
        "l0": cov.get("interp.l0"),
        "dead_fraction": cov.get("interp.dead_fraction"),
        "fit_seconds": fit_seconds,
        "steps": cc.posthoc.steps,
        "cost": cost,
    }
    saved.write_text(json.dumps(result, indent=2, default=str))
    return result


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per architecture: mean and spread (sample std over seeds) of every number."""
    by_arch: dict[str, list[dict]] = {}
    for r in rows:
        by_arch.setdefault(r["arch"], []).append(r)

    def stats(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        return {
            "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals),
        }

    out = {}
    for arch, rs in by_arch.items():
        keys = {k for r in rs for k in r["interp"]}
        skills = {k for r in rs for k in r["skills"]}
        out[arch] = {
            "val_loss": stats(r["val_loss"] for r in rs),
            "mean_accuracy": stats(r["mean_accuracy"] for r in rs),
            "mean_exact_match": stats(r["mean_exact_match"] for r in rs),
            "ood_accuracy": stats(r["ood_accuracy"] for r in rs),
            "skills": {s: stats(r["skills"].get(s) for r in rs) for s in sorted(skills)},
            "interp": {k: stats(r["interp"].get(k) for r in rs) for k in sorted(keys)},
            "params_active": rs[0]["params"].get("active"),
            "params_total": rs[0]["params"].get("total"),
            "train_tokens": stats(r["train"].get("tokens") for r in rs),
            "train_flops": stats(r["train"].get("flops") for r in rs),
            "tools": {
                k: stats(r.get("tools", {}).get(k) for r in rs)
                for k in sorted({k for r in rs for k in r.get("tools", {})})
            },
        }
    return out


def gap_percent(value: float | None, dense: float | None) -> float | None:
    if value is None or dense is None or dense == 0:
        return None
    return 100.0 * (value - dense) / abs(dense)


def compare(cc: CompareConfig) -> Path:
    """Run every architecture x seed, then write report.md, report.json, pareto.png."""
    from glassbox.report import write_report

    check_runs(cc)
    out = Path(cc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch, path in cc.architectures.items():
        for seed in cc.seeds:
            print(f"compare: {arch} seed {seed}", flush=True)
            rows.append(run_one(arch, path, seed, cc, out))
            (out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
    if cc.posthoc.enabled:
        for row in [r for r in rows if r["arch"] == "dense"]:
            print(f"compare: post-hoc transcoders on dense seed {row['seed']}", flush=True)
            tc = next(
                (r for r in rows if r["arch"] == "transcoder" and r["seed"] == row["seed"]), None
            )
            row["posthoc"] = posthoc_route(row, tc, cc, out)
            row["interp"]["interp.coverage_posthoc"] = row["posthoc"]["coverage"]
        (out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
    return write_report(out, cc, rows, aggregate(rows))
