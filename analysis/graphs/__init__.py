"""Exact attribution graphs (docs/design.md, "Attribution graphs"): `trace` a logit
to the units that produced it, `prune` by influence, `graph_stats`, and the graph as
circuit-tracer's JSON (`to_circuit_tracer`, `write_graph`)."""

from glassbox.analysis.graphs.graph import MAX_NODES, AttributionGraph, trace
from glassbox.analysis.graphs.prompts import Target

__all__ = ["MAX_NODES", "AttributionGraph", "Target", "trace"]
