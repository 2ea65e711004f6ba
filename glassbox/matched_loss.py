"""`glassbox matched-loss`: circuit size against pretraining loss along training, and
each kind's size ratio to dense at matched loss (Gao et al. 2025's comparison;
analysis.matched_loss has the science).

    glassbox matched-loss configs/compare_matched.yaml [key=value ...] [--from-step N] [--residual]

1. Trains the compare config's runs that are not current (as `glassbox compare` does;
   the config keeps every periodic checkpoint: trainer.keep_checkpoints=-1).
2. Scores each run's periodic checkpoints (runs/<run>/checkpoints/step=N.ckpt, from
   --from-step on): the pretraining loss (val_loss: the answer tokens' cross-entropy
   on the test split, as the report's) and the micro-task circuits
   (analysis.microcircuits, the same call the report makes). Each checkpoint's result
   is saved in runs/<run>/analysis/along/step=N.json under its content key and reused.
3. Writes into out_dir: matched_loss.json (every point; per seed and kind the ratio to
   dense at matched loss, nodes and edges), matched_loss.md (the table, with the
   spread over seeds) and matched_loss.png (edges against loss, a line per run).

--residual counts the residual channels each layer reads as units too
(MaskConfig(residual=True): Gao et al.'s residual nodes, and edges only between kept
ends); its points are saved as step=N.residual.json and its files are
matched_loss_residual.{json,md,png}, beside the default ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from glassbox.analysis.matched_loss import SIZES, Point, common_tasks, ratio_at_matched_loss
from glassbox.analysis.microcircuits import MaskConfig, microcircuit_report
from glassbox.archs.checkpoint import load_pretrained, shipped_dir
from glassbox.archs.writes import Output, close_output_dir, open_output_dir
from glassbox.compare import plan_runs
from glassbox.compare_config import BASELINE, load_compare_config
from glassbox.results import ANALYSIS_VERSION, content_key, load_saved, save
from glassbox.runs import Run
from glassbox.scheduling import train_runs
from glassbox.training.evaluate import evaluate_model

MATCHED = Output(
    "glassbox matched-loss",
    legacy=lambda d: (d / "matched_loss.json").is_file() or (d / "runs").is_dir(),
    owns=(
        "runs",
        *(f"matched_loss{s}.{x}" for s in ("", "_residual") for x in ("md", "json", "png")),
    ),
    marker=False,
    force=False,
)
KEPT = ("learned", "nodes", "edges", "fraction", "faithfulness_heldout", "accuracy_heldout",
        "accuracy_clean", "total_units", "residual_nodes")  # fmt: skip

__all__ = ["checkpoints_along", "main", "matched_loss", "score_checkpoint"]


def checkpoints_along(run: Run, from_step: int = 0) -> list[tuple[int, Path]]:
    """(step, path) of the run's periodic checkpoints from `from_step` on, by step."""
    out = []
    for f in (run.run_dir / "checkpoints").glob("step=*.ckpt"):
        step = int(f.stem.split("=", 1)[1])
        if step >= from_step:
            out.append((step, f))
    return sorted(out)


def load_at(run: Run, ckpt: Path):
    """The run's model with the weights of a Lightning checkpoint of its training."""
    model = load_pretrained(run.export)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return model.eval()


def score_checkpoint(
    run: Run, step: int, ckpt: Path, threads: int | None = None, residual: bool = False
) -> Point:
    """One checkpoint's loss and micro-task circuits (residual: with the residual
    channels as units), saved beside the run and reused under the same key (the
    checkpoint file, residual, results.ANALYSIS_VERSION)."""
    if threads:
        torch.set_num_threads(threads)
    name = f"step={step}.residual.json" if residual else f"step={step}.json"
    path = run.run_dir / "analysis" / "along" / name
    stat = ckpt.stat()
    key = content_key("along", run.config_key, step, stat.st_size, stat.st_mtime_ns, residual)
    saved = load_saved(path, key)
    if saved is not None:
        return Point.from_json(saved)
    model, suite = load_at(run, ckpt), run.suite
    loss = evaluate_model(model, suite, batch_size=run.cfg.data.batch_size)["val_loss"]
    report = microcircuit_report(model, suite, seed=run.seed, cfg=MaskConfig(residual=residual))
    tasks = {n: {k: t.get(k) for k in KEPT} for n, t in report["tasks"].items()}
    point = Point(step, float(loss), tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path, key, point)
    return point


def _score(args: tuple[Run, int, Path, bool]) -> Point:
    run, step, ckpt, residual = args
    return score_checkpoint(run, step, ckpt, threads=1, residual=residual)


def score_runs(
    plan: list[Run], jobs: int, from_step: int, residual: bool = False
) -> dict[str, list[Point]]:
    """Every run's points, by run name; checkpoints scored `jobs` at a time."""
    todo = [(run, step, f, residual) for run in plan
            for step, f in checkpoints_along(run, from_step)]  # fmt: skip
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            points = list(pool.map(_score, todo))
    else:
        points = [score_checkpoint(run, step, f, residual=r) for run, step, f, r in todo]
    out: dict[str, list[Point]] = {run.name: [] for run in plan}
    for (run, _, _, _), p in zip(todo, points):
        out[run.name].append(p)
    return out


def matched_loss(plan: list[Run], points: dict[str, list[Point]]) -> dict[str, Any]:
    """Per seed and kind (not the baseline): ratio_at_matched_loss to the baseline's run
    of the same seed, for nodes and edges; and over seeds each ratio's mean, min, max."""
    seeds = sorted({r.seed for r in plan})
    kinds = [a for a in dict.fromkeys(r.arch for r in plan) if a != BASELINE]
    per: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in kinds:
        for seed in seeds:
            mine, base = points.get(f"{kind}-seed{seed}"), points.get(f"{BASELINE}-seed{seed}")
            if mine and base:
                per.setdefault(kind, {})[str(seed)] = {
                    size: ratio_at_matched_loss(mine, base, size) for size in SIZES
                }
    spread: dict[str, dict[str, Any]] = {}
    for kind, by_seed in per.items():
        for size in SIZES:
            ratios = [r[size]["ratio"] for r in by_seed.values() if r[size]["ratio"]]
            if ratios:
                spread.setdefault(kind, {})[size] = {
                    "mean": statistics.fmean(ratios), "min": min(ratios), "max": max(ratios),
                    "seeds": len(ratios),
                }  # fmt: skip
    return {
        "baseline": BASELINE,
        "points": {name: [p.to_json() for p in ps] for name, ps in points.items()},
        "per_seed": per,
        "over_seeds": spread,
    }


def _plot(points: dict[str, list[Point]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [ps for ps in points.values() if ps]
    tasks = common_tasks(*runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    colours: dict[str, str] = {}
    for name, ps in points.items():  # each point: the comparison's tasks learned there
        c = [(p.step, p.loss, p.gmean(sorted(set(tasks) & p.learned()), "edges"))
             for p in sorted(ps, key=lambda p: p.step)]  # fmt: skip
        c = [x for x in c if x[2]]
        if not c:
            continue
        kind, seed = name.rsplit("-seed", 1)
        colour = colours.setdefault(kind, f"C{len(colours)}")
        ax.plot([x[1] for x in c], [x[2] for x in c], marker="o", color=colour,
                ls="-" if seed == "0" else "--", label=name, ms=3)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("pretraining loss (answer tokens, test split)")
    ax.set_ylabel(
        f"circuit edges (geometric mean over the\n{len(tasks)} micro-tasks learned there)"
    )
    ax.invert_xaxis()  # training goes left to right
    if colours:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def write_markdown(
    result: dict[str, Any], path: Path, command: str, residual: bool = False
) -> None:
    channels = (
        " The residual channels each layer reads are units too (--residual): nodes count "
        "them, and an edge is a non-zero weight whose two ends are kept."
        if residual
        else ""
    )
    lines = [
        "# Circuit size at matched pretraining loss"
        + (", residual channels as units" if residual else ""),
        "",
        f"`{command}`. Each run's checkpoints along training give (loss, circuit size); "
        f"a kind's size over {result['baseline']}'s is read where their losses are equal "
        "(the higher final loss; the other run's curve interpolated in log size), over the "
        "micro-tasks both final checkpoints learned. Gao et al. 2025 report dense circuits "
        "about 16x a weight-sparse model's at matched loss (a ratio here of about 0.06)."
        + channels,
        "",
        "| kind | seed | size | tasks read | matched loss | kind size | dense size | ratio at "
        "matched loss | ratio of final checkpoints | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, by_seed in result["per_seed"].items():
        for seed, sizes in by_seed.items():
            for size, r in sizes.items():
                lines.append(
                    f"| {kind} | {seed} | {size} | {len(r.get('tasks_read', []))} of {len(r['tasks'])} | {_fmt(r.get('loss'), '.4f')}"
                    f" | {_fmt(r.get('kind_size'), ',.1f')} | {_fmt(r.get('baseline_size'), ',.1f')}"
                    f" | {_fmt(r['ratio'])} | {_fmt(r.get('final_ratio'))} | {r.get('why', '')} |"
                )
    lines += ["", "Over seeds (ratio at matched loss): "]
    for kind, sizes in result["over_seeds"].items():
        for size, s in sizes.items():
            lines.append(
                f"- {kind} / {result['baseline']}, {size}: mean {s['mean']:.3f} "
                f"(min {s['min']:.3f}, max {s['max']:.3f}; "
                f"{s['seeds']} seed{'s' if s['seeds'] != 1 else ''})"
            )
    lines += ["", f"![circuit edges against loss]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def run_matched_loss(
    config: str, overrides: list[str], from_step: int, residual: bool = False
) -> Path:
    """Train what is missing, score every checkpoint, write the three files
    (matched_loss_residual.* with residual); returns the markdown's path."""
    cc = load_compare_config(config, overrides)
    out = Path(cc.out_dir)
    plan = plan_runs(cc, out)
    keep = open_output_dir(out, MATCHED, protected=[shipped_dir()])
    train_runs(plan, cc.jobs)
    points = score_runs(plan, cc.jobs, from_step, residual)
    result = matched_loss(plan, points)
    stem = "matched_loss_residual" if residual else "matched_loss"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    _plot(points, out / f"{stem}.png")
    command = " ".join(["glassbox matched-loss", config, *overrides,
                        *(["--residual"] if residual else [])])  # fmt: skip
    write_markdown(result, out / f"{stem}.md", command, residual)
    close_output_dir(out, MATCHED, keep)
    return out / f"{stem}.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a compare config, e.g. configs/compare_matched.yaml")
    p.add_argument("overrides", nargs="*", help="key=value, as glassbox compare takes")
    p.add_argument("--from-step", type=int, default=1000,
                   help="the first checkpoint read (earlier ones learn few tasks)")  # fmt: skip
    p.add_argument("--residual", action="store_true",
                   help="the residual channels each layer reads are units too "
                        "(writes matched_loss_residual.*)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    path = run_matched_loss(args.config, list(args.overrides), args.from_step, args.residual)
    print(f"wrote {path} (results version {ANALYSIS_VERSION})")
    return 0
