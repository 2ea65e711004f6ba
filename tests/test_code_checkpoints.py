"""The shipped code family (checkpoints/code/: the ladder's rung S on Python, trained on
a CPU by `glassbox ladder --rungs S`): each kind loads by its nested name, predicts
held-out Python better than a uniform guess, holds the rung's matched parameters, and
carries the manifest of the corpus it read."""

from __future__ import annotations

import json
import math

import pytest
import torch

from glassbox.archs import load_pretrained, shipped_checkpoints
from glassbox.archs.checkpoint import shipped_dir

KINDS = ("dense", "moe", "transcoder", "weight_sparse")
FAMILY = shipped_dir() / "code"
SNIPPET = '''def mean(values):
    """The arithmetic mean of a non-empty sequence."""
    total = 0
    for value in values:
        total += value
    return total / len(values)
'''

pytestmark = pytest.mark.skipif(not FAMILY.is_dir(), reason="no checkpoints/code/ shipped")


@pytest.mark.parametrize("kind", KINDS)
def test_a_code_checkpoint_loads_and_reads_python(kind):
    model = load_pretrained(f"glassbox/code/{kind}").eval()
    ids = model.tokenizer.encode(SNIPPET).ids
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:]).item()
    vocab = model.tokenizer.get_vocab_size()
    assert vocab == 2048 and math.isfinite(loss)
    assert loss < math.log(vocab) - 1.0  # trained: well under a uniform guess (7.6 nats)


def test_the_family_is_matched_on_active_parameters_and_tokens():
    metrics = {k: json.loads((FAMILY / k / "metrics.json").read_text()) for k in KINDS}
    dense = metrics["dense"]["params"]["active"]
    for kind, m in metrics.items():
        # moe: active per token; weight_sparse: non-zero (the ladder's matching, 0.89-1.01x)
        counted = m["params"]["nonzero" if kind == "weight_sparse" else "active"]
        assert 0.85 <= counted / dense <= 1.02, (kind, counted, dense)
        assert m["train"]["tokens"] == metrics["dense"]["train"]["tokens"]


def test_each_carries_its_corpus_manifest_and_is_not_a_top_level_name():
    for kind in KINDS:
        manifest = json.loads((FAMILY / kind / "corpus_manifest.json").read_text())
        splits = manifest["splits"]
        assert splits["val"] and splits["test"] and len(splits["train"]) > 100
        assert all(p["version"] for p in manifest["packages"].values())
        assert manifest["config"]["split_depth"] == 2  # subpackages held out
        assert not set(splits["val"]) & set(splits["test"])
    assert "code" not in shipped_checkpoints()  # a family's folder, not a checkpoint
