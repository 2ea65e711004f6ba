"""Packed rows against one example per row, on the skill suite at the default size.

One training step (forward, loss, backward, AdamW) on batches of the embedded suite,
as `glassbox train` builds them: unpadded (data.batch_size examples per row, padded
to the batch's longest) and packed (data.pack_length rows: several examples per
row, block-diagonal attention). Both are timed alternately in one run, the order
flipping every repetition. Reported: real (non-padding) tokens per second of each,
the median of the per-repetition ratios packed / unpadded (above 1: packing is
faster) with its IQR, and the achieved model FLOP/s of each against this machine's
fp32 matmul peak (training.flops.measure_matmul_peak, measured in the same run):
the CPU's MFU. With --compile, the packed step under torch.compile against eager.

    python benchmarks/bench_packing.py                        # dense, 1 thread
    python benchmarks/bench_packing.py --kind moe --reps 20
    python benchmarks/bench_packing.py --compile              # + compiled / eager
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from glassbox.archs import Transformer
from glassbox.training.config import load_config
from glassbox.training.data import build_datasets, collate
from glassbox.training.data.packing import (
    PackedBatches,
    PackedBatchSampler,
    example_lengths,
)
from glassbox.training.datamodule import ResumableSampler
from glassbox.training.flops import measure_matmul_peak
from glassbox.training.skill_scores import masked_lm_loss


def batches(suite, cfg, packed: bool, n: int) -> list[dict]:
    ds = suite.splits["train"]
    if packed:
        sampler = PackedBatchSampler(
            example_lengths(ds), cfg.data.pack_length, cfg.data.batch_size, seed=0
        )
        fetch = PackedBatches(ds, cfg.data.pack_length, suite.pad_id)
        it = iter(sampler)
        return [fetch[next(it)] for _ in range(n)]
    it = iter(ResumableSampler(len(ds), cfg.data.batch_size, seed=0))
    out = []
    for _ in range(n):
        rows = [ds[next(it)] for _ in range(cfg.data.batch_size)]
        out.append(collate(rows, suite.pad_id))
    return out


def step(model, opt, batch) -> None:
    logits = model(batch["input_ids"], segment_ids=batch.get("segment_ids"))
    loss = masked_lm_loss(logits, batch["input_ids"], batch["loss_mask"])
    for aux in model.aux_losses().values():
        loss = loss + aux
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed_step(model, opt, batch) -> float:
    t0 = time.perf_counter()
    step(model, opt, batch)
    return time.perf_counter() - t0


def compare(contenders: dict, reps: int, warmup: int) -> dict[str, list[float]]:
    """contenders: name -> (model, opt, batches). Seconds per step of each, measured
    alternately (order flipped every repetition), after `warmup` untimed steps."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(warmup + reps):
        for name in names if r % 2 == 0 else names[::-1]:
            model, opt, bs = contenders[name]
            dt = timed_step(model, opt, bs[r % len(bs)])
            if r >= warmup:
                times[name].append(dt)
    return times


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def parse_args() -> argparse.Namespace:
    """The command line: the kind, the packing, repetitions, threads, compile."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kind", default="dense", help="configs/<kind>.yaml: dense | moe | transcoder")
    ap.add_argument("--pack-length", type=int, default=128, help="tokens per packed row")
    ap.add_argument("--rows", type=int, default=4, help="packed rows per batch")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (configs/trainer/cpu.yaml: 1)"
    )
    ap.add_argument("--compile", action="store_true", help="also time the packed step compiled")
    return ap.parse_args()


def print_rows(
    contenders: dict, times: dict[str, list[float]], flops_per_token: float, peak: float
) -> dict[str, list[float]]:
    """Print a row per contender (real tokens per batch, fill, ms per step, tokens/s,
    GFLOP/s, MFU); returns each one's real tokens/s per repetition."""
    tps = {}
    for name, (_, _, bs) in contenders.items():
        real = statistics.mean(float(b["attention_mask"].sum()) for b in bs)
        fill = statistics.mean(float(b["attention_mask"].float().mean()) for b in bs)
        per_rep = [real / t for t in times[name]]
        tps[name] = per_rep
        med = statistics.median(per_rep)
        print(
            f"{name:<16}{real:>15.0f}{fill:>7.2f}{1e3 * statistics.median(times[name]):>9.2f}"
            f"{med:>9.0f}{med * flops_per_token / 1e9:>9.2f}{med * flops_per_token / peak:>7.3f}"
        )
    return tps


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(f"configs/{args.kind}.yaml")
    suite = build_datasets(cfg.data)
    unpadded_batch = cfg.data.batch_size
    packed_cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, pack_length=args.pack_length, batch_size=args.rows)
    )
    model_cfg = dataclasses.replace(cfg.model, vocab_size=suite.tokenizer.get_vocab_size())
    longest = int(example_lengths(suite.splits["train"]).max())

    def contender(packed: bool, compiled: bool = False):
        torch.manual_seed(0)
        model = Transformer(model_cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        run = torch.compile(model) if compiled else model
        bs = batches(suite, packed_cfg if packed else cfg, packed, 8)
        return run, opt, bs

    contenders = {"unpadded": contender(False), "packed": contender(True)}
    if args.compile:
        contenders["packed+compile"] = contender(True, compiled=True)
        step(*contenders["packed+compile"][:2], contenders["packed+compile"][2][0])  # compile
    peak = measure_matmul_peak(torch.device("cpu"), "fp32")
    times = compare(contenders, args.reps, args.warmup)
    flops_per_token = contenders["unpadded"][0].flops_per_token(longest)

    print(
        f"glassbox bench_packing: {args.kind} at the default size ({model_cfg.d_model} d_model, "
        f"{model_cfg.n_layers} layers, {Transformer(model_cfg).num_params():,} params), "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {args.reps} reps"
    )
    print(
        f"unpadded: {unpadded_batch} examples per batch; packed: {args.rows} rows of "
        f"{args.pack_length} tokens; measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'contender':<16}{'real tok/batch':>15}{'fill':>7}{'ms/step':>9}{'tok/s':>9}{'GFLOP/s':>9}{'MFU':>7}"
    )
    tps = print_rows(contenders, times, flops_per_token, peak)
    ratios = [p / u for p, u in zip(tps["packed"], tps["unpadded"])]
    lo, med, hi = quartiles(ratios)
    print(f"tokens/s packed / unpadded: {med:.3f} (IQR {lo:.3f}-{hi:.3f})")
    if args.compile:
        ratios = [c / p for c, p in zip(tps["packed+compile"], tps["packed"])]
        lo, med, hi = quartiles(ratios)
        print(f"tokens/s compiled / eager (packed): {med:.3f} (IQR {lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
