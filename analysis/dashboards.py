"""Feature dashboards: every readable unit of a model (transcoder latent, MoE expert,
dense MLP neuron) exported as JSON close to Neuronpedia's feature format, beside the
static HTML feature pages (analysis.feature_pages), for browsing or for loading into
a dashboard. The schema, field by field, is analysis/DASHBOARDS.md.

    from glassbox.analysis.dashboards import export_dashboards
    export_dashboards(model, suite, "checkpoints/transcoder/features")

or `glassbox export CHECKPOINT --to features DIR`. Per unit:

- its top-activating contexts (tokens, the unit's value on each, the ground truth at
  the activating token);
- its best ground-truth feature of the skill suite with F1 and precision
  (analysis.coverage: the unit thresholded at its best quantile);
- its logit effects: the tokens whose logits one unit of its activation raises and
  lowers most, through what it writes into the residual stream (a latent's W_dec row,
  an expert's mean output, a neuron's W_out column), the final norm's weight and W_U;
- its skill profile: the share of its activation mass on each skill's tokens, and how
  often it is active on each skill's tokens.

DIR gets index.json (the model, the layers, the files), layer{i}.json (every unit of
layer i), index.html and layer{i}.html (the pages). DIR appears complete or not at
all (archs.checkpoint.atomic_write_dir).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.coverage import CoverageResult, coverage, ground_truth_labels
from glassbox.analysis.domain_units import unit_directions
from glassbox.analysis.feature_pages import Context, feature_contexts, render_html
from glassbox.analysis.interp import suite_batches, unit_activations
from glassbox.archs.checkpoint import atomic_write_dir
from glassbox.archs.errors import ArgumentError
from glassbox.training.data import SuiteData

SCHEMA_VERSION = 1
DIGITS = 5  # floats are rounded to this many decimals in the JSON


def _r(x: float) -> float:
    return round(float(x), DIGITS)


@torch.no_grad()
def logit_effects(model, directions: Tensor) -> Tensor:
    """(U, d_model) what each unit writes per unit of activation -> (U, vocab): the
    change of every logit, (direction * ln_final.w) @ W_U^T. The final RMSNorm also
    divides by the residual stream's RMS, a positive factor shared by every logit of
    a token, so the order of tokens is exact and the values are up to that factor
    (Neuronpedia's W_dec @ W_U, with the norm's weight folded in)."""
    w = model.ln_final.w.float()
    return (directions.float().to(w.device) * w) @ model.W_U.weight.float().T


def top_logits(effects: Tensor, top: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """effects (U, vocab) -> (pos_ids, pos_values, neg_ids, neg_values), each (U, top):
    the tokens raised most (largest first) and lowered most (most negative first)."""
    top = min(top, effects.shape[-1])
    pos = effects.topk(top, dim=-1)
    neg = (-effects).topk(top, dim=-1)
    return pos.indices, pos.values, neg.indices, -neg.values


def skill_profile(acts: Tensor, skill: Tensor, n_skills: int) -> tuple[Tensor, Tensor]:
    """acts (N, U), skill (N,) ids (-1: none) -> (share, rate), each (U, n_skills):
    share[u, s] the fraction of unit u's positive activation mass on skill s's tokens
    (rows sum to 1, or 0 for a unit never active); rate[u, s] the fraction of skill
    s's tokens on which u is active (> 0)."""
    valid = skill >= 0
    onehot = torch.nn.functional.one_hot(skill[valid].long(), n_skills).float()  # (n, S)
    a = acts[valid].float()
    mass = a.clamp_min(0).T @ onehot  # (U, S)
    share = mass / mass.sum(1, keepdim=True).clamp_min(1e-12)
    rate = (a > 0).float().T @ onehot / onehot.sum(0).clamp_min(1)
    return share, rate


def _context_json(c: Context) -> dict[str, Any]:
    return {
        "tokens": c.tokens,
        "values": [_r(v) for v in c.acts],
        "maxValue": _r(c.activation),
        "maxValueTokenIndex": c.focus,
        "groundTruth": c.labels,
    }


def _token(tokenizer, i: int) -> str:
    if tokenizer is None:
        return str(i)
    return tokenizer.id_to_token(int(i)) or f"<{i}>"


def layer_records(
    model,
    layer: int,
    acts: Tensor,
    contexts: Mapping[int, list[Context]],
    directions: Tensor | None,
    cov: CoverageResult | None,
    skill: Tensor | None,
    skill_names: Sequence[str],
    model_id: str,
    hook: str,
    top_k_logits: int = 10,
) -> list[dict[str, Any]]:
    """One record per unit of a layer (the schema of analysis/DASHBOARDS.md).

    acts (N, U): the units at N tokens; contexts: unit -> its top contexts (units
    without an entry get none); directions (U, d_model) or None (no logit effects);
    cov: the coverage of these units against the ground truth, or None; skill (N,)."""
    mlp = model.blocks[layer].mlp
    tok = getattr(model, "tokenizer", None)
    U = acts.shape[1]
    max_act = acts.max(0).values if acts.shape[0] else torch.zeros(U)
    frac = (acts > 0).float().mean(0) if acts.shape[0] else torch.zeros(U)
    logits = None
    if directions is not None:
        logits = top_logits(logit_effects(model, directions), top_k_logits)
    share = rate = None
    if skill is not None and skill_names:
        share, rate = skill_profile(acts, skill, len(skill_names))
    out = []
    for u in range(U):
        rec: dict[str, Any] = {
            "modelId": model_id,
            "layer": f"blocks.{layer}.mlp",
            "hook": hook,
            "index": u,
            "unitType": mlp.unit_name,
            "maxActApprox": _r(max_act[u]),
            "frac_nonzero": _r(frac[u]),
        }
        rec.update(_logit_fields(logits, u, tok))
        rec["activations"] = [_context_json(c) for c in contexts.get(u, [])]
        rec["featureMatch"] = _feature_match(cov, u)
        if share is not None and rate is not None:
            rec["skillProfile"] = {s: _r(share[u, j]) for j, s in enumerate(skill_names)}
            rec["skillRate"] = {s: _r(rate[u, j]) for j, s in enumerate(skill_names)}
        out.append(rec)
    return out


def _logit_fields(
    logits: tuple[Tensor, Tensor, Tensor, Tensor] | None, u: int, tok
) -> dict[str, list]:
    """A record's pos_str, pos_values, neg_str, neg_values: the tokens unit u
    promotes and suppresses most (`top_logits`' tuple; empty lists without one)."""
    if logits is None:
        return {"pos_str": [], "pos_values": [], "neg_str": [], "neg_values": []}
    pos_i, pos_v, neg_i, neg_v = (t[u].tolist() for t in logits)
    return {
        "pos_str": [_token(tok, i) for i in pos_i],
        "pos_values": [_r(v) for v in pos_v],
        "neg_str": [_token(tok, i) for i in neg_i],
        "neg_values": [_r(v) for v in neg_v],
    }


def _feature_match(cov: CoverageResult | None, u: int) -> dict[str, Any] | None:
    """A record's featureMatch: unit u's best ground-truth feature, its F1 and
    precision there (None without coverage)."""
    if cov is None or not cov.feature_names:
        return None
    return {
        "feature": cov.feature_names[int(cov.unit_feature[u])],
        "f1": _r(cov.unit_f1[u]),
        "precision": _r(cov.unit_precision[u]),
    }


def page_units(acts: Tensor, cov: CoverageResult | None, n: int) -> list[int]:
    """The units a layer's HTML page shows: the best unit of each ground-truth feature
    (by F1, best first), then the most often active ones, up to n."""
    units: list[int] = []
    if cov is not None and cov.feature_names:
        units += [int(cov.best_unit[g]) for g in cov.best_f1.argsort(descending=True)]
    units += (acts > 0).float().mean(0).argsort(descending=True).tolist()
    return [u for u in dict.fromkeys(units) if bool((acts[:, u] > 0).any())][:n]


def _summary(rec: Mapping[str, Any]) -> str:
    parts = [
        f"{rec['unitType']} {rec['index']}: active on {100 * rec['frac_nonzero']:.1f}% of tokens"
    ]
    fm = rec.get("featureMatch")
    if fm:
        parts.append(
            f"best feature {fm['feature']} (F1 {fm['f1']:.3f}, precision {fm['precision']:.3f})"
        )
    if rec.get("pos_str"):
        parts.append("promotes " + " ".join(repr(t) for t in rec["pos_str"][:5]))
    if rec.get("skillProfile"):
        best = max(rec["skillProfile"].items(), key=lambda kv: kv[1])
        parts.append(f"{100 * best[1]:.0f}% of its mass on {best[0]}")
    return " | ".join(parts)


# Sorting (click a column head) and filtering (the search box) of the index: plain DOM,
# no library, so the page opens offline.
_INDEX_JS = """
const table = document.getElementById("units"), rows = [...table.tBodies[0].rows];
document.getElementById("filter").addEventListener("input", e => {
  const words = e.target.value.toLowerCase().split(/\\s+/).filter(Boolean);
  let shown = 0;
  for (const r of rows) {
    const hit = words.every(w => r.textContent.toLowerCase().includes(w));
    r.hidden = !hit; shown += hit;
  }
  document.getElementById("count").textContent = shown;
});
table.tHead.querySelectorAll("th").forEach((th, i) => th.addEventListener("click", () => {
  const down = th.dataset.dir !== "desc"; th.dataset.dir = down ? "desc" : "asc";
  const key = r => { const c = r.cells[i]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    const o = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return down ? -o : o; });
  rows.forEach(r => table.tBodies[0].appendChild(r));
}));
"""


def _unit_row(lay: Mapping[str, Any], rec: Mapping[str, Any], paged: set[int]) -> str:
    """One unit of the index: what it covers (its best ground-truth feature and F1, or
    its top skill), how often it fires, the tokens it promotes; linked to its page."""
    esc = html.escape
    u = rec["index"]
    name = f"{rec['unitType']} {u}"
    link = f'<a href="{esc(lay["page"])}#unit-{u}">{esc(name)}</a>' if u in paged else esc(name)
    fm = rec.get("featureMatch") or {}
    prof = rec.get("skillProfile") or {}
    top = max(prof.items(), key=lambda kv: kv[1]) if prof else None
    cells = [
        (esc(lay["layer"]), None),
        (link, u),
        (esc(fm.get("feature", "–")), None),
        (f"{fm['f1']:.3f}" if fm else "–", fm.get("f1", -1)),
        (f"{fm['precision']:.3f}" if fm else "–", fm.get("precision", -1)),
        (f"{100 * rec['frac_nonzero']:.1f}%", rec["frac_nonzero"]),
        (f"{esc(top[0])} ({100 * top[1]:.0f}%)" if top else "–", top[1] if top else -1),
        (esc(" ".join(rec.get("pos_str", [])[:5])), None),
    ]
    return (
        "<tr>"
        + "".join(
            f'<td data-v="{v}">{c}</td>' if v is not None else f"<td>{c}</td>" for c, v in cells
        )
        + "</tr>"
    )


def _index_html(
    model_id: str,
    layers: Sequence[dict[str, Any]],
    records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> str:
    """index.html: a table of every unit (records: layer file -> its unit records),
    labelled with its best feature and F1, skill and promoted tokens, sortable by any
    column and filtered by the search box; each unit with a page links to it."""
    esc = html.escape
    rows = []
    for lay in layers:
        paged = set(lay["page_units"])
        for rec in (records or {}).get(lay["file"], []):
            rows.append(_unit_row(lay, rec, paged))
    heads = ["layer", "unit", "best feature", "F1", "precision", "active", "top skill", "promotes"]
    pages = " ".join(f'<a href="{esc(lay["page"])}">{esc(lay["layer"])}</a>' for lay in layers)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="en"><head><meta charset="utf-8"><title>{esc(model_id)}: features</title>',
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;vertical-align:top;text-align:left}"
            "th{cursor:pointer;background:#f4f4f4;position:sticky;top:0}"
            "th:hover{background:#e4e4e4}input{font-size:1em;padding:3px;width:24em}</style>"
            "</head><body>",
            f"<h1>{esc(model_id)}: features</h1>",
            f"<p>Every readable unit, labelled with the ground-truth feature it detects best "
            f"(F1 and precision of the unit thresholded at its best quantile), the skill most of "
            f"its activation falls on and the tokens it promotes. Click a column to sort; type to "
            f"filter. Pages of the top units per layer: {pages}. Every unit's JSON: "
            f"layer&lt;i&gt;.json, index.json.</p>",
            '<p><input id="filter" type="search" placeholder="filter: a feature, skill, token '
            f'or unit"> <span id="count">{len(rows)}</span> units</p>',
            '<table id="units"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in heads)
            + "</tr></thead><tbody>",
            *rows,
            "</tbody></table>",
            f"<script>{_INDEX_JS}</script></body></html>",
        ]
    )


def rebuild_index(out_dir: str | Path) -> Path:
    """Rewrite index.html of exported dashboards from their index.json and
    layer{i}.json (no model needed). Returns its path."""
    out_dir = Path(out_dir)
    index = json.loads((out_dir / "index.json").read_text())
    records = {
        lay["file"]: json.loads((out_dir / lay["file"]).read_text())["features"]
        for lay in index["layers"]
    }
    path = out_dir / "index.html"
    path.write_text(_index_html(index["modelId"], index["layers"], records))
    return path


def _layer_dashboard(
    model, suite: SuiteData, i: int, acts: Tensor, col, batches, labels, names: list[str],
    model_id: str, top_contexts: int, top_k_logits: int, max_page_units: int,
) -> tuple[dict[str, Any], str, dict[str, Any]]:  # fmt: skip
    """The dashboard of layer i, whose units have activations acts (N, U) over `col`:
    its layer{i}.json (records of every unit), its HTML page (the page_units) and its
    entry in index.json. labels, names: the ground truth (coverage), or None, []."""
    mlp = model.blocks[i].mlp
    hook = f"blocks.{i}.mlp.{mlp.unit_hooks[-1]}"
    cov = coverage(acts, labels, names) if names else None
    layer_col = replace(col, acts={hook: acts})
    contexts = feature_contexts(
        layer_col, hook, list(range(acts.shape[1])), k=top_contexts, tokenizer=model.tokenizer,
        feature_names=suite.feature_names, skill_names=suite.skill_names,
    )  # fmt: skip
    records = layer_records(
        model, i, acts, contexts, unit_directions(model, i, batches), cov, col.skill,
        suite.skill_names if col.skill is not None else [], model_id, hook, top_k_logits,
    )  # fmt: skip
    shown = page_units(acts, cov, max_page_units)
    page = render_html(
        {u: contexts[u] for u in shown},
        {u: _summary(records[u]) for u in shown},
        title=f"{model_id}: layer {i} {mlp.unit_name}s",
    )
    layer_json = {
        "schemaVersion": SCHEMA_VERSION,
        "modelId": model_id,
        "layer": f"blocks.{i}.mlp",
        "hook": hook,
        "unitType": mlp.unit_name,
        "n_units": acts.shape[1],
        "n_tokens": acts.shape[0],
        "features": records,
    }
    entry = {"layer": f"blocks.{i}.mlp", "hook": hook, "unitType": mlp.unit_name,
             "n_units": acts.shape[1], "file": f"layer{i}.json", "page": f"layer{i}.html",
             "page_units": shown}  # fmt: skip
    return layer_json, page, entry


def export_dashboards(
    model,
    suite: SuiteData,
    out_dir: str | Path,
    n_examples: int = 256,
    top_contexts: int = 10,
    top_k_logits: int = 10,
    max_page_units: int = 64,
    model_id: str | None = None,
    split: str = "val",
    seed: int = 0,
) -> Path:
    """Write the dashboards of every layer with readable units to `out_dir` (replaced
    atomically): index.json, layer{i}.json, index.html, layer{i}.html.

    model: a glassbox Transformer; suite: the data it was trained on (its `split`
    split is sampled: n_examples rows at `seed`); top_contexts contexts and
    top_k_logits promoted / suppressed tokens per unit; the HTML page of a layer shows
    up to max_page_units units (page_units), the JSON holds every unit. Returns
    out_dir as a Path."""
    if n_examples < 1:
        raise ArgumentError("n_examples", n_examples, "a positive number of examples to read")
    model.eval()
    model_id = model_id or model.cfg.name
    batches = suite_batches(suite, split, n_examples, seed=seed, device=model.device)
    units, col = unit_activations(model, batches)
    labels, names = (None, [])
    if col.features is not None and suite.feature_names:
        labels, names = ground_truth_labels(
            col.features, suite.feature_names, suite.feature_kinds, col.skill, suite.skill_names
        )
    files: dict[str, str] = {}
    layers: list[dict[str, Any]] = []
    records_by_file: dict[str, list[dict[str, Any]]] = {}
    for i, acts in units.items():
        layer_json, page, entry = _layer_dashboard(
            model, suite, i, acts, col, batches, labels, names, model_id, top_contexts,
            top_k_logits, max_page_units,
        )  # fmt: skip
        files[f"layer{i}.json"] = json.dumps(layer_json, separators=(",", ":"))
        records_by_file[f"layer{i}.json"] = layer_json["features"]
        files[f"layer{i}.html"] = page
        layers.append(entry)
    index = {
        "schemaVersion": SCHEMA_VERSION,
        "modelId": model_id,
        "kinds": sorted({model.cfg.ffn_for_layer(i).kind for i in range(model.cfg.n_layers)}),
        "data": {"split": split, "n_examples": n_examples, "seed": seed, "n_tokens": col.n_tokens},
        "groundTruthFeatures": names,
        "skills": list(suite.skill_names),
        "layers": layers,
    }
    files["index.json"] = json.dumps(index, indent=1)
    files["index.html"] = _index_html(model_id, layers, records_by_file)

    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)

    return atomic_write_dir(out_dir, write)


__all__ = [
    "SCHEMA_VERSION",
    "export_dashboards",
    "layer_records",
    "logit_effects",
    "page_units",
    "rebuild_index",
    "skill_profile",
    "top_logits",
]
