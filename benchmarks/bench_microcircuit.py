"""A micro-task circuit's mask step with the prompts grouped by length against the
same step on prompts right-padded to the longest, as ratios measured alternately in
one run.

    .venv/bin/python benchmarks/bench_microcircuit.py                  # checkpoints/code/moe
    .venv/bin/python benchmarks/bench_microcircuit.py --checkpoint report_ladder/M/runs/moe-seed0/checkpoint

The step is one Adam step of analysis.microcircuits.learn_ranking on a code task's
fit third (32 of 96 prompts): the task's mask and its nonsense twin's stacked into
one forward, the pair loss, the backward to the masks (the weights frozen). It is
most of a circuit's time: 40 of them a task, then the size searches' forwards.
Contenders: `padded` (mask_diffs with max_groups=1, every prompt computed to the
longest one's length) and `grouped` (max_groups=4, analysis.microcircuits'
default). Both read the same logits up to float rounding: the script prints the
largest difference of the logit differences and of the masks' gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from glassbox.analysis.batches import suite_batches
from glassbox.analysis.code_tasks import code_task_data
from glassbox.analysis.mean_ablation import unit_groups, unit_means
from glassbox.analysis.microcircuits import length_groups, mask_diffs
from glassbox.analysis.microtasks import task_loss
from glassbox.archs.checkpoint import load_pretrained
from glassbox.archs.units import frozen
from glassbox.training.evaluate import load_suite_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/code/moe")
    ap.add_argument("--task", default="close_quote")
    ap.add_argument("--reps", type=int, default=3, help="rounds, each contender once")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_pretrained(args.checkpoint)
    suite, _ = load_suite_for(args.checkpoint, model)
    data = code_task_data(suite, "val", [args.task], n=96)[args.task]
    fit = data.subset(torch.arange(len(data) // 3))
    nonsense = fit.nonsense(0)
    groups = unit_groups(model)
    means = unit_means(model, suite_batches(suite, "val", 64), groups)
    total = sum(g.n_units for g in groups)

    def step(max_groups: int):
        m = torch.full((2, total), 0.95, requires_grad=True)
        with frozen(model):
            d = mask_diffs(model, fit, groups, means, m, per_mask=[fit, nonsense],
                           max_groups=max_groups)  # fmt: skip
            (grad,) = torch.autograd.grad(task_loss(d).mean(1).sum(), m)
        return d.detach(), grad

    padded = fit.input_ids.shape[0] * int(fit.position.max())
    grouped = sum(int(fit.position[i].max()) * len(i) for i in length_groups(fit.position))
    print(f"{args.checkpoint}, task {args.task}: {len(fit)} prompts, {total} units")
    print(f"tokens a forward computes: grouped / padded = {grouped} / {padded} = "
          f"{grouped / padded:.2f} (real tokens: {int(fit.position.sum()) / padded:.2f})")  # fmt: skip
    (d1, g1), (d4, g4) = step(1), step(4)
    print(f"largest difference: logit differences {float((d1 - d4).abs().max()):.1e}, "
          f"mask gradients {float((g1 - g4).abs().max()):.1e}")  # fmt: skip
    times: dict[int, list[float]] = {1: [], 4: []}
    for r in range(args.reps):
        for n in (1, 4) if r % 2 == 0 else (4, 1):
            t = time.perf_counter()
            step(n)
            times[n].append(time.perf_counter() - t)
    p, g = statistics.median(times[1]), statistics.median(times[4])
    print(f"mask step, median of {args.reps}: padded {p:.2f} s, grouped {g:.2f} s, "
          f"grouped / padded = {g / p:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
