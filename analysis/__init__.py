"""Analysis: a model and data in, numbers and figures out: interpretability scores
against the data's ground truth, their baselines, routing metrics, circuits and causal
tools, transcoder metrics, tool-call analysis, dashboards and plots. The gap report that
puts them together is one floor up (glassbox/report.py)."""
