"""The settings of `glassbox compare` (its YAML, configs/compare*.yaml, and key=value
overrides): which architectures and seeds, the overrides that make the matched budget,
the checkpoints scored instead of trained, what the scoring reads and how many jobs
run at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from glassbox.archs.config import ConfigError
from glassbox.training.config import load_config, load_yaml_file

# the architecture every gap is measured against (a compare must have it), and the
# by-construction architecture the post-hoc route on the baseline is timed against
BASELINE = "dense"
BY_CONSTRUCTION = "transcoder"

__all__ = ["CompareConfig", "PostHocConfig", "check_runs", "load_compare_config", "run_overrides"]


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
    # architecture -> an existing checkpoint (directory, hub id or "glassbox/<name>") that
    # is scored instead of training that architecture: its own config.yaml is the run
    # (overrides do not apply), at the seed it was trained with (run.seed, in `seeds`)
    checkpoints: dict[str, str] = field(default_factory=dict)
    analysis_examples: int = 512  # held-out examples each interpretability score reads
    # micro-task circuits by learned masks (analysis.microcircuits): 1-4 CPU-minutes per
    # model on the CPU default size, the largest share of the scoring
    microcircuits: bool = True
    # jobs at once (a run trained, a run scored), each a process of its own (CPU: cores //
    # jobs threads each), a run scored as soon as it is trained while others still train;
    # 1 trains and scores them one after another in this process
    jobs: int = 1
    posthoc: PostHocConfig = field(default_factory=PostHocConfig)


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """The compare YAML plus key=value overrides. Keys of a run section (model.,
    data., optim., trainer., run.) are passed on to every run."""
    base = OmegaConf.structured(CompareConfig)
    run_keys = []
    raw = load_yaml_file(Path(path))
    for key in ("architectures", "arch_overrides", "checkpoints", "posthoc"):
        if raw.get(key) is not None and not isinstance(raw[key], DictConfig):
            value = (
                OmegaConf.to_container(raw[key]) if isinstance(raw[key], ListConfig) else raw[key]
            )
            raise ConfigError(key, value, f"must be a mapping (name: value) (in {path})")
    try:
        cfg = OmegaConf.merge(base, raw)
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
    if BASELINE not in out.architectures:
        raise ConfigError(
            "architectures", list(out.architectures), "must include the dense baseline"
        )
    if not out.seeds:
        raise ConfigError("seeds", out.seeds, "at least one seed")
    if out.jobs < 1:
        raise ConfigError("jobs", out.jobs, f"runs trained at once: 1 or more (in {path})")
    out.overrides = list(out.overrides) + run_keys
    return out


def run_overrides(cc: CompareConfig, arch: str) -> list[str]:
    """The overrides every run gets, then this architecture's own."""
    return [*cc.overrides, *cc.arch_overrides.get(arch, [])]


def check_runs(cc: CompareConfig) -> None:
    """Load every architecture's run config with its overrides, so a bad key fails
    before hours of training rather than in the middle."""
    for arch, path in cc.architectures.items():
        load_config(path, run_overrides(cc, arch))
