"""An attribution graph as circuit-tracer's graph file (the JSON its
`utils.create_graph_files` writes and `frontend.local_server` serves, schema
`circuit_tracer.frontend.graph_models.Model`), so its viewer opens glassbox graphs.

`write_graph(graph, out_dir, slug)` writes `out_dir/<slug>.json` and adds the graph to
`out_dir/graph-metadata.json` (the viewer's list); `circuit_tracer.frontend.
local_server.serve(out_dir)` then shows it. Nodes and links are those that survive
pruning (analysis.graphs.prune), as circuit-tracer writes them. Each unit node links
(`url`, which the viewer's feature detail opens) to its unit's dashboard
(`glassbox export CHECKPOINT --to features`) where one is given. Glassbox's own
numbers (completeness, statistics, what was frozen) are under `metadata.glassbox`.

Node ids follow circuit-tracer: a unit `{layer}_{unit}_{pos}`, an embedding
`E_{token}_{pos}`, the logit `{n_layers + 1}_{token}_{pos}`; an error node is
`err_{layer}_{pos}` (circuit-tracer's `0_{layer}_{pos}` can equal a unit's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from glassbox.analysis.graphs.graph import AttributionGraph
from glassbox.analysis.graphs.prune import graph_stats, prune


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def unit_label(graph: AttributionGraph, layer: int, unit: int) -> str:
    """ "latent 17", or "expert 3 unit 12" for a unit inside a coarser group."""
    groups = graph.meta["unit_groups"][layer]
    fine_kind, fine_n = groups[0]
    for kind, n in groups[1:]:
        if n and fine_n % n == 0:
            r = fine_n // n
            return f"{kind} {unit // r} unit {unit % r}"
    return f"{fine_kind} {unit}"


def dashboard_links(graph: AttributionGraph, features_dir: str | Path, base: str) -> dict:
    """{(layer, unit): url} of every unit node whose layer has a dashboard in
    features_dir (its index.json): the unit's feature page where it has one, else its
    layer's JSON. A unit inside a coarser dashboard unit (a MoE expert's hidden unit)
    links to that one's. base: how the url starts (the folder as the viewer reaches it)."""
    index = Path(features_dir) / "index.json"
    if not index.is_file():
        return {}
    layers = json.loads(index.read_text())["layers"]
    links = {}
    for layer, unit in zip(graph.layers.tolist(), graph.units.tolist(), strict=True):
        if layer >= len(layers) or layer in graph.error_layers:
            continue
        lay = layers[layer]
        fine = graph.meta["unit_groups"][layer][0][1]
        if not lay["n_units"] or fine % lay["n_units"]:
            continue
        v = unit // (fine // lay["n_units"])
        page = f"{lay['page']}#unit-{v}" if v in lay.get("page_units", []) else lay["file"]
        links[(layer, unit)] = f"{base.rstrip('/')}/{page}"
    return links


def _unit_nodes(graph: AttributionGraph, keep, scores, links) -> dict[int, dict]:
    nodes = {}
    rows = zip(graph.layers.tolist(), graph.positions.tolist(), graph.units.tolist(), strict=True)
    for i, (layer, pos, unit) in enumerate(rows):
        if not keep[i]:
            continue
        node = _node(
            f"{layer}_{unit}_{pos}", _cantor(layer, unit), str(layer), pos, "cross layer transcoder"
        )
        node.update(
            jsNodeId=f"{layer}_{unit}-0",
            clerp=f"L{layer} {unit_label(graph, layer, unit)}",
            influence=scores[i],
            activation=float(graph.activations[i]),
        )
        if (layer, unit) in links:
            node["url"] = links[(layer, unit)]
        nodes[i] = node
    return nodes


def _node(node_id: str, feature: int, layer: str, pos: int, kind: str) -> dict[str, Any]:
    return {
        "node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": pos,
        "feature_type": kind, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0,
        "reverse_ctx_idx": 0, "jsNodeId": node_id, "clerp": "", "influence": None,
        "activation": None,
    }  # fmt: skip


def _other_nodes(graph: AttributionGraph, keep, scores) -> dict[int, dict]:
    nodes, T = {}, len(graph.token_ids)
    start = graph.n_units
    for j, layer in enumerate(graph.error_layers):
        for pos in range(T):
            i = start + j * T + pos
            if keep[i]:
                nodes[i] = _node(
                    f"err_{layer}_{pos}", -1, str(layer), pos, "mlp reconstruction error"
                )
                nodes[i].update(jsNodeId=f"{layer}_{pos}-0", influence=scores[i])
    emb = graph.embed_slice().start
    for pos, tok in enumerate(graph.token_ids):
        nodes[emb + pos] = _node(f"E_{tok}_{pos}", pos, "E", pos, "embedding")
        nodes[emb + pos].update(jsNodeId=f"E_{tok}-{pos}", influence=scores[emb + pos])
    L, t = len(graph.meta["kinds"]), graph.target
    logit = _node(f"{L + 1}_{t.id}_{T - 1}", t.id, str(L + 1), T - 1, "logit")
    logit.update(
        jsNodeId=f"L_{t.id}-{T - 1}",
        token_prob=t.prob,
        is_target_logit=True,
        clerp=f"Output {t.label} (p={t.prob:.3f})",
    )
    nodes[graph.n_nodes - 1] = logit
    return nodes


def to_circuit_tracer(
    graph: AttributionGraph,
    slug: str,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    links: dict | None = None,
) -> dict[str, Any]:
    """The graph file circuit-tracer writes (its create_graph_files), pruned at the
    thresholds as it prunes; `links` from dashboard_links."""
    p = prune(graph, node_threshold, edge_threshold)
    inf = p.influence.clone()
    inf[-1] = 0.0
    order = inf.argsort(descending=True)
    cum = (inf[order].cumsum(0) / inf.sum().clamp(min=1e-30)).tolist()
    scores = [0.0] * len(cum)
    for rank, i in enumerate(order.tolist()):
        scores[i] = cum[rank]
    keep = p.nodes.tolist()
    nodes = _unit_nodes(graph, keep, scores, links or {})
    nodes.update(_other_nodes(graph, keep, scores))
    dst, src = p.edges.nonzero(as_tuple=True)
    weights = graph.adjacency[dst, src].tolist()
    edges = [
        {"source": nodes[s]["node_id"], "target": nodes[d]["node_id"], "weight": w}
        for s, d, w in zip(src.tolist(), dst.tolist(), weights, strict=True)
        if s in nodes and d in nodes
    ]
    used = {e["source"] for e in edges} | {e["target"] for e in edges}
    kept = [
        n
        for n in nodes.values()
        if n["node_id"] in used or n["feature_type"] in ("embedding", "logit")
    ]
    return {
        "metadata": _metadata(graph, slug, node_threshold),
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": kept,
        "links": edges,
    }


def _metadata(graph: AttributionGraph, slug: str, node_threshold: float) -> dict[str, Any]:
    meta = {k: v for k, v in graph.meta.items() if k != "unit_groups"}
    return {
        "slug": slug,
        "scan": graph.meta.get("model") or "glassbox",
        "transcoder_list": [],
        "prompt_tokens": graph.tokens,
        "prompt": " ".join(graph.tokens),
        "node_threshold": node_threshold,
        "schema_version": 1,
        "glassbox": {
            "target": graph.target.label,
            "completeness": graph.completeness,
            "stats": graph_stats(graph),
            **meta,
        },
    }


def write_graph(
    graph: AttributionGraph,
    out_dir: str | Path,
    slug: str,
    features_dir: str | Path | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> Path:
    """Write out_dir/<slug>.json and list it in out_dir/graph-metadata.json (as
    circuit-tracer's create_graph_files does); features_dir: the model's dashboards,
    linked from each unit node by a path relative to out_dir. Returns the file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    links = {}
    if features_dir is not None:
        base = os.path.relpath(Path(features_dir).resolve(), out.resolve())
        links = dashboard_links(graph, features_dir, base)
    data = to_circuit_tracer(graph, slug, node_threshold, edge_threshold, links)
    path = out / f"{slug}.json"
    path.write_text(json.dumps(data, indent=1))
    listing = out / "graph-metadata.json"
    known = json.loads(listing.read_text())["graphs"] if listing.is_file() else []
    known = [g for g in known if g.get("slug") != slug] + [data["metadata"]]
    listing.write_text(json.dumps({"graphs": known}, indent=2))
    return path
