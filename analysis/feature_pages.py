"""Feature pages: the top-activating contexts of a unit (a transcoder latent, an MLP
neuron), with the ground truth of the skill suite beside each one.

    col = collect_activations(model, batches, ["blocks.0.mlp.hook_latents"])
    cov = coverage(col.acts[name], labels, label_names)
    write_feature_pages("runs/x/pages", col, name, coverage_result=cov,
                        tokenizer=model.tokenizer, feature_names=data.feature_names)

writes `features.txt` (plain text) and `features.html` (one static page, no
scripts): per unit, a header with its best ground-truth feature (F1, precision)
when a CoverageResult is given, then its top contexts, the activating token marked
and every token shaded by the unit's activation, and the ground-truth variables
that hold at the activating token.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from glassbox.analysis.activations import Collected
from glassbox.analysis.coverage import CoverageResult


@dataclass
class Context:
    """One top-activating context of a unit."""

    unit: int
    rank: int  # 0 = the strongest
    activation: float
    seq: int  # index into Collected.sequences
    pos: int  # position of the activating token in its sequence
    tokens: list[str]  # the window's tokens
    acts: list[float]  # the unit's activation on each window token (0 where not collected)
    focus: int  # index of the activating token in `tokens`
    labels: dict[str, int | str]  # ground truth at the activating token (what applies)


def top_activations(acts: Tensor, units: Sequence[int], k: int = 10) -> tuple[Tensor, Tensor]:
    """The k largest activations of each unit: (values, rows), each (len(units), k),
    strongest first. Units that are positive on fewer than k rows get their
    zero/negative rows after (callers drop activations <= 0)."""
    sub = acts[:, list(units)].float()  # (N, u)
    k = min(k, sub.shape[0])
    vals, rows = sub.topk(k, dim=0)
    return vals.T, rows.T


def _token_fn(tokenizer) -> Callable[[int], str]:
    if tokenizer is None:
        return str
    if callable(tokenizer) and not hasattr(tokenizer, "id_to_token"):
        return tokenizer
    return lambda i: tokenizer.id_to_token(i) or f"<{i}>"


def feature_contexts(
    col: Collected,
    hook_name: str,
    units: Sequence[int],
    k: int = 10,
    before: int = 12,
    after: int = 3,
    tokenizer=None,
    feature_names: Sequence[str] | None = None,
    skill_names: Sequence[str] | None = None,
) -> dict[int, list[Context]]:
    """Top-k contexts of each unit of `units` at `hook_name` in `col`: windows of
    `before` tokens before and `after` after the activating token, padding (tokens
    `col` did not collect) trimmed off the ends. tokenizer: a
    tokenizers.Tokenizer, a callable id -> str, or None (ids as text). Labels: the
    raw ground-truth variables (feature_names, the columns of col.features) that
    apply (!= -1) at the token, and its skill."""
    acts = col.acts[hook_name]
    tok = _token_fn(tokenizer)
    S = len(col.sequences)
    T = max(s.shape[0] for s in col.sequences)
    row_of = torch.full((S, T), -1, dtype=torch.long)
    row_of[col.where[:, 0], col.where[:, 1]] = torch.arange(col.n_tokens)
    vals, rows = top_activations(acts, units, k)
    out: dict[int, list[Context]] = {}
    for j, u in enumerate(units):
        ctxs = []
        for rank, (v, r) in enumerate(zip(vals[j].tolist(), rows[j].tolist())):
            if v <= 0:
                break
            s, p = col.where[r].tolist()
            seq = col.sequences[s]
            lo, hi = max(0, p - before), min(seq.shape[0], p + after + 1)
            while hi > p + 1 and row_of[s, hi - 1] < 0:  # padding (not collected) after
                hi -= 1
            while lo < p and row_of[s, lo] < 0:  # ... and before
                lo += 1
            window_rows = row_of[s, lo:hi]
            wacts = [float(acts[i, u]) if i >= 0 else 0.0 for i in window_rows.tolist()]
            labels = _labels(col, r, feature_names, skill_names)
            ctxs.append(
                Context(
                    unit=int(u),
                    rank=rank,
                    activation=v,
                    seq=s,
                    pos=p,
                    tokens=[tok(int(t)) for t in seq[lo:hi].tolist()],
                    acts=wacts,
                    focus=p - lo,
                    labels=labels,
                )
            )
        out[int(u)] = ctxs
    return out


def _labels(
    col: Collected,
    r: int,
    feature_names: Sequence[str] | None,
    skill_names: Sequence[str] | None,
) -> dict[str, int | str]:
    """The labels of row r of `col`: its skill, and the ground-truth variables
    that apply (!= -1) there (named f{column} without feature_names)."""
    labels: dict[str, int | str] = {}
    if col.skill is not None and skill_names is not None and int(col.skill[r]) >= 0:
        labels["skill"] = skill_names[int(col.skill[r])]
    if col.features is not None:
        for f, val in enumerate(col.features[r].tolist()):
            if val != -1:
                name = feature_names[f] if feature_names is not None else f"f{f}"
                labels[name] = val
    return labels


def unit_summaries(result: CoverageResult, units: Sequence[int] | None = None) -> dict[int, str]:
    """One line per unit: its best ground-truth feature, F1 and precision there."""
    units = range(result.unit_f1.shape[0]) if units is None else units
    out = {}
    for u in units:
        g = int(result.unit_feature[u])
        out[int(u)] = (
            f"best feature {result.feature_names[g]}: F1 {float(result.unit_f1[u]):.3f}, "
            f"precision {float(result.unit_precision[u]):.3f}"
        )
    return out


def render_text(contexts: dict[int, list[Context]], summaries: dict[int, str] | None = None) -> str:
    """Plain text: per unit a header, then one line per context, the activating token
    in [[ ]], followed by the labels."""
    lines = []
    for u, ctxs in contexts.items():
        head = f"unit {u}"
        if summaries and u in summaries:
            head += f" | {summaries[u]}"
        lines.append(head)
        lines.append("-" * len(head))
        if not ctxs:
            lines.append("  (never active)")
        for c in ctxs:
            toks = [f"[[{t}]]" if i == c.focus else t for i, t in enumerate(c.tokens)]
            labels = ", ".join(f"{k}={v}" for k, v in c.labels.items())
            lines.append(f"  {c.activation:8.3f}  {' '.join(toks)}    | {labels}")
        lines.append("")
    return "\n".join(lines)


def render_html(
    contexts: dict[int, list[Context]],
    summaries: dict[int, str] | None = None,
    title: str = "feature pages",
) -> str:
    """One static HTML page: a section per unit, a table row per context, tokens
    shaded by the unit's activation (relative to the unit's top activation), the
    activating token outlined, the labels in the last column."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td{padding:2px 8px;vertical-align:top;border-bottom:1px solid #ddd}"
        ".tok{font-family:monospace;padding:0 1px;margin:0 1px}"
        ".focus{outline:2px solid #c00}.labels{font-size:85%;color:#333}"
        "h2{font-size:110%;margin-bottom:0.2em}.sum{color:#555;margin-bottom:0.5em}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
    ]
    for u, ctxs in contexts.items():
        parts.append(f'<h2 id="unit-{u}">unit {u}</h2>')
        if summaries and u in summaries:
            parts.append(f'<div class="sum">{esc(summaries[u])}</div>')
        if not ctxs:
            parts.append("<p>(never active)</p>")
            continue
        top = max(c.activation for c in ctxs) or 1.0
        parts.append("<table><tr><th>act</th><th>context</th><th>ground truth</th></tr>")
        for c in ctxs:
            toks = []
            for i, (t, a) in enumerate(zip(c.tokens, c.acts)):
                alpha = max(0.0, min(1.0, a / top))
                cls = "tok focus" if i == c.focus else "tok"
                toks.append(
                    f'<span class="{cls}" style="background:rgba(255,120,0,{alpha:.2f})"'
                    f' title="{a:.3f}">{esc(t)}</span>'
                )
            labels = ", ".join(f"{esc(str(k))}={esc(str(v))}" for k, v in c.labels.items())
            parts.append(
                f"<tr><td>{c.activation:.3f}</td><td>{''.join(toks)}</td>"
                f'<td class="labels">{labels}</td></tr>'
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_feature_pages(
    out_dir: str | Path,
    col: Collected,
    hook_name: str,
    coverage_result: CoverageResult | None = None,
    units: Sequence[int] | None = None,
    k: int = 10,
    tokenizer=None,
    feature_names: Sequence[str] | None = None,
    skill_names: Sequence[str] | None = None,
    max_units: int = 50,
) -> dict[str, Path]:
    """Write features.txt and features.html under out_dir. units: default the best
    unit of each ground-truth feature (by F1, best first) when coverage_result is
    given, else the `max_units` units with the largest activations."""
    if units is None:
        if coverage_result is not None:
            order = coverage_result.best_f1.argsort(descending=True)
            units = list(dict.fromkeys(int(coverage_result.best_unit[g]) for g in order))
        else:
            units = col.acts[hook_name].max(0).values.argsort(descending=True).tolist()
        units = units[:max_units]
    contexts = feature_contexts(
        col,
        hook_name,
        units,
        k=k,
        tokenizer=tokenizer,
        feature_names=feature_names,
        skill_names=skill_names,
    )
    summaries = unit_summaries(coverage_result, units) if coverage_result is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"text": out / "features.txt", "html": out / "features.html"}
    paths["text"].write_text(render_text(contexts, summaries))
    paths["html"].write_text(render_html(contexts, summaries, title=f"{hook_name}: top contexts"))
    return paths


__all__ = [
    "Context",
    "feature_contexts",
    "render_html",
    "render_text",
    "top_activations",
    "unit_summaries",
    "write_feature_pages",
]
