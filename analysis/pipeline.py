"""One analysis of one model: named sections run on a model and its data, its untrained
twin scored by the same call, into one typed result with one schema. `glassbox
analyze`, `glassbox compare` (each run) and the notebooks all call `analyze`, and all
write what it returns as `analysis.json`.

    from glassbox.analysis.pipeline import analyze

    result = analyze(model, suite, sections=("interp", "mechanistic"), out_dir="a/")
    result.summary["interp.lift_pooled"], result.summary["baselines.init.interp.lift_pooled"]
    result.sections["interp"]["untrained_twin"]       # the twin's whole report
    result.write("a/analysis.json"); Analysis.read("a/analysis.json")

Sections (`SECTIONS`), each run only where it applies:

    interp       every interpretability score beside the untrained twin (the same config
                 at the run's seed, at initialisation) and the token alone: on the skill
                 suite analysis.interp.interp_with_baselines (coverage, audited scores,
                 specialisation, modularity, circuits, micro-task circuits); on a text
                 corpus, which has no ground truth, analysis.text_analysis's scores by
                 domain (text_with_baselines); on the code corpus, features and packages
                 but no skills, both that apply (analysis.code_analysis: coverage, the
                 audited scores, the scores by package, micro-task circuits on code)
    mechanistic  logit lens, heads, probes, causal tracing and patching
                 (analysis.mechanistic.run_mechanistic)
    tools        the tool-call scores of a model whose data has tool skills
                 (analysis.tools.tool_report)

Every section samples its examples with the same seed from analysis.batches (one
sampler: the scores of one call read the same examples).

analysis.json (`Analysis.to_json`, schema `SCHEMA`):

    schema       int, this layout's version
    checkpoint   the model's checkpoint (or null)
    data         "skills" (the skill suite, with ground truth) | "text" | "code" (code
                 ground truth, packages for domains)
    settings     the call's settings: n_examples, seed, init_seed, sections, ...
    summary      {flat key: number}: interp.*, baselines.{init,token,random,shuffled}.*,
                 domains.* (text, code), tools.*, mechanistic.* (each section's summary)
    seconds      {section: wall seconds}
    interp | mechanistic | tools
                 each section's full report (absent when it did not run)
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glassbox.analysis.code_analysis import code_with_baselines, is_code
from glassbox.analysis.interp import interp_with_baselines
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.mechanistic import MechanisticConfig, run_mechanistic
from glassbox.analysis.resume import part, reused_seconds
from glassbox.analysis.text_analysis import text_with_baselines
from glassbox.analysis.tools import tool_report, uses_tool_skills
from glassbox.training.data import SuiteData

SCHEMA = 1
SECTIONS = ("interp", "mechanistic", "tools")


@dataclass
class Analysis:
    """What `analyze` returns and `analysis.json` holds (the module docstring)."""

    data: str  # "skills" | "text" | "code"
    settings: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        head = {"schema": SCHEMA, "checkpoint": self.checkpoint, "data": self.data}
        body = {"settings": self.settings, "summary": self.summary, "seconds": self.seconds}
        return jsonable({**head, **body, **self.sections})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Analysis:
        if d.get("schema") != SCHEMA:
            raise ValueError(
                f"analysis.json: schema {d.get('schema')!r}, this glassbox reads {SCHEMA} "
                "(run the analysis again)"
            )
        return cls(
            data=d["data"],
            settings=dict(d["settings"]),
            summary=dict(d["summary"]),
            sections={k: d[k] for k in SECTIONS if k in d},
            seconds=dict(d["seconds"]),
            checkpoint=d.get("checkpoint"),
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2, default=str))
        return path

    @classmethod
    def read(cls, path: str | Path) -> Analysis:
        return cls.from_json(json.loads(Path(path).read_text()))

    @property
    def plots(self) -> list[str]:
        """Every plot the sections wrote (paths)."""
        interp = self.sections.get("interp", {})
        out = list(interp.get("moe", {}).get("plots", interp.get("plots", [])))
        return out + list(self.sections.get("mechanistic", {}).get("plots", []))

    @property
    def not_applicable(self) -> tuple[str, ...]:
        return tuple(self.sections.get("interp", {}).get("not_applicable", ()))


def analyze(
    model,
    suite: SuiteData,
    sections: Sequence[str] = ("interp",),
    out_dir: str | Path | None = None,
    n_examples: int = 512,
    seed: int = 0,
    init_seed: int = 0,
    checkpoint: str | Path | None = None,
    microcircuits: bool | None = None,
    reference_model=None,
    data_cfg=None,
    tools_cfg=None,
    progress=None,
) -> Analysis:
    """Run `sections` (SECTIONS; those that do not apply to the model's data are
    skipped) on `model` over `suite`; plots go to out_dir. init_seed: the seed the
    run trained from, at which its untrained twin is built. microcircuits: the
    micro-task circuits with the circuits (None) or not. reference_model: text only,
    a model to compare routing with. data_cfg, tools_cfg: the run's `data` and
    `tools` config, which the tools section needs. progress: a glassbox.console.Jobs
    (or anything with `done(line)`) told after each section."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"analyze: sections {unknown}: each one of {', '.join(SECTIONS)}")
    text = not suite.skill_names
    settings = {"sections": list(sections), "n_examples": n_examples, "seed": seed,
                "init_seed": init_seed, "microcircuits": microcircuits}  # fmt: skip
    result = Analysis(
        data=("code" if is_code(suite) else "text") if text else "skills",
        settings=settings,
        checkpoint=None if checkpoint is None else str(checkpoint),
    )
    for name in sections:
        t0, reused = time.perf_counter(), reused_seconds()
        section = functools.partial(_section, name, model, suite, out_dir, settings,
                                    reference_model, data_cfg, tools_cfg)  # fmt: skip
        report = part(name, section)
        if report is None:
            continue
        result.sections[name] = report
        result.summary.update(_summary(name, report))
        # with the seconds its parts read back had cost (analysis.resume)
        result.seconds[name] = time.perf_counter() - t0 + reused_seconds() - reused
        if progress is not None:
            progress.done(f"analyze: {name} ({result.seconds[name]:.0f} s)")
    return result


def _section(name, model, suite, out_dir, settings, reference_model, data_cfg, tools_cfg):
    """One section's report, or None where it does not apply."""
    n, seed, init_seed = settings["n_examples"], settings["seed"], settings["init_seed"]
    if name == "interp" and is_code(suite):  # features and packages, no skills
        return code_with_baselines(
            model, suite, out_dir, n, seed=seed, init_seed=init_seed,
            reference_model=reference_model, microcircuits=settings["microcircuits"] is not False,
        )  # fmt: skip
    if name == "interp" and not suite.skill_names:  # text: scores by domain
        return text_with_baselines(
            model, suite, out_dir, n, seed=seed, init_seed=init_seed,
            reference_model=reference_model,
        )  # fmt: skip
    if name == "interp":
        return interp_with_baselines(
            model, suite, out_dir, n_examples=n, seed=seed, init_seed=init_seed,
            microcircuits=settings["microcircuits"],
        )  # fmt: skip
    if name == "mechanistic":
        if out_dir is None:
            raise ValueError("analyze: the mechanistic section writes plots: give out_dir")
        cfg = MechanisticConfig(n_examples=n, seed=seed)
        if suite.skill_names:
            cfg.probe_max_examples = n
        return run_mechanistic(model, suite, out_dir, cfg)
    if data_cfg is None or not uses_tool_skills(data_cfg):
        return None
    return tool_report(model, suite, data_cfg=data_cfg, tools=tools_cfg, seed=seed)


def _summary(name: str, report: Mapping[str, Any]) -> dict[str, Any]:
    """A section's summary keys as they join the flat summary: the scores' as they
    are (interp.*, baselines.*, domains.*), the tools' interp.* and tools.*, the
    mechanistic section's under mechanistic.*."""
    summary = report.get("summary", {})
    if name == "mechanistic":
        return {f"mechanistic.{k}": v for k, v in summary.items()}
    return dict(summary)
