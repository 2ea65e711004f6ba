"""The `glassbox` command line (docs/design.md, "Command line"). What a user reads is
DESCRIPTION and each command's help and example (`glassbox CMD --help`).

Each command imports what it needs inside its function, so that `glassbox --help`,
`eval` or `generate` do not load Lightning, the analysis suite or the export peers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from glassbox.archs.config import ConfigError
from glassbox.archs.errors import ArgumentError, CheckpointError, GlassboxError, one_line
from glassbox.archs.generation import check_prompt_fits, check_sampling_args
from glassbox.archs.writes import (
    DISK_FULL,
    Output,
    claim_output_dir,
    close_output_dir,
    disk_full,
    open_output_dir,
    write_output_dir,
)
from glassbox.console import PARENT_ENV, Jobs, exit_with, quiet_third_party
from glassbox.training.evaluate import load_suite_for


def _cmd_train(args) -> int:
    from glassbox.training.config import load_config
    from glassbox.training.train import train

    cfg = load_config(args.config, args.overrides)
    export = train(cfg)
    print(f"exported checkpoint: {export}")
    return 0


def _cmd_eval(args) -> int:
    from glassbox.archs.checkpoint import load_pretrained, read_metrics, resolve_checkpoint
    from glassbox.training.evaluate import evaluate_model

    path = resolve_checkpoint(args.checkpoint)
    model = load_pretrained(path, device=args.device)
    suite, data_cfg = load_suite_for(path, model)
    metrics = evaluate_model(
        model, suite, batch_size=data_cfg.batch_size, max_batches=args.max_batches
    )
    saved = read_metrics(path)
    metrics["params"] = {"total": model.num_params(), "active": model.num_params(active=True)}
    if "train" in saved:
        metrics["train"] = saved["train"]
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(
            f"val_loss {metrics['val_loss']:.4f}  perplexity {metrics['perplexity']:.3f}  ({metrics['split']} split)"
        )
        for name, vals in sorted(metrics.get("skills", {}).items()):
            cols = "  ".join(f"{k} {v:.3f}" for k, v in vals.items())
            print(f"  {name:<10} {cols}")
    return 0


def _cmd_analyze(args) -> int:
    from glassbox.analysis.code_analysis import not_applicable_line as code_not_applicable
    from glassbox.analysis.interp import format_scores
    from glassbox.analysis.pipeline import analyze
    from glassbox.analysis.text_analysis import not_applicable_line
    from glassbox.archs.checkpoint import (
        load_pretrained,
        read_config,
        resolve_checkpoint,
        shipped_dir,
    )

    path = resolve_checkpoint(args.checkpoint)
    out = _analysis_dir(args, path)  # checked before the model loads, made once it has
    model = load_pretrained(path, device=args.device)
    suite, _ = load_suite_for(path, model)
    reference = load_pretrained(args.reference, device=args.device) if args.reference else None
    keep = open_output_dir(out, ANALYZE, [path], [shipped_dir()], args.force)
    # the untrained twin is built at the seed the run trained from (run.seed)
    init_seed = int((read_config(path).get("run") or {}).get("seed", 0))
    with Jobs(2, "analyze") as progress:
        result = analyze(
            model, suite, ("interp", "mechanistic"), out, n_examples=args.examples,
            init_seed=init_seed, checkpoint=path, reference_model=reference, progress=progress,
        )  # fmt: skip
    result.write(out / "analysis.json")
    close_output_dir(out, ANALYZE, keep)
    summary = result.summary
    if result.data == "text":  # no ground truth: the scores by domain
        print(result.sections["interp"]["held_out"]["line"])
    print("\n".join(format_scores(summary)))
    print(f"untrained: the same config at run.seed={init_seed}, at initialisation; token: what")
    print("the current token alone predicts; the last two columns are the lifts over them.")
    if result.data in ("text", "code"):  # by domain (package); what does not apply, said
        rest = {k: v for k, v in summary.items() if k.startswith(("domains.", "mechanistic."))}
        for k, v in sorted(rest.items()):
            print(f"{k:<36} {v:9.4f}" if isinstance(v, float) else f"{k:<36} {v!s:>9}")
        print(not_applicable_line() if result.data == "text" else code_not_applicable())
    print(f"wrote {out / 'analysis.json'} (analysis.pipeline's schema) and plots in {out}")
    return 0


# what analyze and the features export write (archs.writes): a folder written before
# the marker existed is known by its analysis.json, or its dashboard index
ANALYZE = Output("glassbox analyze", legacy=lambda d: (d / "analysis.json").is_file())
FEATURES = Output(
    "glassbox export --to features",
    legacy=lambda d: (d / "index.json").is_file() and (d / "index.html").is_file(),
    owns=("index.json", "index.html", "layer*.json", "layer*.html"),
    marker=False,  # the dashboards folder is a format of its own (analysis/DASHBOARDS.md)
)


def _check_examples(n: int) -> None:
    if n < 1:
        raise ArgumentError("--examples", n, "a positive number of held-out examples to read")


def _analysis_dir(args, path: Path) -> Path:
    """Where analyze writes, checked (archs.writes.claim_output_dir): --out; else
    beside a local checkpoint (runs/dense/analysis); else, for a shipped or downloaded
    checkpoint, ./analysis-<name> in the working directory, said on stdout."""
    from glassbox.archs.checkpoint import shipped_dir

    _check_examples(args.examples)
    if args.out:
        out = Path(args.out)
    elif Path(args.checkpoint).is_dir() and not _inside(path, shipped_dir()):
        out = path.parent / "analysis"
    else:
        out = Path(f"analysis-{Path(str(args.checkpoint).rstrip('/')).name}")
        print(f"analyze: writing to {out}/ in the working directory (--out names another)")
    claim_output_dir(out, ANALYZE, [path], [shipped_dir()], args.force)
    return out


def _inside(path: Path, root: Path) -> bool:
    path, root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return path == root or root in path.parents


def _cmd_compare(args) -> int:
    from glassbox.compare import add_replicates_to_runs, compare, load_compare_config

    cc = load_compare_config(args.config, args.overrides)
    if args.replicates:  # runs scored before their replicates were kept: those added first
        add_replicates_to_runs(cc)
    report = compare(cc)
    print(report.markdown_summary())
    print(f"wrote {report.path}, {report.path.with_suffix('.html')} and report.json")
    return 0


def _cmd_generate(args) -> int:
    from glassbox.archs.checkpoint import load_pretrained

    check_sampling_args(args.max_new_tokens, args.temperature, args.top_k)
    model = load_pretrained(args.checkpoint, device=args.device)
    tok = model.tokenizer
    if tok is None:
        raise ValueError(f"{args.checkpoint} has no tokenizer.json; cannot encode a text prompt")
    ids = tok.encode(args.prompt).ids
    bos = tok.token_to_id("<bos>")
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    unk = tok.token_to_id("<unk>")
    if unk is not None and unk in ids:
        unknown = [w for w in args.prompt.split() if tok.token_to_id(w) is None]
        print(f"warning: not in the vocabulary: {' '.join(unknown)}", file=sys.stderr)
    check_prompt_fits(len(ids), 1, model.cfg.max_seq_len)  # then max_new_tokens is clamped
    stops = [t for t in (tok.token_to_id("<eos>"),) if t is not None]
    kwargs = dict(
        max_new_tokens=min(args.max_new_tokens, model.cfg.max_seq_len - len(ids)),
        temperature=args.temperature,
        top_k=args.top_k,
        stop_tokens=stops,
        seed=args.seed,
    )
    registry = _tool_registry(args.checkpoint) if not args.no_tools else None
    if registry is None:
        out = model.generate([ids], **kwargs)
        print(tok.decode(out.continuations[0], skip_special_tokens=False))
        return 0
    from glassbox.archs.tools import format_trace, generate_with_tools

    out = generate_with_tools(model, [ids], tok, registry, **kwargs)
    print(tok.decode(out.continuations[0], skip_special_tokens=False))
    print(format_trace(out) if out.trace else "(no tool calls)")
    return 0


def _cmd_trace(args) -> int:
    """The exact attribution graph of one prompt (analysis.graphs), as circuit-tracer's
    graph file in --out with the checkpoint's dashboards linked."""
    import time

    from glassbox.analysis.graphs import trace
    from glassbox.analysis.graphs.export import write_graph
    from glassbox.archs.checkpoint import load_pretrained, resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    model = load_pretrained(path, device=args.device).eval()
    start = time.perf_counter()
    graph = trace(model, args.prompt, args.target, args.alternative, max_nodes=args.max_nodes)
    seconds = time.perf_counter() - start
    features = path / "features" if (path / "features" / "index.json").is_file() else None
    slug = args.slug or f"{model.cfg.name}-{graph.target.id}"
    out = write_graph(graph, args.out, slug, features_dir=features)
    c = graph.completeness
    print(
        f"traced {graph.target.label} (logit {c['logit']:.4f}) in {seconds:.2f}s: "
        f"{graph.n_units} unit nodes, completeness error {c['logit_rel_error']:.1e}; wrote {out}"
    )
    return 0


def _tool_registry(checkpoint: str):
    """The tools a checkpoint was trained to call (None if it calls none): rebuilt from
    its data config, so `lookup` answers from the same knowledge graph."""
    from omegaconf import OmegaConf

    from glassbox.archs.checkpoint import read_config, resolve_checkpoint
    from glassbox.archs.tools.config import ToolsConfig
    from glassbox.training.data import data_config_from_dict
    from glassbox.training.data.skills.tool_call import suite_registry, uses_tools

    config = read_config(resolve_checkpoint(checkpoint))
    if "data" not in config:
        return None
    data = data_config_from_dict(config["data"])
    tools: ToolsConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(ToolsConfig), config.get("tools", {}))
    )  # type: ignore[assignment]
    if data.source != "skills" or not uses_tools(data, tools.enabled):
        return None
    return suite_registry(data, max_digits=tools.calculator_max_digits)


def _cmd_export(args) -> int:
    if args.to == "features":
        return _export_features(args)
    if args.to == "hf":
        from glassbox.archs.export.hf import export_hf

        export_hf(args.checkpoint, args.dir, force=args.force)
    elif args.to == "bf16":
        from glassbox.archs.export.bf16 import export_bf16

        export_bf16(args.checkpoint, args.dir, force=args.force)
    else:
        from glassbox.archs.export.transformer_lens import export_transformer_lens

        export_transformer_lens(args.checkpoint, args.dir, force=args.force)
    print(f"exported {args.checkpoint} to {args.dir} ({args.to})")
    return 0


def _export_features(args) -> int:
    """The dashboards of every readable unit (analysis.dashboards, schema in
    analysis/DASHBOARDS.md) on the checkpoint's own data."""
    from glassbox.analysis.dashboards import export_dashboards
    from glassbox.archs.checkpoint import load_pretrained, resolve_checkpoint, shipped_dir

    _check_examples(args.examples)
    path = resolve_checkpoint(args.checkpoint)
    # a checkpoint's own features/ folder is part of it, shipped ones included (make ship)
    own = Path(os.path.realpath(args.dir)) == Path(os.path.realpath(path / "features"))
    where = (args.dir, FEATURES, [path], [] if own else [shipped_dir()], args.force)
    claim_output_dir(*where)  # before the model loads
    model = load_pretrained(path, device=args.device)
    suite, _ = load_suite_for(path, model)
    out = write_output_dir(
        args.dir, lambda tmp: export_dashboards(model, suite, tmp, n_examples=args.examples),
        *where[1:],
    )  # fmt: skip
    print(f"exported the features of {args.checkpoint} to {out} (index.json, index.html)")
    return 0


def _cmd_ship(args) -> int:
    from glassbox.ship import ship

    said = {"trained_by": args.trained_by} if args.trained_by else {}  # else ship's default
    with Jobs(1, "ship") as progress:  # one job per checkpoint, once the report is read
        ship(
            args.runs_dir, args.to, seed=args.seed, scores=args.scores,
            copy=not args.cards_only, progress=progress, **said,
        )  # fmt: skip
    return 0


def _cmd_merge(args) -> int:
    from glassbox.merge import merge_reports

    report = merge_reports(args.reports, args.out)
    print(report.markdown_summary())
    n = ", ".join(
        f"{a} {sum(r.arch == a for r in report.runs)}" for a in report.config["architectures"]
    )
    print(f"merged runs ({n}) at seeds {list(report.seeds)} into {report.path}")
    return 0


DESCRIPTION = """\
Interpretable-by-construction transformer language models (mixtures of experts,
transcoders, weight-sparse, tool-calling) beside dense baselines, and the gap report
that measures what readability costs in capability.

start here:
  glassbox compare configs/compare_shipped.yaml      score the shipped checkpoints (make report)
  glassbox generate glassbox/tool "3 4 + 5 8 ="       a tool model's answer and its call trace

`glassbox COMMAND --help` says what each command does, with an example. A checkpoint
is a directory, a shipped name ("glassbox/dense", "glassbox/moe", ...) or a hub id.
"""

# command -> (one line for `glassbox --help`, what it does, an example)
COMMANDS = {
    "train": (
        "train a model from a config; writes a run directory and an exported checkpoint",
        "Train one architecture on the skill suite (or a text corpus). The run directory "
        "holds the logs, resumable Lightning checkpoints and checkpoint/, the exported "
        "model. Any config key can be overridden as key=value.",
        "glassbox train configs/moe.yaml trainer.max_steps=500 run.out_dir=runs/moe",
    ),
    "eval": (
        "capability of a checkpoint: val loss, perplexity, accuracy per skill",
        "Evaluate a checkpoint on the test split of the data it was trained on.",
        "glassbox eval glassbox/dense --json --max-batches 50",
    ),
    "analyze": (
        "interpretability scores and plots of a checkpoint",
        "Score a checkpoint's readable units against the ground truth its data carries "
        "(coverage, specialisation, selectivity, circuits), each beside its untrained twin "
        "and what the token alone gives, plus the logit lens, head scores and probes; "
        "writes analysis.json and plots.",
        "glassbox analyze glassbox/transcoder --out runs/transcoder_analysis",
    ),
    "compare": (
        "train or load every architecture and write the gap report",
        "Train (or load) every architecture of a compare config at a matched budget over "
        "its seeds, score each beside its baselines, and write report.md, report.json, "
        "report.html and pareto.png into its out_dir. Current runs and scores are reused. "
        "Overrides are compare keys (seeds=[0]) or run keys for every architecture "
        "(trainer.max_steps=300).",
        "glassbox compare configs/compare.yaml seeds=[0] trainer.max_steps=200",
    ),
    "ladder": (
        "the gap against size: every kind at sizes S, M, L on code, one report",
        "Run the compare of each rung of configs/ladder/ladder.yaml the machine allows (S "
        "on a CPU, S, M and L where a GPU is found, or --rungs), then write ladder.md, "
        "ladder.json and ladder.png: the capability gap and each informative score per "
        "kind against size. --params prints every kind's parameters per rung.",
        "glassbox ladder --rungs S seeds=[0]",
    ),
    "matched-loss": (
        "circuit size against pretraining loss, and the ratio to dense at equal loss",
        "Train the runs of a compare config that keeps every periodic checkpoint, find "
        "the micro-task circuits of each checkpoint, and write matched_loss.md, .json and "
        ".png: circuit nodes and edges against loss, and each kind's size over dense's "
        "where their losses are equal (Gao et al. 2025's comparison), per seed.",
        "glassbox matched-loss configs/compare_matched.yaml",
    ),
    "generate": (
        "continue a prompt; a tool model's calls are executed and traced",
        "Generate from a checkpoint (greedy unless --temperature). A model trained with "
        "tools calls them and the call trace is printed after the answer.",
        'glassbox generate glassbox/tool "3 4 + 5 8 ="',
    ),
    "trace": (
        "the exact attribution graph of a prompt's next-token logit",
        "Trace a logit at a prompt's last position to the units that produced it, with "
        "attention patterns and norm scales frozen: token embeddings, active units and "
        "their direct effects, which add up to the logit (checked). Writes a graph file "
        "circuit-tracer's viewer opens (circuit-tracer start-server --graph_file_dir OUT).",
        'glassbox trace glassbox/transcoder "3 4 + 5 8 =" --out graphs',
    ),
    "export": (
        "export a checkpoint to HF transformers, TransformerLens or feature dashboards",
        "hf: a dense model as LlamaForCausalLM, a softmax MoE as MixtralForCausalLM; "
        "transformer-lens: a HookedTransformer's weights; features: every readable unit's "
        "dashboard (JSON and HTML pages, index.html to browse).",
        "glassbox export glassbox/dense --to hf runs/dense_hf",
    ),
    "merge": (
        "one gap report from the reports of runs scored apart (another seed, session, machine)",
        "Merge the report.json files of compares scored the same way into one report: "
        "every run's scores and replicates are read, none scored again, and the decisions "
        "over seeds and against dense are made over the runs together. Reports that differ "
        "in what the scores depend on, or give one run other scores, are refused in one line; "
        "REPORT:kind,kind takes only those architectures' runs from a report.",
        "glassbox merge report_a/report.json report_b/report.json --out report_ab",
    ),
    "ship": (
        "copy a compare's runs into checkpoints/ with model cards",
        "Make the runs of a finished compare (at one seed) the shipped checkpoints: copy "
        "each exported checkpoint with its training curve and write its model card from "
        "a gap report's scores (make ship).",
        "glassbox ship report_long --seed 0 --to checkpoints",
    ),
}


def _command(sub, name: str) -> argparse.ArgumentParser:
    brief, what, example = COMMANDS[name]
    return sub.add_parser(
        name,
        help=brief,
        description=what,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_train(sub) -> None:
    """The arguments of `glassbox train`: a run config and its overrides."""
    t = _command(sub, "train")
    t.add_argument("config", help="a run config, e.g. configs/dense.yaml")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=200")
    t.set_defaults(fn=_cmd_train)


def _add_eval(sub) -> None:
    """The arguments of `glassbox eval`: a checkpoint and how much of each split to read."""
    e = _command(sub, "eval")
    e.add_argument("checkpoint", help="checkpoint directory or hub id")
    e.add_argument(
        "--json",
        action="store_true",
        help="print metrics as JSON (val_loss, skills.<name>.accuracy, ...)",
    )
    e.add_argument("--max-batches", type=int, default=0, help="batches per split (0 = all)")
    e.add_argument("--device", default=None)
    e.set_defaults(fn=_cmd_eval)


def _add_analyze(sub) -> None:
    """The arguments of `glassbox analyze`: a checkpoint and where its analysis goes."""
    a = _command(sub, "analyze")
    a.add_argument("checkpoint")
    a.add_argument(
        "--out",
        default=None,
        help="output directory (default: beside the checkpoint; ./analysis-<name> for a "
        "shipped or hub one)",
    )
    a.add_argument(
        "--force",
        action="store_true",
        help="write into a --out holding other files (they are kept; same-named ones replaced)",
    )
    a.add_argument("--examples", type=int, default=512, help="held-out examples to analyse")
    a.add_argument(
        "--reference",
        default=None,
        help="text corpora: another checkpoint of the same run, for router saturation",
    )
    a.add_argument("--device", default=None)
    a.set_defaults(fn=_cmd_analyze)


def _add_compare(sub) -> None:
    """The arguments of `glassbox compare`: a compare config and its overrides."""
    c = _command(sub, "compare")
    c.add_argument("config", help="e.g. configs/compare.yaml")
    c.add_argument(
        "overrides",
        nargs="*",
        help="key=value: compare keys (seeds=[0]) or run keys (trainer.max_steps=300)",
    )
    c.add_argument(
        "--replicates",
        action="store_true",
        help="first add to runs scored before they were kept their scores' bootstrap "
        "replicates (the audited scores computed again, checked against the saved ones)",
    )
    c.set_defaults(fn=_cmd_compare)


def _add_ladder(sub) -> None:
    """The arguments of `glassbox ladder` (glassbox.ladder.add_arguments)."""
    from glassbox.ladder import add_arguments, main

    p = _command(sub, "ladder")
    add_arguments(p)
    p.set_defaults(fn=main)


def _add_matched_loss(sub) -> None:
    """The arguments of `glassbox matched-loss` (glassbox.matched_loss)."""
    from glassbox.matched_loss import add_arguments, main

    p = _command(sub, "matched-loss")
    add_arguments(p)
    p.set_defaults(fn=main)


def _add_generate(sub) -> None:
    """The arguments of `glassbox generate`: a checkpoint, a prompt and how to sample."""
    g = _command(sub, "generate")
    g.add_argument("checkpoint")
    g.add_argument("prompt", help='space-separated tokens of the vocabulary, e.g. "3 4 + 5 8 ="')
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default=None)
    g.add_argument("--no-tools", action="store_true", help="do not execute tool calls")
    g.set_defaults(fn=_cmd_generate)


def _add_trace(sub) -> None:
    """The arguments of `glassbox trace`: a checkpoint, a prompt, the logit to trace, the graph file."""
    r = _command(sub, "trace")
    r.add_argument("checkpoint")
    r.add_argument("prompt", help='space-separated tokens of the vocabulary, e.g. "3 4 + 5 8 ="')
    r.add_argument(
        "--target", default=None, help="the token whose logit is traced (default: the top one)"
    )
    r.add_argument("--alternative", default=None, help="trace target minus this token's logit")
    r.add_argument("--out", default="graphs", help="folder of graph files (default: ./graphs)")
    r.add_argument("--slug", default=None, help="the graph's name (default: MODEL-TARGETID)")
    r.add_argument("--max-nodes", type=int, default=8192, help="unit nodes kept at most")
    r.add_argument("--device", default=None)
    r.set_defaults(fn=_cmd_trace)


def _add_export(sub) -> None:
    """The arguments of `glassbox export`: a checkpoint, a format and where it goes."""
    x = _command(sub, "export")
    x.add_argument("checkpoint")
    x.add_argument(
        "--to",
        required=True,
        choices=["hf", "transformer-lens", "features", "bf16"],
        help="hf: Llama (dense) or Mixtral (moe); features: dashboard JSON and HTML pages; "
        "bf16: the checkpoint with its weights in bfloat16 (half the size)",
    )
    x.add_argument("dir", help="output directory")
    x.add_argument("--examples", type=int, default=256, help="features: examples to read")
    x.add_argument("--device", default=None, help="features: where the model runs")
    x.add_argument(
        "--force",
        action="store_true",
        help="write into a DIR holding other files (they are kept; same-named ones replaced)",
    )
    x.set_defaults(fn=_cmd_export)


def _add_merge(sub) -> None:
    """The arguments of `glassbox merge`: the reports and where the merged one goes."""
    m = _command(sub, "merge")
    m.add_argument(
        "reports", nargs="+", help="report.json files (two or more); PATH:kind,kind for some kinds"
    )
    m.add_argument("--out", required=True, help="the merged report's folder (not a report's own)")
    m.set_defaults(fn=_cmd_merge)


def _add_ship(sub) -> None:
    """The arguments of `glassbox ship`: the runs to ship and where their cards read scores."""
    s = _command(sub, "ship")
    s.add_argument("runs_dir", help="the out_dir of the compare that trained them (report_long)")
    s.add_argument("--seed", type=int, default=0, help="the runs' seed to ship")
    s.add_argument("--to", default="checkpoints", help="where the checkpoints go")
    s.add_argument(
        "--scores", default=None, help="the report.json the cards read (default: RUNS_DIR's)"
    )
    s.add_argument(
        "--cards-only", action="store_true", help="rewrite the cards of shipped checkpoints"
    )
    s.add_argument(
        "--trained-by",
        default=None,
        help="the command the cards say trained them (default: compare_long.yaml's)",
    )
    s.set_defaults(fn=_cmd_ship)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glassbox",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_eval,
        _add_analyze,
        _add_compare,
        _add_ladder,
        _add_matched_loss,
        _add_generate,
        _add_trace,
        _add_export,
        _add_merge,
        _add_ship,
    ):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (every GlassboxError: config, checkpoint, argument,
    a diverged run; a missing file; a value the library refuses) is one line on
    stderr and exit code 2 (config or argument) or 1 (the rest), no traceback."""
    args = build_parser().parse_args(argv)
    parent = os.environ.pop(PARENT_ENV, "")
    if parent.isdigit():  # a run a compare started: it ends with the compare
        exit_with(int(parent))
    quiet_third_party(fits=args.command != "train")  # train keeps Lightning's set-up lines
    try:
        return args.fn(args)
    except (ConfigError, ArgumentError) as e:
        return _fail(args.command, e, 2)
    except OmegaConfBaseException as e:  # a config section read outside load_config
        key = getattr(e, "full_key", None) or "?"
        return _fail(args.command, f"config error: {key}: {str(e).splitlines()[0]}", 2)
    except (GlassboxError, FileNotFoundError, ValueError, ImportError) as e:
        return _fail(args.command, e, 1)
    except OSError as e:  # a full disk, a folder it may not write, a name too long
        return _fail(args.command, _os_error(e), 1)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)


def _os_error(e: OSError) -> str:
    if e.errno in DISK_FULL:
        return f"error: {disk_full(e.filename or Path.cwd(), e, 'what it wrote may be partial')}"
    where = f"{e.filename}: " if e.filename else ""
    return f"error: {where}{e.strerror or e}"


def _fail(command: str, e: BaseException | str, code: int) -> int:
    msg = one_line(str(e))
    if isinstance(e, BaseException) and not isinstance(e, (ConfigError, CheckpointError)):
        msg = f"error: {msg}"
    print(f"glassbox {command}: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
