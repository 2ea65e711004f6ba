"""Exact attribution graphs: `trace(model, prompt)` traces a target logit at the
prompt's last position to the units that produced it (docs/design.md, "Attribution
graphs").

With every attention pattern, every RMSNorm scale and each FFN slot's nonlinear
factors frozen at the prompt's values (analysis.graphs.frozen), the logit is a sum
of direct effects: of the token embeddings, of every active unit (activation x write
direction carried to the logit through the frozen linear paths) and, for a post-hoc
transcoder standing in for a dense MLP, of its error per (layer, position); plus the
biases. The graph stores that sum and checks it (`completeness`). Edges between
units are direct effects on a unit's input: exact for a transcoder latent (its
encoder pre-activation is linear in its input), a linearisation at the prompt for a
unit whose input map is not (a SwiGLU neuron, a MoE expert's hidden unit: its gate
and activation factor frozen, so its incoming edges still add up to its activation);
`meta["linearised"]` says which layers and what was frozen.

Node order (circuit-tracer's): units (by layer, position, index), errors (by layer,
position), embeddings (by position), the logit. `adjacency[target, source]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.graphs.attribution import sources, total_effects, unit_rows, walk
from glassbox.analysis.graphs.frozen import Frozen, capture, logit_covector
from glassbox.analysis.graphs.prompts import Target, encode_prompt, resolve_target

MAX_NODES = 8192  # units whose incoming edges a graph holds (beyond: the most influential)


@dataclass
class AttributionGraph:
    """One traced prompt; see the module docstring for the node order."""

    token_ids: list[int]
    tokens: list[str]
    target: Target
    layers: Tensor  # (n_units,) the layer of each unit node
    positions: Tensor  # (n_units,)
    units: Tensor  # (n_units,) index in the layer's unit group
    groups: Tensor  # (n_units,) which of the layer's unit_groups
    activations: Tensor  # (n_units,)
    error_layers: list[int]  # layers with error nodes (one per position)
    adjacency: Tensor  # (N, N) float32, rows targets, columns sources
    constant: Tensor  # (N,) each row's biases
    rest: Tensor  # (N,) each row's effects from units left out (more than max_nodes)
    value: Tensor  # (N,) each row's value (a unit's activation, the logit; nan for sources only)
    completeness: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def n_errors(self) -> int:
        return len(self.error_layers) * len(self.token_ids)

    @property
    def n_nodes(self) -> int:
        return self.adjacency.shape[0]

    @property
    def logit_row(self) -> Tensor:
        return self.adjacency[-1]

    def error_slice(self) -> slice:
        return slice(self.n_units, self.n_units + self.n_errors)

    def embed_slice(self) -> slice:
        start = self.n_units + self.n_errors
        return slice(start, start + len(self.token_ids))


def _select(model, fz: Frozen, src, cov: Tensor, max_nodes: int) -> list[Tensor]:
    """Per layer, the indices (into its LinearFFN) of the units the graph keeps: all of
    them, or the max_nodes of largest total effect on the target."""
    counts = [len(lin.token) for lin in fz.ffn]
    if sum(counts) <= max_nodes:
        return [torch.arange(c, device=fz.tokens.device) for c in counts]
    score = total_effects(model, fz, src, cov).abs()[: sum(counts)]
    keep = torch.zeros_like(score, dtype=torch.bool)
    keep[score.topk(max_nodes).indices] = True
    return [keep[o : o + c].nonzero()[:, 0] for o, c in zip(src.unit_offset, counts, strict=True)]


def _node_order(fz: Frozen, chosen: list[Tensor]) -> list[Tensor]:
    """chosen, each layer's sorted by (position, unit)."""
    out = []
    for lin, idx in zip(fz.ffn, chosen, strict=True):
        key = lin.token[idx] * (int(lin.unit.max()) + 1 if len(lin.unit) else 1) + lin.unit[idx]
        out.append(idx[torch.argsort(key)])
    return out


def _columns(fz: Frozen, src, chosen: list[Tensor], n_nodes: int) -> tuple[Any, Tensor]:
    """The sources the rows are computed over (with units left out: chosen's as columns,
    the others summed per (layer, position)) and (n_sources,) the node of each source
    column, -1 for the units left out. chosen: per layer, the units in node order."""
    T = len(fz.tokens)
    reduced = sum(len(c) for c in chosen) < sum(len(lin.token) for lin in fz.ffn)
    src = sources(fz, chosen) if reduced else src
    col = torch.full((src.n,), -1, dtype=torch.long)
    node = 0
    for off, idx in zip(src.unit_offset, chosen, strict=True):
        at = off + (torch.arange(len(idx)) if reduced else idx.cpu())
        col[at] = torch.arange(node, node + len(idx))
        node += len(idx)
    tail = (len(src.error_offset) + 1) * T  # the errors, then the embeddings, as the nodes
    start = src.embed_offset + T - tail
    col[start : start + tail] = torch.arange(node, node + tail)
    assert node + tail + 1 == n_nodes
    return src, col.to(fz.tokens.device)


def _place(rows_eff: Tensor, col: Tensor, n_nodes: int) -> tuple[Tensor, Tensor]:
    """Effects over all sources (n, n_sources) -> (n, n_nodes) on the nodes, and (n,)
    the part from sources that are not nodes."""
    out = rows_eff.new_zeros(rows_eff.shape[0], n_nodes)
    kept = col >= 0
    out[:, col[kept]] = rows_eff[:, kept]
    return out, rows_eff[:, ~kept].sum(1)


@torch.no_grad()
def trace(
    model,
    prompt: str | Sequence[int],
    target: str | int | None = None,
    alternative: str | int | None = None,
    replacements: Mapping[int, Any] | None = None,
    max_nodes: int = MAX_NODES,
) -> AttributionGraph:
    """The attribution graph of `target`'s logit (default: the model's top prediction;
    minus `alternative`'s if given) at the last position of `prompt` (text, encoded
    as `glassbox generate` does, or token ids). replacements: {layer: a post-hoc
    transcoder} traced in place of that dense layer's MLP, with its error nodes."""
    ids, toks = encode_prompt(model, prompt)
    fz = capture(model, ids, replacements)
    tgt = resolve_target(model, fz.logits[-1], target, alternative)
    src = sources(fz)
    T, L = len(ids), len(model.blocks)
    G = fz.mlp_in[0].new_zeros(1, T, model.cfg.d_model)
    G[0, -1] = logit_covector(model, fz, _direction(model, tgt).to(G.dtype), T - 1)
    chosen = _node_order(fz, _select(model, fz, src, G, max_nodes))
    n_units = sum(len(c) for c in chosen)
    n_nodes = n_units + len(fz.replaced) * T + T + 1
    src, col = _columns(fz, src, chosen, n_nodes)
    A = G.new_zeros(n_nodes, n_nodes)
    const, rest = G.new_zeros(n_nodes), G.new_zeros(n_nodes)
    value = torch.full((n_nodes,), float("nan"), dtype=G.dtype, device=G.device)
    eff, c = walk(model, fz, src, G, L, mid=False)
    A[-1:], rest[-1:] = _place(eff, col, n_nodes)
    const[-1], value[-1] = c[0], tgt.logit
    node = 0
    for layer, idx in enumerate(chosen):
        if len(idx):
            rows = unit_rows(model, fz, src, layer, idx)
            sl = slice(node, node + len(idx))
            A[sl], rest[sl] = _place(rows.effects, col, n_nodes)
            const[sl], value[sl] = rows.constant, fz.ffn[layer].act[idx].to(G.dtype)
        node += len(idx)
    lins = [(fz.ffn[i], idx) for i, idx in enumerate(chosen)]
    graph = AttributionGraph(
        token_ids=ids.tolist(),
        tokens=toks,
        target=tgt,
        layers=torch.cat([torch.full_like(idx, i) for i, idx in enumerate(chosen)]),
        positions=torch.cat([lin.token[idx] for lin, idx in lins]),
        units=torch.cat([lin.unit[idx] for lin, idx in lins]),
        groups=torch.cat([torch.full_like(idx, lin.group) for lin, idx in lins]),
        activations=torch.cat([lin.act[idx] for lin, idx in lins]).to(G.dtype),
        error_layers=list(fz.replaced),
        adjacency=A,
        constant=const,
        rest=rest,
        value=value,
        completeness={},
        meta=_meta(model, fz, replacements or {}, n_units),
    )
    graph.completeness = completeness(graph, eff.sum() + c[0])
    if replacements:
        graph.meta["agreement"] = agreement(model, replacements, ids, fz.logits[-1])
    return graph


def agreement(model, replacements: Mapping[int, Any], ids: Tensor, logits: Tensor) -> float:
    """1.0 if the replacement model (the transcoders spliced in, no error terms) has the
    model's top token at the last position, else 0.0."""
    from glassbox.training.transcoder_fit import splice  # Lightning: only when replacing

    spliced = splice(model, replacements)
    return float(int(spliced(ids[None])[0, -1].argmax()) == int(logits.argmax()))


def _direction(model, tgt: Target) -> Tensor:
    """The unembedding direction of the target's logit (minus the alternative's)."""
    W_U = model.W_U.weight
    d = W_U[tgt.id]
    return d - W_U[tgt.alt_id] if tgt.alt_id is not None else d


def completeness(graph: AttributionGraph, logit_sum: Tensor) -> dict[str, float]:
    """The completeness identity, checked. logit: |sum of every source's direct effect
    + biases - the logit| / |logit| (logit_sum: that sum, over every source); units:
    the largest |incoming edges + biases + units left out - activation| of a unit
    node, over the largest |activation|; nodes: whether every unit the prompt
    activated is a node."""
    logit = graph.value[-1]
    out = {"logit": float(logit), "logit_rel_error": float((logit_sum - logit).abs() / logit.abs())}
    rows = slice(0, graph.n_units)
    recon = graph.adjacency[rows].sum(1) + graph.constant[rows] + graph.rest[rows]
    scale = graph.activations.abs().max() if graph.n_units else logit.new_ones(())
    err = (recon - graph.value[rows]).abs().max() if graph.n_units else logit.new_zeros(())
    out["units_rel_error"] = float(err / scale)
    out["nodes_all_units"] = float(graph.meta["active_units"] == graph.n_units)
    return out


def _meta(model, fz: Frozen, replacements: Mapping[int, Any], n_units: int) -> dict[str, Any]:
    """What the graph is of and how it was made; unit_groups: per layer, the kind and
    count of each of its unit groups, finest first (unit nodes index the first)."""
    kinds, linearised, groups = [], {}, []
    for i, block in enumerate(model.blocks):
        kinds.append(type(block.mlp).label(model.cfg.ffn_for_layer(i)))
        ffn = replacements.get(i, block.mlp)
        groups.append([(g.kind, g.n_units) for g in ffn.unit_groups(i)])
        lin = fz.ffn[i]
        if not lin.exact:
            linearised[str(i)] = lin.frozen
    return {
        "model": getattr(model.cfg, "name", "") or "",
        "kinds": kinds,
        "frozen": "attention patterns and RMSNorm scales at the prompt's values",
        "linearised": linearised,
        "replaced_layers": list(fz.replaced),
        "active_units": sum(len(lin.token) for lin in fz.ffn),
        "unit_nodes": n_units,
        "unit_groups": groups,
    }
