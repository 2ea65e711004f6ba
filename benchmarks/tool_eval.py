"""The tool-calling model against the dense baseline trained without tools, on the
same skills at the same budget: exact match on additions 2x and 4x longer than
trained, counterfactual reliance, call precision / recall, and facts answered
through lookup against facts recalled from weights (analysis.tools.tool_report).

    # train both (the tool model on configs/tool.yaml; the dense baseline on
    # configs/dense.yaml with the same addition sizes) and compare:
    python benchmarks/tool_eval.py --train --steps 3000 --out runs/tool_eval
    # or compare two checkpoints already trained:
    python benchmarks/tool_eval.py --tool runs/tool/checkpoint --dense runs/dense/checkpoint

From Python (e.g. the report): `compare_tool_dense(tool_ckpt, dense_ckpt)` returns
both reports and the table rows. Prints a markdown table; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from glassbox.analysis.tools import tool_report  # noqa: E402
from glassbox.archs.tools.config import ToolsConfig  # noqa: E402

# (summary key, label) in the order the table shows them
ROWS = (
    ("tools.addition_exact_match", "addition exact match, up to N digits (test split)"),
    ("tools.addition_2x", "addition exact match, 2N digits"),
    ("tools.addition_4x", "addition exact match, 4N digits"),
    ("tools.facts_accuracy", "facts accuracy, held-out phrasing (test split)"),
    ("tools.facts_accuracy_train", "facts accuracy, trained queries"),
    ("tools.exact_match", "addition + facts exact match (test split)"),
    ("tools.exact_match_withheld", "... with the tool's result withheld"),
    ("interp.tool_reliance", "counterfactual reliance (answer = injected result)"),
    ("tools.counterfactual_follows_true", "counterfactual: answer = true result"),
    ("interp.call_precision", "call precision"),
    ("interp.call_recall", "call recall"),
    ("interp.argument_accuracy", "argument accuracy"),
)


def evaluate_checkpoint(path: str | Path, tools: ToolsConfig | None = None, **kw) -> dict:
    """tool_report of a checkpoint on the data it was trained on (its config.yaml's
    data section; its `tools` section, when there is one, unless `tools` is given)."""
    from glassbox.archs.checkpoint import load_pretrained, read_config, resolve_checkpoint
    from glassbox.training.evaluate import load_suite_for

    path = resolve_checkpoint(path)
    model = load_pretrained(path)
    suite, data_cfg = load_suite_for(path, model)
    if tools is None:
        section = read_config(path).get("tools")
        tools = ToolsConfig(**section) if section else ToolsConfig()
    return tool_report(model, suite, data_cfg=data_cfg, tools=tools, **kw)


def compare_tool_dense(
    tool_ckpt: str | Path, dense_ckpt: str | Path, tools: ToolsConfig | None = None, **kw
) -> dict[str, Any]:
    """Both reports and the table: {"tool": report, "dense": report, "rows":
    [(key, label, tool value, dense value)]}. The length factors and example
    counts come from `tools` (ToolsConfig defaults otherwise), the same for both."""
    tools = tools or ToolsConfig()
    tool = evaluate_checkpoint(tool_ckpt, tools, **kw)
    dense = evaluate_checkpoint(dense_ckpt, tools, **kw)
    keys = [(k, label) for k, label in ROWS]
    for k in tools.length_factors:  # factors beyond the default 2 and 4
        key = f"tools.addition_{k}x"
        if all(key != r[0] for r in keys):
            keys.append((key, f"addition exact match, {k}N digits"))
    rows = [(k, label, tool["summary"].get(k), dense["summary"].get(k)) for k, label in keys]
    return {"tool": tool, "dense": dense, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    def cell(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = ["| metric | tool model | dense baseline |", "|---|---|---|"]
    lines += [f"| {label} | {cell(t)} | {cell(d)} |" for _, label, t, d in result["rows"]]
    return "\n".join(lines)


def train_pair(out: Path, steps: int, extra: list[str]) -> tuple[Path, Path]:
    """Train the tool model (configs/tool.yaml) and the dense baseline
    (configs/dense.yaml, addition sized as skills_tools.yaml) for `steps` steps."""
    from glassbox.training.config import load_config
    from glassbox.training.train import train

    tool_cfg = load_config(ROOT / "configs" / "tool.yaml")
    common = [f"trainer.max_steps={steps}", "trainer.progress_bar=false", *extra]
    addition = tool_cfg.data.addition
    dense_extra = [
        f"data.addition.max_digits={addition.max_digits}",
        f"data.addition.ood_max_digits={addition.ood_max_digits}",
    ]
    tool = train(
        load_config(ROOT / "configs" / "tool.yaml", [*common, f"run.out_dir={out / 'tool'}"])
    )
    dense = train(
        load_config(
            ROOT / "configs" / "dense.yaml",
            [*common, *dense_extra, "run.name=dense_plain", f"run.out_dir={out / 'dense'}"],
        )
    )
    return tool, dense


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tool", help="checkpoint of the tool model")
    p.add_argument("--dense", help="checkpoint of the dense baseline trained without tools")
    p.add_argument("--train", action="store_true", help="train both first (under --out)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of each (--train)")
    p.add_argument("--out", default="runs/tool_eval", help="run directory of --train")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value for both trainings")
    p.add_argument("--examples", type=int, default=128, help="examples per skill and per length")
    p.add_argument("--factors", type=int, nargs="+", default=[2, 4], help="length factors")
    p.add_argument(
        "--counterfactual",
        default="offset",
        choices=["offset", "uniform"],
        help="what replaces a calculator result (ToolsConfig.counterfactual_numbers)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    p.add_argument("--json", help="write both reports and the table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train:
        args.tool, args.dense = train_pair(Path(args.out), args.steps, args.set)
    if not (args.tool and args.dense):
        p.error("give --tool and --dense checkpoints, or --train")
    tools = ToolsConfig(
        eval_examples=args.examples,
        length_factors=list(args.factors),
        counterfactual_numbers=args.counterfactual,
    )
    t0 = time.perf_counter()
    result = compare_tool_dense(args.tool, args.dense, tools)
    print(markdown(result))
    print(
        f"\n({args.examples} examples per skill and per length; {time.perf_counter() - t0:.0f} s)"
    )
    for line in result["tool"]["traces"][:2]:
        print("\n" + line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
