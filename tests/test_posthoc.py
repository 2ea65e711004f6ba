"""The post-hoc route (analysis.posthoc) as a function of models and data: called
without compare, on a tiny dense checkpoint and its data, it fits, splices and scores
TopK transcoders, and with a by-construction transcoder it times the two routes."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from glassbox.analysis.posthoc import AUDIT_KEYS, COVERAGE_KEYS, posthoc_route
from glassbox.archs import load_pretrained
from glassbox.training.config import load_config
from glassbox.training.data import build_datasets
from tests.tiny_checkpoints import tiny_checkpoint


def test_the_posthoc_route_needs_no_compare():
    """analysis.posthoc imports nothing of the top floor (glassbox.compare, scoring,
    results): the floors would be broken if it did."""
    code = (
        "import sys, glassbox.analysis.posthoc; "
        "print(sorted(m for m in sys.modules if m.startswith('glassbox.') and m.count('.') == 1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == ["glassbox.analysis", "glassbox.archs", "glassbox.training"]


@pytest.fixture(scope="module")
def dense():
    path = tiny_checkpoint("dense")
    return load_pretrained(path), build_datasets(load_config(path / "config.yaml").data)


def test_posthoc_route_on_a_dense_model(dense):
    model, suite = dense
    settings = dict(steps=3, d_latent=64, k=4, n_examples=16, batch_size=8, seed=0)
    result = posthoc_route(model, suite, **settings)
    assert result.scores["interp.l0"] == pytest.approx(4.0)  # TopK: k latents per token
    assert set(COVERAGE_KEYS) <= set(result.scores) and set(AUDIT_KEYS) <= set(result.scores)
    # the latents compared as every kind's units are: at matched candidates, held out
    lo, hi = result.scores["interp.coverage_matched_ci"]
    assert lo <= result.scores["interp.coverage_matched"] <= hi
    assert 0.0 <= result.scores["interp.coverage"] <= 1.0
    assert math.isfinite(result.scores["interp.fvu"]) and result.scores["interp.fvu"] >= 0
    assert result.cost is None and result.scores["cost_ratio"] is None  # nothing to time against
    assert len(result.coverage_by_layer) == model.cfg.n_layers
    # timed against a by-construction transcoder: the cost of the two routes
    tc = load_pretrained(tiny_checkpoint("transcoder"))
    timed = posthoc_route(model, suite, transcoder_model=tc, **settings)
    assert timed.cost["ratio"] > 0 and timed.scores["cost_ratio"] == timed.cost["ratio"]
