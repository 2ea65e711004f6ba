"""Pruning an attribution graph by influence, as circuit-tracer does (its
`graph.prune_graph`), and the graph's statistics.

The influence of a node on the logit is the sum over paths of the products of
normalised edge weights (each row of |adjacency| divided by its sum): logit_weights
@ (A + A^2 + ...). Nodes are kept, largest influence first, until they carry
`node_threshold` of the total; edges likewise on the pruned graph; then units and
errors left without an outgoing (or a unit without an incoming) edge are dropped,
until nothing changes. Embeddings and the logit are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from glassbox.analysis.graphs.graph import AttributionGraph


def normalise(A: Tensor) -> Tensor:
    """|A| with each row summing to 1 (rows of zeros stay zero)."""
    a = A.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(A: Tensor, weights: Tensor) -> Tensor:
    """weights @ (A + A^2 + ...) for a nilpotent A (the graph is acyclic)."""
    current = weights @ A
    total = current.clone()
    for _ in range(A.shape[0] + 1):
        if not current.any():
            return total
        current = current @ A
        total += current
    raise RuntimeError("influence: the adjacency matrix has a cycle")


def _threshold(scores: Tensor, fraction: float) -> Tensor:
    """The score at which the largest scores reach `fraction` of their sum (zeros,
    most of an adjacency matrix, are left out of the sort; they never pass)."""
    s = scores[scores > 0]
    if not len(s):
        return scores.new_tensor(float("inf"))
    s = s.sort(descending=True).values
    cum = s.cumsum(0) / s.sum().clamp(min=1e-30)
    return s[min(int(torch.searchsorted(cum, fraction)), len(s) - 1)]


@dataclass
class Pruned:
    """Which nodes (N,) and edges (N, N) survive, and each node's influence (N,)."""

    nodes: Tensor
    edges: Tensor
    influence: Tensor


def node_influence(graph: AttributionGraph) -> Tensor:
    """(N,) each node's influence on the logit (the module docstring), on the whole
    graph: the one pass over the (N, N) matrix that every pruning of it shares."""
    A = graph.adjacency.float()
    w = torch.zeros(A.shape[0], dtype=A.dtype, device=A.device)
    w[-1] = 1.0
    return influence(normalise(A), w)


def prune(
    graph: AttributionGraph,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    node_inf: Tensor | None = None,
) -> Pruned:
    """circuit-tracer's pruning (the module docstring) of one graph. node_inf: its
    node_influence, if already computed. The edges are pruned on the kept nodes'
    submatrix (what the pruned graph is: the others' rows and columns are zero)."""
    if not (0 <= node_threshold <= 1 and 0 <= edge_threshold <= 1):
        raise ValueError("prune: thresholds must be in [0, 1]")
    A = graph.adjacency
    N, n_inner = A.shape[0], graph.n_units + graph.n_errors
    node_inf = node_influence(graph) if node_inf is None else node_inf
    nodes = (node_inf >= _threshold(node_inf, node_threshold)) & (node_inf > 0)
    nodes[n_inner:] = True
    kept = nodes.nonzero()[:, 0]
    sub = normalise(A[kept][:, kept].float())
    w = torch.zeros(len(kept), dtype=sub.dtype, device=sub.device)
    w[-1] = 1.0
    edge_scores = sub * (influence(sub, w) + w)[:, None]
    sub_edges = (edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)) & (
        edge_scores > 0
    )
    inner = kept < n_inner
    units = kept < graph.n_units
    while True:
        before = sub_edges.clone()
        alive = (~inner | sub_edges.any(0)) & (~units | sub_edges.any(1))
        sub_edges &= alive[:, None] & alive[None, :]
        if torch.equal(sub_edges, before):
            break
    nodes[kept] = alive
    edges = torch.zeros(N, N, dtype=torch.bool, device=A.device)
    edges[kept[:, None], kept[None, :]] = sub_edges
    return Pruned(nodes, edges, node_inf)


def graph_stats(graph: AttributionGraph) -> dict[str, float]:
    """nodes_80 / edges_80 (and _90): unit and error nodes, and edges, that carry 80%
    (90%) of the logit's influence (nodes and edges pruned at the same fraction);
    error_share: the error nodes' share of the logit's total absolute direct
    attribution (0 without errors); error_influence: their share of all nodes'
    influence on it; completeness errors; agreement: whether the replacement model
    (post-hoc transcoders spliced in) predicts the model's top token (1 when nothing
    was replaced: the graph is the model)."""
    row = graph.logit_row.abs()
    err = graph.error_slice()
    out: dict[str, float] = {
        "unit_nodes": float(graph.n_units),
        "active_units": float(graph.meta["active_units"]),
        "error_share": float(row[err].sum() / row.sum().clamp(min=1e-30)),
    }
    inf = node_influence(graph)  # once: the (N, N) pass every pruning shares
    for frac in (0.8, 0.9):
        p = prune(graph, frac, frac, node_inf=inf)
        pct = round(frac * 100)
        out[f"nodes_{pct}"] = float(p.nodes[: graph.n_units + graph.n_errors].sum())
        out[f"edges_{pct}"] = float(p.edges.sum())
    out["error_influence"] = float(inf[err].sum() / inf[:-1].sum().clamp(min=1e-30))
    out["logit_rel_error"] = graph.completeness["logit_rel_error"]
    out["units_rel_error"] = graph.completeness["units_rel_error"]
    out["agreement"] = float(graph.meta.get("agreement", 1.0))
    return out
