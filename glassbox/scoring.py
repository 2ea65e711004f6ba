"""What `glassbox compare` saves of a run's scores and of the post-hoc route, and when a
saved one is reused: each is saved under the content key of what made it (the
checkpoint, the compare keys that change it, results.ANALYSIS_VERSION) and reused only
under the same key. The science is analysis/'s; nothing here trains.

    runs/<arch>-seed<s>/analysis/row.json       score_run (a RunResult)
    runs/dense-seed<s>/analysis/posthoc.json    score_posthoc (a PostHocResult)
    runs/<arch>-seed<s>/analysis/parts.json     what an unfinished score_run had finished,
                                                read back by the next (analysis.resume)

A run scored before its headline scores kept their bootstrap replicates (<key>_boot,
which pair two kinds' difference: results.difference) gets them from `add_replicates`:
the audited scores computed again, minutes against the scoring's hours, checked equal
to the saved ones, and their replicates added to the saved result under its key.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from glassbox.analysis.audit import audit_samples, audited_scores
from glassbox.analysis.baselines import untrained_twin
from glassbox.analysis.code_analysis import is_code
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.pipeline import Analysis, analyze
from glassbox.analysis.posthoc import AUDIT_KEYS, posthoc_route
from glassbox.analysis.resume import saved_parts
from glassbox.archs.errors import GlassboxError
from glassbox.compare_config import CompareConfig
from glassbox.results import (
    PostHocResult,
    RunResult,
    capability_values,
    content_key,
    load_saved,
    save,
)
from glassbox.runs import Run

PARTS = "parts.json"  # in a run's analysis folder while its scoring is unfinished

__all__ = [
    "add_replicates",
    "posthoc_applies",
    "posthoc_key",
    "score_key",
    "score_posthoc",
    "score_run",
]


def score_key(run: Run, cc: CompareConfig) -> str:
    """What a run's scores depend on: its checkpoint and the compare keys they read."""
    return content_key("scores", run.checkpoint_key, cc.analysis_examples, cc.microcircuits)


def _analyse(run: Run, cc: CompareConfig) -> Analysis:
    """The run's analysis (analysis.pipeline, the same call `glassbox analyze` makes):
    every score beside its untrained twin's (the run's config at its training seed),
    by domain on text, and the tool scores where the data has tool skills."""
    return analyze(
        run.model,
        run.suite,
        ("interp", "tools"),
        run.analysis_dir,
        n_examples=cc.analysis_examples,
        seed=run.seed,
        init_seed=run.cfg.run.seed,
        checkpoint=run.export,
        microcircuits=cc.microcircuits,
        data_cfg=run.cfg.data,
        tools_cfg=run.cfg.tools,
    )


def score_run(run: Run, cc: CompareConfig) -> RunResult:
    """Score one run from its checkpoint; scores saved under the same key are reused.
    A run without a current checkpoint is a GlassboxError (one line): scoring never trains."""
    run.check_current()
    key = score_key(run, cc)
    saved_path = run.analysis_dir / "row.json"
    saved = load_saved(saved_path, key)
    if saved is not None:  # capability is re-read: it is metrics.json's (in the key)
        return RunResult.from_json(
            saved, trained_now=run.trained_now, capability=capability_values(run.metrics)
        )
    run.analysis_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # an interrupted scoring resumes at the parts it had finished (analysis.resume)
    with saved_parts(run.analysis_dir / PARTS, key) as parts:
        analysis = _analyse(run, cc)
    analysis_seconds = time.perf_counter() - t0 + parts.reused_seconds
    analysis.write(run.analysis_dir / "analysis.json")
    summary = analysis.summary  # interp.*, baselines.*, domains.* and tools.*
    result = RunResult(
        arch=run.arch,
        seed=run.seed,
        run_dir=str(run.run_dir),
        capability=capability_values(run.metrics),
        interp={k: v for k, v in summary.items() if not k.startswith("tools.")},
        tools={k: v for k, v in summary.items() if k.startswith("tools.")} or None,
        plots=tuple(analysis.plots),
        trained_now=run.trained_now,
        train_seconds=run.train_seconds,
        analysis_seconds=analysis_seconds,
        key=key,
        not_applicable=analysis.not_applicable,
    )
    save(saved_path, key, result)
    parts.remove()
    return result


# a run that has these has every replicate its scoring keeps: its own scores' with their
# controls', and its untrained twin's
HAS_REPLICATES = ("baselines.random.interp.lift_pooled_boot", "baselines.init.interp.lift_pooled_boot")  # fmt: skip


def add_replicates(run: Run, cc: CompareConfig) -> list[str] | None:
    """Add to the run's saved scores the bootstrap replicates of its headline scores,
    their controls' and its untrained twin's (analysis.audit: <key>_boot), where it was
    scored before they were kept. The audited scores of the model and of its twin are
    computed again on the same samples (audit_samples) and must equal the saved ones,
    interval for interval: replicates of other draws would pair wrongly. Returns the
    keys added (none where the run has them, or its data has no ground truth); None
    where the run is not trained or scored under its current key yet (scoring it keeps
    them). A run whose scores come out otherwise now is a GlassboxError (one line):
    score it again instead."""
    if not run.is_current():
        return None
    key = score_key(run, cc)
    path = run.analysis_dir / "row.json"
    saved = load_saved(path, key)
    if saved is None:
        return None
    interp, suite = saved["interp"], run.suite
    if not (suite.skill_names or is_code(suite)):
        return []
    model, boots = run.model, {}
    val, test = audit_samples(suite, cc.analysis_examples, run.seed, model.device)
    own, twin = HAS_REPLICATES
    for prefix, needed in (("", own), ("baselines.init.", twin)):
        if needed in interp:
            continue
        m = untrained_twin(model, run.cfg.run.seed) if prefix else model
        summary = audited_scores(m, suite, val, test, seed=run.seed)["summary"]
        fresh = {f"{prefix}{k}": v for k, v in jsonable(summary).items()
                 if not prefix or k.startswith("interp.")}  # fmt: skip
        for k, v in fresh.items():
            if k in interp and not _same(v, interp[k]):
                raise GlassboxError(
                    f"{path}: {k} computed again is {v}, saved {interp[k]}: "
                    "these replicates would not be the saved scores'; score the run again"
                )
        boots.update({k: v for k, v in fresh.items() if k.endswith("_boot")})
    if boots:
        save(path, key, RunResult.from_json({**saved, "interp": {**interp, **boots}}))
    return sorted(boots)


def _same(a: Any, b: Any, tol: float = 1e-9) -> bool:
    """Equal numbers (to `tol`), or equal lists of them, or both undefined."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        if a != a or b != b:  # nan: the same only as another nan
            return a != a and b != b
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


def posthoc_key(dense: Run, tc: Run | None, cc: CompareConfig) -> str:
    """What the post-hoc route depends on: the dense checkpoint, the transcoder
    checkpoint it is timed against, the fit settings, the examples it scores and the
    audited scores it keeps (a result saved before one was kept is redone)."""
    return content_key(
        "posthoc",
        dense.checkpoint_key,
        tc.checkpoint_key if tc is not None else None,
        asdict(cc.posthoc),
        cc.analysis_examples,
        AUDIT_KEYS,
    )


def posthoc_applies(dense: Run, cc: CompareConfig) -> bool:
    """Whether the post-hoc route runs: enabled, and on data with ground truth (not text)."""
    return cc.posthoc.enabled and dense.cfg.data.source != "text"


def score_posthoc(dense: Run, tc: Run | None, cc: CompareConfig) -> PostHocResult:
    """The post-hoc route (analysis.posthoc.posthoc_route) on one dense run, timed
    against the transcoder run of the same seed where there is one; reused when saved
    under the same key (posthoc_key). Neither run is trained here."""
    for run in (dense, tc):
        if run is not None:
            run.check_current()
    key = posthoc_key(dense, tc, cc)
    saved_path = dense.analysis_dir / "posthoc.json"
    saved = load_saved(saved_path, key)
    if saved is not None:
        return PostHocResult.from_json(saved)
    scored = posthoc_route(
        dense.model, dense.suite,
        transcoder_model=tc.model if tc is not None else None,
        steps=cc.posthoc.steps, d_latent=cc.posthoc.d_latent, k=cc.posthoc.k,
        n_examples=cc.analysis_examples, batch_size=dense.cfg.data.batch_size, seed=dense.seed,
    )  # fmt: skip
    result = PostHocResult(
        arch=dense.arch,
        seed=dense.seed,
        steps=cc.posthoc.steps,
        scores=scored.scores,
        coverage_by_layer=scored.coverage_by_layer,
        cost=scored.cost,
        key=key,
    )
    save(saved_path, key, result)
    return result
