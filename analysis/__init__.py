"""Analysis: capability and interpretability metrics, causal tools, the gap report."""
