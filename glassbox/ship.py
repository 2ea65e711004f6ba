"""Ship trained runs as the package's pretrained checkpoints (checkpoints/<arch>/).

    glassbox ship RUNS_DIR [--seed 0] [--to checkpoints] [--scores REPORT_JSON]

RUNS_DIR is the out_dir of a `glassbox compare` that trained the runs (report_long/
for configs/compare_long.yaml). For each architecture, the exported checkpoint of its
run at `seed` (RUNS_DIR/runs/<arch>-seed<seed>/checkpoint/) is copied into
<to>/<arch>/ with its training curve (training_curve.png, from the run's
logs/metrics.csv), and its model card (README.md) is written from a gap report: the
capability of the checkpoint and every interpretability score beside its untrained
twin's, what the token alone predicts, and the dense baseline's. The scores come from
REPORT_JSON (default RUNS_DIR/report.json); shipping with the report of `make report`
(report/report.json, which scores the shipped checkpoints themselves) makes the cards
say what that report says.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter
from omegaconf import OmegaConf

from glassbox.archs.checkpoint import CARD, CONFIG, FILES, shipped_dir
from glassbox.archs.checkpoint import model_card as checkpoint_card
from glassbox.archs.config import model_config_from_dict
from glassbox.archs.errors import ArgumentError, CheckpointError, one_line
from glassbox.archs.ffn import FFN_KINDS
from glassbox.archs.writes import (
    OutputError,
    atomic_write_dir,
    disk_full,
    is_disk_full,
    replace_entries,
)
from glassbox.compare_config import BASELINE
from glassbox.console import Jobs
from glassbox.metrics import CAPABILITY, CIRCUITS, INTERPRETABILITY, SKILLS, TOOLS, Metric, Stat
from glassbox.report import Report
from glassbox.table import NOT_INFORMATIVE, informative
from glassbox.training.data.code import CODE_MANIFEST

CHECKPOINT_FILES = tuple(f for f in FILES if f != CARD)  # the card is written here
CURVE = "training_curve.png"
TRAINED_BY = "glassbox compare configs/compare_long.yaml"  # `make report-long`
SCORED_BY = "glassbox compare configs/compare_shipped.yaml"  # `make report`


# --- the training curve


def read_curve(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of train/loss and val/loss from a run's Lightning CSV log."""
    out: dict[str, list[tuple[int, float]]] = {"train/loss": [], "val/loss": []}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, points in out.items():
                if row.get(key):
                    points.append((int(row["step"]), float(row[key])))
    return out


def training_curve(metrics_csv: Path, png: Path) -> Path:
    """A small plot of the training loss (a running mean over 10 logged steps) and
    the validation loss against the optimiser step."""
    curve = read_curve(metrics_csv)
    fig = Figure(figsize=(4.8, 2.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train := curve["train/loss"]:
        steps, losses = zip(*train)
        smooth = [sum(losses[max(0, i - 9) : i + 1]) / len(losses[max(0, i - 9) : i + 1])
                  for i in range(len(losses))]  # fmt: skip
        ax.plot(steps, smooth, linewidth=1, label="train (running mean)")
    if val := curve["val/loss"]:
        ax.plot(*zip(*val), marker="o", markersize=3, linewidth=1, label="validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("answer-token loss (nats)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(png, dpi=80)
    return png


# --- the card


def describe(config: Mapping[str, Any]) -> str:
    """One sentence on what the model is, from its config.yaml."""
    model = config["model"]
    ffn = model_config_from_dict(model).ffn
    slot = FFN_KINDS[ffn.kind].describe(ffn)  # the kind's own phrase (archs/ffn.py)
    ws = model.get("weight_sparsity") or {}
    if ws.get("target_density", 1.0) < 1.0:
        slot += (
            f"; every attention and MLP matrix keeps its top {ws['target_density']:.0%} of weights"
        )
    tools = (config.get("tools") or {}).get("enabled", False)
    calls = (
        " It answers addition and facts by calling a calculator and a knowledge-graph lookup "
        "(the call trace is the explanation); the other skills from its weights."
        if tools
        else ""
    )
    return (
        f"A decoder-only transformer of {model['n_layers']} layers, d_model {model['d_model']}, "
        f"{model['n_heads']} heads, vocabulary {model['vocab_size']}; its MLP slot is {slot}."
        + calls
    )


def _value(m: Metric, stats: Mapping[str, Stat | None], key: str | None = None) -> str:
    """A card's cell: one seed's value plain, several seeds' as mean ± std; either
    with its 95% interval where it has one."""
    return m.format(stats.get(key or m.key))


CONTROLS = ("random", "shuffled")  # a score's control baselines, the card's "control" column


def _card_rows(report: Report, arch: str, section: str) -> list[str]:
    """One row per score of `section`: this model, its untrained twin, the token
    alone, the dense baseline; a score the twin's seed spread holds is marked."""
    mine, dense = report.summary[arch], report.summary.get(BASELINE, {})
    rows = []
    for m in report.section(section):
        if m.key.startswith("baselines.") or mine.get(m.key) is None:
            continue
        init = m.baseline("init").key if "init" in m.baselines else None
        token = m.baseline("token").key if "token" in m.baselines else None
        control = next((m.baseline(b).key for b in m.baselines if b in CONTROLS), None)
        flag = informative(mine.get(m.key), mine.get(init)) is False if init else False
        cells = [
            _value(m, mine) + (f" {NOT_INFORMATIVE}" if flag else ""),
            _value(m, mine, init) if init else "–",
            _value(m, mine, token) if token else "–",
            _value(m, mine, control) if control else "–",
        ] + ([_value(m, dense)] if arch != BASELINE else [])
        rows.append(f"| {m.header} | " + " | ".join(cells) + " |")
    return rows


def _capability_rows(report: Report, arch: str) -> list[str]:
    mine, dense = report.summary[arch], report.summary.get(BASELINE, {})
    rows = []
    for m in report.section(CAPABILITY) + report.section(SKILLS):
        if mine.get(m.key) is None:
            continue
        header = m.header if m.section == CAPABILITY else f"answer accuracy: {m.header}"
        rows.append(f"| {header} | {_value(m, mine)} | {_value(m, dense)} |")
    return rows


def _intro(config: Mapping, mine: Mapping[str, Stat | None], sizes: Mapping[str, int]) -> str:
    """The card's first paragraph: the model in words, its parameters and size on disk."""
    params = ", ".join(
        f"{(mine.get(k) or {}).get('mean', 0):,.0f} {words}"
        for k, words in (
            ("params.total", "in all"),
            ("params.active", "active per token"),
            ("params.nonzero", "non-zero"),
        )
        if mine.get(k)
    )
    return (
        describe(config) + f" Parameters: {params}. Size on disk: "
        f"{sum(sizes.values()) / 1e6:.1f} MB (model.safetensors "
        f"{sizes.get('model.safetensors', 0) / 1e6:.1f} MB)."
    )


def _how_made(
    mine: Mapping[str, Stat | None], trained_by: str, train_command: str, data: str
) -> list[str]:
    """The card's "How it was made": the training command, its steps and tokens, the curve."""
    steps = (mine.get("train.steps") or {}).get("mean")
    tokens = (mine.get("train.tokens") or {}).get("mean")
    return [
        f"Trained at seed 0 by `{trained_by}`"
        + (f" ({steps:,.0f} optimiser steps, {tokens:,.0f} training tokens)" if steps else "")
        + f" on {data}; the same run alone is\n",
        f"```\n{train_command}\n```\n" if train_command else "",
        f"![training curve]({CURVE})\n",
    ]


def _interpretability(report: Report, arch: str, scored_by: str) -> list[str]:
    """The card's interpretability section: how it was scored, then a table of the
    scores, of the circuits per skill and, for a model that calls tools, of its calls."""
    dense_col = "" if arch == BASELINE else " dense |"
    score_head = f"| score | this model | untrained twin | token alone | control |{dense_col}"
    score_rule = "|---|---|---|---|---|" + ("---|" if arch != BASELINE else "")
    circuits = _card_rows(report, arch, CIRCUITS)
    calls_tools = report.summary[arch].get("interp.call_recall")
    calls = _card_rows(report, arch, TOOLS) if calls_tools else []
    n = report.config.get("analysis_examples", 512)
    made = " (`make report`)" if scored_by == SCORED_BY else ""
    return [
        f"Scored by `{scored_by}`{made}, which recomputes every number here "
        "from this checkpoint: each score beside the same config's untrained twin (its "
        "initialisation at the training seed), what the current token alone predicts and "
        "its control (random directions in the units' span; the groups shuffled within "
        "each token). The first scores are audited: whatever they fit (a unit, its sign "
        f"and threshold; cluster centres; token tables) is fitted on {n} validation "
        f"examples and scored on {n} test examples, units are read with both signs and "
        "compared at 512 candidates per layer, and the brackets are 95% intervals "
        "(bootstrap over the test examples). The scores after them are the older, "
        f"in-sample ones, kept for one release. {NOT_INFORMATIVE} marks a score not told "
        "from its twin (the paired interval of the difference, over the same test "
        "examples, holds 0; where the replicates were not kept, intervals that overlap; "
        "for the older scores, within the seed spread).\n",
        score_head,
        score_rule,
        *_card_rows(report, arch, INTERPRETABILITY),
        "",
        *(
            [
                _circuits_intro(report, arch),
                score_head,
                score_rule,
                *circuits,
                "",
            ]
            if circuits
            else []
        ),
        *(
            [
                "Generated answers with the tools executed (for a model without tools, from "
                "its weights); reliance: answers that follow a counterfactual tool result.\n",
                score_head,
                score_rule,
                *calls,
                "",
            ]
            if calls
            else []
        ),
    ]


def _circuits_intro(report: Report, arch: str) -> str:
    """What the card's circuit rows are: per skill (the skill suite's checkpoints, which
    list their micro-tasks' after), or per micro-task only (code's)."""
    if any(
        k.startswith("interp.skill_circuit_") and v is not None
        for k, v in report.summary[arch].items()
    ):
        return (
            "Circuits per skill: the fewest readable units (attention heads plus the "
            "kind's units) that keep 90% of the skill's answer-loss gap with the rest "
            "mean-ablated (analysis.circuits).\n"
        )
    return (
        "Circuits per micro-task (target against one alternative): the fewest readable "
        "units (attention heads plus the kind's units) a mask learned on half the prompts "
        "keeps for 90% of the way from a uniform guess to the model, the rest "
        "mean-ablated, and its faithfulness on the other half (analysis.microcircuits); "
        "a task the model has not learned has none.\n"
    )


def model_card(
    report: Report,
    arch: str,
    dest: Path,
    trained_by: str = TRAINED_BY,
    train_command: str = "",
    scored_by: str = SCORED_BY,
    name: str | None = None,
) -> str:
    """The README.md of the shipped checkpoint at `dest` (config.yaml and the
    checkpoint's files already there), its numbers read from `report`; `name`: its
    shipped name after "glassbox/" (default `arch`; "code/dense" for a nested one)."""
    name = name or arch
    if arch not in report.summary:
        raise ArgumentError(
            "arch", arch, f"the report at {report.out_dir} has {list(report.summary)}"
        )
    config = OmegaConf.to_container(OmegaConf.load(dest / CONFIG))
    mine = report.summary[arch]
    sizes = {p.name: p.stat().st_size for p in dest.iterdir() if p.is_file()}
    code = (
        "import glassbox as gb\n"
        f'model = gb.load_pretrained("glassbox/{name}")  # offline, from the package'
    )
    capability = [
        "| metric | this model | dense baseline |",
        "|---|---|---|",
        *_capability_rows(report, arch),
        "",
    ]
    files = [
        *(f"- `{name}`: {size / 1e6:.2f} MB" for name, size in sorted(sizes.items())),
        "- `features/`: per-unit dashboards (JSON and HTML pages), "
        f"`glassbox export glassbox/{name} --to features checkpoints/{name}/features`\n",
    ]
    sections = [
        ("How it was made", _how_made(mine, trained_by, train_command, _data(config))),
        ("Capability (test split)", capability),
        (
            "Interpretability, against what it would be anyway",
            _interpretability(report, arch, scored_by),
        ),
        ("Files", files),
    ]
    return checkpoint_card(
        f"glassbox/{name}",
        _intro(config, mine, sizes),
        code,
        [(heading, "\n".join(body).removesuffix("\n")) for heading, body in sections],
    )


def _data(config: Mapping[str, Any]) -> str:
    """What a checkpoint was trained on, for its card."""
    data = config.get("data") or {}
    if data.get("source") == "code":
        paths = ", ".join((data.get("code") or {}).get("paths", []))
        return f"Python source ({paths}; its packages and versions in {CODE_MANIFEST})"
    return "a text corpus" if data.get("source") == "text" else "the skill suite"


def _shipped_name(to: Path, arch: str) -> str:
    """The name after "glassbox/" of a checkpoint shipped to `to`/<arch>."""
    try:
        rel = Path(to).resolve().relative_to(shipped_dir().resolve())
    except ValueError:
        return arch
    return arch if str(rel) == "." else f"{rel.as_posix()}/{arch}"


def _write_text(path: Path, text: str) -> None:
    """Replace `path` only once its new text is whole on disk (nothing of it left if
    the disk is full)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full(path, e, "the old file is kept") from None
        raise


def train_command(report: Report, arch: str, seed: int) -> str:
    """The `glassbox train` command equivalent to one run of the compare in `report`."""
    cfg = report.config
    overrides = [*cfg.get("overrides", ()), *(cfg.get("arch_overrides") or {}).get(arch, ())]
    return " ".join(["glassbox train", cfg["architectures"][arch], *overrides, f"run.seed={seed}"])


def at_seed(report: Report, seed: int) -> Report:
    """The report of one seed's runs (a checkpoint's card speaks of that run alone)."""
    runs = tuple(r for r in report.runs if r.seed == seed)
    if not runs:
        seeds = sorted({r.seed for r in report.runs})
        raise ArgumentError(
            "seed", seed, f"the report at {report.out_dir} has no run at it, only at {seeds}"
        )
    posthoc = tuple(p for p in report.posthoc if p.seed == seed)
    return replace(report, seeds=(seed,), runs=runs, posthoc=posthoc)


SHIP_FILES = (*CHECKPOINT_FILES, CURVE, CARD)


def check_dest(dest: Path) -> None:
    """OutputError unless ship may write `dest`: new, or holding none of the files
    ship writes, or a checkpoint it shipped before (README.md is its card, headed
    `# glassbox/<name>`). Other entries (features/, the dashboards) are never touched."""
    if dest.exists() and not dest.is_dir():
        raise OutputError(dest, "is a file, not a folder: ship into a folder of checkpoints")
    if not dest.is_dir():
        return
    ours = sorted(n for n in SHIP_FILES if (dest / n).exists())
    card = dest / CARD
    if ours and not (card.is_file() and card.read_text(errors="replace").startswith("# glassbox/")):
        raise OutputError(
            dest,
            f"holds files glassbox ship did not write ({', '.join(ours)}; README.md is no "
            "shipped card): ship into another --to, or move them away",
        )


def ship_checkpoint(run_dir: Path, dest: Path) -> Path:
    """Copy a run's exported checkpoint and its training curve into `dest`: each file
    replaced whole (by rename), every other entry of `dest` (features/) kept."""
    src = run_dir / "checkpoint"
    missing = [f for f in CHECKPOINT_FILES if not (src / f).is_file()]
    if missing:
        raise CheckpointError(src, f"not an exported checkpoint (missing {', '.join(missing)})")

    def write(tmp: Path) -> None:
        for name in CHECKPOINT_FILES:
            shutil.copy2(src / name, tmp / name)
        if (src / CODE_MANIFEST).is_file():  # a code run's corpus: packages, versions, splits
            shutil.copy2(src / CODE_MANIFEST, tmp / CODE_MANIFEST)
        if (run_dir / "logs" / "metrics.csv").is_file():
            training_curve(run_dir / "logs" / "metrics.csv", tmp / CURVE)

    try:
        if not dest.is_dir():
            return atomic_write_dir(dest, write)
        return replace_entries(dest, write)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full(dest, e) from None
        raise


def read_report(path: Path, flag: str) -> Report:
    """The Report at `path`; ArgumentError naming `flag` and the file when it is not
    a report.json that `glassbox compare` wrote."""
    if not path.is_file():
        raise ArgumentError(flag, str(path), "no such file: a report.json of glassbox compare")
    try:
        return Report.read(path)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        why = one_line(f"{type(e).__name__}: {e}")[:160]
        raise ArgumentError(
            flag, str(path), f"is not a report.json written by glassbox compare ({why})"
        ) from None


def ship(
    runs_dir: str | Path,
    to: str | Path = "checkpoints",
    seed: int = 0,
    scores: str | Path | None = None,
    archs: Sequence[str] | None = None,
    copy: bool = True,
    trained_by: str = TRAINED_BY,
    progress: Jobs | None = None,
) -> list[Path]:
    """Ship every architecture of the compare at `runs_dir` (its runs at `seed`) into
    `to`/<arch>/ and write its card from the report at `scores` (default: the compare's
    own report, scored by `trained_by`); copy=False rewrites the cards of checkpoints
    already there. A `to` inside the shipped folder names them glassbox/<to>/<arch>
    (checkpoints/code: glassbox/code/dense). progress: a bar advanced per checkpoint.
    Returns the shipped directories."""
    runs_dir, to = Path(runs_dir), Path(to)
    if to.exists() and not to.is_dir():
        raise OutputError(to, "is a file, not a folder: --to names the folder of checkpoints")
    trained = read_report(runs_dir / "report.json", "RUNS_DIR")
    scored = at_seed(read_report(Path(scores), "--scores") if scores else trained, seed)
    names = archs or list(trained.config["architectures"])
    for arch in names if copy else ():
        check_dest(to / arch)  # every one, before any is written
    out = []
    if progress is not None:
        progress.set_total(len(names))
    for arch in names:
        dest = to / arch
        if copy:
            ship_checkpoint(runs_dir / "runs" / f"{arch}-seed{seed}", dest)
        elif not (dest / CONFIG).is_file():
            raise CheckpointError(dest, "no shipped checkpoint to write a card for (ship it first)")
        card = model_card(
            scored, arch, dest, trained_by, train_command=train_command(trained, arch, seed),
            scored_by=SCORED_BY if scores else trained_by, name=_shipped_name(to, arch),
        )  # fmt: skip
        _write_text(dest / CARD, card)
        out.append(dest)
        if progress is not None:
            progress.done(f"ship: {'wrote the card of' if not copy else 'shipped'} {dest}")
    return out
