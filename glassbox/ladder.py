"""`glassbox ladder`: the gap against size. Every kind (dense, moe, transcoder,
weight_sparse) at three sizes on the Python-code corpus, matched on active (non-zero)
parameters within a size, equal tokens per size:

    rung  d_model x layers   compare config
    S     128 x 2            configs/ladder/S.yaml   (the CPU default size)
    M     256 x 4            configs/ladder/M.yaml
    L     256 x 8            configs/ladder/L.yaml   (Gao et al.'s smallest)

A rung is one `glassbox compare` (its report in <out_dir>/<rung>/); the ladder adds the
overrides of the device it runs on (configs/ladder/ladder.yaml: a CPU's smaller
budget, a GPU's compiled bf16 runs) and then writes the summary
(glassbox.ladder_report: ladder.md, ladder.json, ladder.png). Which rungs: those
asked (--rungs), else every rung on a machine with a GPU and `cpu_rungs` (S) on one
without. It schedules; compare and the analysis do the science.

    glassbox ladder                          the rungs this machine allows, then the summary
    glassbox ladder --rungs S seeds=[0,1]    one rung; key=value overrides go to every rung
    glassbox ladder --params                 each kind's parameters at each rung (no training)
    glassbox ladder --rungs L --train-only --arch dense    train, no scoring (the GPU script)
    glassbox ladder --rungs L --prepare      build the rung's corpus, write its manifest
    glassbox ladder --rungs L --prepare --snapshot .whl/code_corpus.json.xz
                              and the corpus as one file, for a machine that must read
                              the same (data.code.snapshot; benchmarks/scale_gpu.sh)
    glassbox ladder --rungs L --fit 240 --mfu 0.1   the steps that fit 240 s of training
                              (a line per kind: rung, kind, steps, its seconds, tokens a step)
    glassbox ladder --publish docs/results/ladder   each scored rung's report copied there
                              (to be committed), the summary rebuilt from every rung there
    glassbox ladder --rungs M,L --replicates   runs scored before the headline scores kept
                              their bootstrap replicates get them (scoring.add_replicates:
                              minutes a run), then the rungs' reports and the summary
                              (with the overrides the rungs ran with: S 'seeds=[0,1]',
                              or its report is rebuilt from seed 0 alone)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from glassbox.archs.config import ConfigError
from glassbox.archs.errors import ArgumentError
from glassbox.compare_config import CompareConfig, load_compare_config, run_overrides
from glassbox.training.config import CONFIG_DIR, ExperimentConfig, load_config, load_yaml_file
from glassbox.training.data.config import row_length

__all__ = ["LadderConfig", "add_arguments", "load_ladder_config", "main", "rung_params"]

LADDER_CONFIG = CONFIG_DIR / "ladder" / "ladder.yaml"
DEVICES = ("cpu", "gpu")


@dataclass
class LadderConfig:
    out_dir: str = "report_ladder"  # ladder.md/.json/.png; rung R's compare in <out_dir>/R
    # rung -> its compare config, smallest first
    rungs: dict[str, str] = field(default_factory=dict)
    cpu_rungs: list[str] = field(default_factory=list)  # the rungs run where no GPU is found
    # device (cpu | gpu) -> compare or run overrides every rung gets there
    device_overrides: dict[str, list[str]] = field(default_factory=dict)


def load_ladder_config(path: str | Path = LADDER_CONFIG) -> LadderConfig:
    """The ladder YAML, checked: ConfigError (one line) for an unknown key or device."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(LadderConfig), load_yaml_file(Path(path)))
        lc: LadderConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "?") or "?"
        raise ConfigError(key, None, f"{str(e).splitlines()[0]} (in {path})") from None
    for device in lc.device_overrides:
        if device not in DEVICES:
            raise ConfigError(f"device_overrides.{device}", device, f"one of {', '.join(DEVICES)}")
    for rung in lc.cpu_rungs:
        if rung not in lc.rungs:
            raise ConfigError("cpu_rungs", rung, f"not a rung ({', '.join(lc.rungs)})")
    return lc


def machine_device() -> str:
    """gpu where torch sees a CUDA device, else cpu."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def pick_rungs(lc: LadderConfig, asked: str | None, device: str) -> list[str]:
    """The rungs asked ("S,M"), else those the device allows, in the ladder's order."""
    if not asked:
        return list(lc.rungs) if device == "gpu" else list(lc.cpu_rungs)
    names = [n.strip() for n in asked.split(",") if n.strip()]
    for n in names:
        if n not in lc.rungs:
            raise ArgumentError("--rungs", n, f"a rung of the ladder: {', '.join(lc.rungs)}")
    return [n for n in lc.rungs if n in names]


def rung_config(
    lc: LadderConfig, rung: str, device: str, overrides: list[str] = ()
) -> CompareConfig:
    """A rung's compare config: its YAML <- the device's overrides <- out_dir
    <ladder out_dir>/<rung> <- the command line's overrides."""
    over = [*lc.device_overrides.get(device, []), f"out_dir={Path(lc.out_dir) / rung}", *overrides]
    return load_compare_config(lc.rungs[rung], over)


def run_configs(cc: CompareConfig) -> dict[str, ExperimentConfig]:
    """Each architecture's resolved run config at the compare's first seed."""
    seed = f"run.seed={cc.seeds[0]}"
    return {a: load_config(p, [*run_overrides(cc, a), seed]) for a, p in cc.architectures.items()}


# ------------------------------------------------------------------ sizes and budget


def _model_counts(cfg: ExperimentConfig) -> dict[str, int]:
    """total, active and non-zero parameters of a run's model once its weight sparsity
    is reached (every sparsified matrix keeps kept_count of its entries), and its
    training FLOPs per token as training's MFU counts them (Transformer.flops_per_token);
    built on the meta device (no memory, no time)."""
    import torch

    from glassbox.archs import Transformer
    from glassbox.archs.weight_sparsity import kept_count, sparsified

    with torch.device("meta"):
        model = Transformer(cfg.model)
    total, active = model.num_params(), model.num_params(active=True)
    pruned = 0
    ws = cfg.model.weight_sparsity
    if ws.enabled:
        for _, module, attr in sparsified(model):
            w = getattr(module, attr)  # an MoE's (E, d_in, d_out) is E matrices pruned apart
            n = w.shape[0] if w.dim() == 3 else 1
            pruned += n * (w.numel() // n - kept_count(w.numel() // n, ws.target_density))
    seq = cfg.data.code.block_size if cfg.data.source == "code" else cfg.model.max_seq_len
    # what the device computes and MFU counts: the matmuls are dense, zeros included
    flops = model.flops_per_token(seq)
    return {"total": total, "active": min(active, total - pruned), "nonzero": total - pruned,
            "flops_per_token": int(flops)}  # fmt: skip


def rung_params(cc: CompareConfig) -> dict[str, dict[str, int]]:
    """arch -> total, active, nonzero parameters and training FLOPs per token, from the
    rung's configs (the vocabulary is the configs' model.vocab_size)."""
    out = {}
    for arch, cfg in run_configs(cc).items():
        if not cfg.model.vocab_size:
            raise ConfigError(
                f"architectures.{arch}", cc.architectures[arch],
                "needs model.vocab_size set to count its parameters before the data exists",
            )  # fmt: skip
        out[arch] = _model_counts(cfg)
    return out


def tokens_per_step(cfg: ExperimentConfig) -> int:
    """Training tokens of one optimizer step: rows x their length (code and text rows
    are packed blocks; skills rows are pack_length long when packed)."""
    d = cfg.data
    length = row_length(d) or d.pack_length
    if not length:
        raise ConfigError("data.pack_length", 0, "skills rows have no fixed length unpacked")
    return d.batch_size * length * cfg.trainer.accumulate_grad_batches


def steps_for_budget(
    cc: CompareConfig, seconds: float, flops_per_second: float
) -> tuple[int, dict[str, float]]:
    """The optimizer steps every architecture of the rung can take (equal tokens) so
    that all of them train in `seconds` at `flops_per_second` (model FLOPs, as MFU
    counts them): seconds x rate / (tokens per step x the kinds' FLOPs per token
    summed); and each architecture's share of the seconds at that rate."""
    params = rung_params(cc)
    per_step = tokens_per_step(next(iter(run_configs(cc).values())))
    flops = sum(p["flops_per_token"] for p in params.values()) * per_step
    steps = max(1, math.floor(seconds * flops_per_second / flops))
    share = {
        a: steps * per_step * p["flops_per_token"] / flops_per_second for a, p in params.items()
    }
    return steps, share


def print_params(lc: LadderConfig, rungs: list[str], device: str, overrides: list[str]) -> None:
    """A table: rung, kind, total / active / non-zero parameters, their ratio to dense."""
    print(f"{'rung':<5}{'kind':<15}{'total':>13}{'active':>13}{'nonzero':>13}"
          f"{'active/dense':>14}{'MFLOP/token':>13}")  # fmt: skip
    for rung in rungs:
        params = rung_params(rung_config(lc, rung, device, overrides))
        dense = params.get("dense", {}).get("active") or 1
        for arch, p in params.items():
            print(f"{rung:<5}{arch:<15}{p['total']:>13,}{p['active']:>13,}{p['nonzero']:>13,}"
                  f"{p['active'] / dense:>14.4f}{p['flops_per_token'] / 1e6:>13.1f}")  # fmt: skip


# ------------------------------------------------------------------ the work


def corpus_file(lc: LadderConfig, rung: str) -> Path:
    """<out_dir>/<rung>.corpus.json: the corpus a rung read (beside, not inside, the
    rung's compare folder, which holds only what compare writes)."""
    return Path(lc.out_dir) / f"{rung}.corpus.json"


def write_corpus(lc: LadderConfig, rung: str, cc: CompareConfig) -> dict[str, Any]:
    """Build (or read from the cache) the rung's data, which its architectures share,
    and write corpus_file: rows and tokens per split and, for code, the corpus
    manifest (training.data.code: the Python, each package's split, distribution and
    version, the files left out) with its summary (`summary`: what ladder.md says).
    Returns that dict."""
    from glassbox.runs import load_suite
    from glassbox.training.data.code import code_manifest

    cfg = next(iter(run_configs(cc).values()))
    rows = {k: len(ds) for k, ds in load_suite(cfg.data).splits.items()}
    length = cfg.data.code.block_size if cfg.data.source == "code" else cfg.data.text.block_size
    out: dict[str, Any] = {"rows": rows, "tokens_at_most": {k: n * length for k, n in rows.items()}}
    if cfg.data.source == "code":
        m = out["manifest"] = code_manifest(cfg.data)
        out["summary"] = {"python": m["python"], "packages": len(m["packages"]),
                          "chars": m["chars"], "package_names": sorted(m["packages"])}  # fmt: skip
    path = corpus_file(lc, rung)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def train_only(cc: CompareConfig, archs: list[str] | None) -> None:
    """Train the rung's runs (of `archs`, else all) that are not current, as compare
    does (the same run directories and keys), and score nothing: a later `glassbox
    ladder` on the same rung finds them current and only scores."""
    from glassbox.archs.checkpoint import shipped_dir
    from glassbox.archs.writes import close_output_dir, open_output_dir
    from glassbox.compare import COMPARE, plan_runs
    from glassbox.scheduling import train_runs

    for a in archs or []:
        if a not in cc.architectures:
            raise ArgumentError(
                "--arch", a, f"an architecture of the rung: {', '.join(cc.architectures)}"
            )
    out = Path(cc.out_dir)
    plan = [r for r in plan_runs(cc, out) if not archs or r.arch in archs]
    keep = open_output_dir(out, COMPARE, protected=[shipped_dir()])
    train_runs(plan, cc.jobs)
    close_output_dir(out, COMPARE, keep)


def run_ladder(lc: LadderConfig, rungs: list[str], device: str, overrides: list[str]) -> Path:
    """Compare each rung (training what is not current), then write the summary of
    every rung of the ladder that has a report. Returns ladder.md's path."""
    from glassbox.compare import compare

    for rung in rungs:
        print(f"ladder: rung {rung} ({lc.rungs[rung]}, {device})")
        cc = rung_config(lc, rung, device, overrides)
        compare(cc)
        write_corpus(lc, rung, cc)
    return summarise(lc, device, overrides)


def rung_report(lc: LadderConfig, rung: str, device: str, overrides: list[str]) -> Path:
    """Where the rung's compare writes its report.json (in its out_dir)."""
    return Path(rung_config(lc, rung, device, overrides).out_dir) / "report.json"


def summarise(lc: LadderConfig, device: str, overrides: list[str]) -> Path:
    """ladder.md, .json, .png from every rung's report.json (and the corpus the
    ladder recorded of it, corpus_file)."""
    from glassbox.ladder_report import read_rung, write_ladder_summary

    done = []
    for rung in lc.rungs:
        report = rung_report(lc, rung, device, overrides)
        corpus = corpus_file(lc, rung)
        if report.is_file():
            saved = json.loads(corpus.read_text()) if corpus.is_file() else {}
            done.append(read_rung(rung, report, saved.get("summary")))
    if not done:
        raise ArgumentError(
            "--out", lc.out_dir, "no rung there has a report.json yet: run the ladder first"
        )
    return write_ladder_summary(Path(lc.out_dir), done)


def publish(lc: LadderConfig, device: str, overrides: list[str], dest: str | Path) -> Path:
    """Copy every rung with a report in the ladder's folder into `dest`, to be
    committed (docs/results/ladder): the rung's report (Report.publish: report.md,
    .html, .json, pareto.png and its runs' plots, links relative) into <dest>/<rung>/
    and its corpus record to <dest>/<rung>.corpus.json; then rebuild the summary in
    `dest` from every rung published there, earlier ones included. A ladder scored over
    several sessions or machines so keeps each rung once its run folders are gone.
    Returns ladder.md's path in `dest`."""
    from glassbox.report import Report

    dest = Path(dest)
    if dest.resolve() == Path(lc.out_dir).resolve():
        raise ArgumentError("--publish", str(dest), "a folder other than the ladder's own (--out)")
    published = []
    for rung in lc.rungs:
        report = rung_report(lc, rung, device, overrides)
        if not report.is_file():
            continue
        Report.read(report).publish(dest / rung)
        corpus = corpus_file(lc, rung)
        if corpus.is_file():
            shutil.copy2(corpus, dest / corpus.name)
        published.append(rung)
    if not published:
        raise ArgumentError(
            "--out", lc.out_dir, "no rung there has a report.json to publish: run the ladder first"
        )
    print(f"ladder: published {', '.join(published)} into {dest}")
    return summarise(replace(lc, out_dir=str(dest)), device, overrides)


# ------------------------------------------------------------------ the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `glassbox ladder` (glassbox.cli adds the command)."""
    p.add_argument("overrides", nargs="*", help="key=value for every rung: seeds=[0], trainer.max_steps=100")  # fmt: skip
    p.add_argument("--config", default=str(LADDER_CONFIG), help="the ladder's YAML (configs/ladder/ladder.yaml)")  # fmt: skip
    p.add_argument("--rungs", default=None, help="e.g. S or M,L (default: what the machine allows)")
    p.add_argument("--device", choices=["auto", *DEVICES], default="auto", help="whose overrides apply (auto: gpu where CUDA is)")  # fmt: skip
    p.add_argument("--out", default=None, help="the ladder's folder (default: the YAML's out_dir)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--params", action="store_true", help="print each kind's parameters per rung; train nothing")  # fmt: skip
    what.add_argument("--prepare", action="store_true", help="build each rung's data, write <out>/<rung>.corpus.json")  # fmt: skip
    what.add_argument("--train-only", action="store_true", help="train the rungs' runs, score nothing")  # fmt: skip
    what.add_argument("--summary", action="store_true", help="rewrite ladder.md/.json/.png from the rungs' reports")  # fmt: skip
    what.add_argument("--publish", default=None, metavar="DEST", help="copy each scored rung's report into DEST/<rung>/ and rebuild the summary there")  # fmt: skip
    what.add_argument("--replicates", action="store_true", help="add the bootstrap replicates to runs scored before they were kept, then report")  # fmt: skip
    what.add_argument("--fit", type=float, default=None, metavar="SECONDS", help="print the steps every kind can take in SECONDS of training")  # fmt: skip
    p.add_argument("--arch", default=None, help="--train-only: these architectures (dense,moe)")
    p.add_argument("--snapshot", default=None, metavar="FILE", help="--prepare: also write the rung's corpus snapshot to FILE (data.code.snapshot elsewhere)")  # fmt: skip
    p.add_argument("--mfu", type=float, default=0.1, help="--fit: the model FLOPs utilisation assumed")  # fmt: skip


def _peak(device: str) -> float:
    """The device's peak FLOP/s for MFU (training.flops): bf16 on a GPU, fp32 on a CPU."""
    import torch

    from glassbox.training.flops import device_peak_flops

    if device == "gpu":
        if not torch.cuda.is_available():
            raise ArgumentError("--device", device, "this machine has no CUDA device")
        return device_peak_flops(torch.device("cuda"), "bf16-mixed")[0]
    return device_peak_flops(torch.device("cpu"), "32-true")[0]


def main(args: argparse.Namespace) -> int:
    """`glassbox ladder`: what its arguments ask (the module docstring)."""
    lc = load_ladder_config(args.config)
    if args.out:
        lc.out_dir = args.out
    device = machine_device() if args.device == "auto" else args.device
    rungs = pick_rungs(lc, args.rungs, device)
    over = list(args.overrides)
    if args.snapshot and not (args.prepare and len(rungs) == 1):
        raise ArgumentError("--snapshot", args.snapshot, "goes with --prepare and one rung (--rungs L)")  # fmt: skip
    if args.params:
        print_params(lc, rungs, device, over)
    elif args.summary:
        print(f"wrote {summarise(lc, device, over)}")
    elif args.publish:
        print(f"wrote {publish(lc, device, over, args.publish)}")
    elif args.fit is not None:
        rate = args.mfu * _peak(device)
        for rung in rungs:  # "rung arch steps seconds tokens-per-step", a line per architecture
            cc = rung_config(lc, rung, device, over)
            steps, share = steps_for_budget(cc, args.fit, rate)
            per_step = tokens_per_step(next(iter(run_configs(cc).values())))
            for arch, sec in share.items():
                print(f"{rung} {arch} {steps} {sec:.0f} {per_step}")
    elif not (args.prepare or args.train_only):
        from glassbox.compare import add_replicates_to_runs

        for rung in rungs if args.replicates else []:
            add_replicates_to_runs(rung_config(lc, rung, device, over))
        print(f"wrote {run_ladder(lc, rungs, device, over)}")
    for rung in rungs if (args.prepare or args.train_only) else []:
        cc = rung_config(lc, rung, device, over)
        if args.prepare:
            counts = write_corpus(lc, rung, cc)
            print(f"ladder: {rung} data: rows {counts['rows']}; {corpus_file(lc, rung)}")
            if args.snapshot:
                from glassbox.training.data.code import write_snapshot

                snap = write_snapshot(next(iter(run_configs(cc).values())).data, args.snapshot)
                print(f"ladder: {rung} corpus snapshot: {snap['path']}, {snap['bytes'] / 1e6:.1f} MB "
                      f"({snap['chars']:,} characters), sha256 {snap['sha256'][:16]}")  # fmt: skip
        else:
            train_only(cc, args.arch.split(",") if args.arch else None)
    return 0
