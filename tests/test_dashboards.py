"""Feature dashboards (analysis.dashboards, schema analysis/DASHBOARDS.md): every key
written is documented and typed as documented; known answers: a latent whose decoder
row is a token's unembedding direction promotes that token first (its negation
suppresses it first), every token goes to exactly k experts (the experts'
frac_nonzero sum to k), skill profiles of constructed activations; and the pages and
JSON come out of `glassbox export --to features` on trained checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from glassbox.analysis.coverage import coverage, ground_truth_labels
from glassbox.analysis.dashboards import (
    SCHEMA_VERSION,
    export_dashboards,
    logit_effects,
    skill_profile,
    top_logits,
)
from glassbox.analysis.interp import suite_batches, unit_activations
from glassbox.archs import ArgumentError, load_pretrained
from glassbox.cli import main
from glassbox.training.evaluate import load_suite_for
from tests.tiny_checkpoints import tiny_checkpoint

DOC = (Path(__file__).parent.parent / "analysis" / "DASHBOARDS.md").read_text()
EXAMPLES = 64

INDEX_KEYS = {
    "schemaVersion",
    "modelId",
    "kinds",
    "data",
    "groundTruthFeatures",
    "skills",
    "layers",
}
LAYER_KEYS = {
    "schemaVersion",
    "modelId",
    "layer",
    "hook",
    "unitType",
    "n_units",
    "n_tokens",
    "features",
}
RECORD_TYPES = {
    "modelId": str, "layer": str, "hook": str, "index": int, "unitType": str,
    "maxActApprox": float, "frac_nonzero": float, "pos_str": list, "pos_values": list,
    "neg_str": list, "neg_values": list, "activations": list, "featureMatch": dict,
    "skillProfile": dict, "skillRate": dict,
}  # fmt: skip
CONTEXT_TYPES = {
    "tokens": list, "values": list, "maxValue": float, "maxValueTokenIndex": int,
    "groundTruth": dict,
}  # fmt: skip


def documented(key: str) -> bool:
    return f"| `{key}` |" in DOC


@pytest.fixture(scope="module")
def transcoder_export(tmp_path_factory):
    ckpt = tiny_checkpoint("transcoder")
    out = tmp_path_factory.mktemp("dash") / "features"
    assert (
        main(["export", str(ckpt), "--to", "features", str(out), "--examples", str(EXAMPLES)]) == 0
    )
    return ckpt, out


def test_files_and_schema_keys(transcoder_export):
    ckpt, out = transcoder_export
    check_export(ckpt, out, EXAMPLES)


def _shipped_features() -> list[str]:
    from glassbox.archs import shipped_checkpoints

    return [n for n in shipped_checkpoints() if n in ("moe", "moe_relu", "transcoder")]


@pytest.mark.parametrize("name", _shipped_features())
def test_shipped_checkpoints_carry_their_dashboards(name):
    """checkpoints/<name>/features/ (what `make ship` exports): the documented schema,
    one record per unit of the shipped model, browsable pages."""
    from glassbox.archs.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(f"glassbox/{name}")
    index = json.loads((ckpt / "features" / "index.json").read_text())
    check_export(ckpt, ckpt / "features", index["data"]["n_examples"])


def check_export(ckpt, out, n_examples) -> None:
    """An exported features folder of the transcoder or MoE checkpoint `ckpt` holds
    the documented files and keys, one record per unit, values in their ranges."""
    model = load_pretrained(ckpt)
    L = model.cfg.n_layers
    expected = {"index.json", "index.html"} | {
        f"layer{i}.{e}" for i in range(L) for e in ("json", "html")
    }
    assert {p.name for p in out.iterdir()} == expected
    index = json.loads((out / "index.json").read_text())
    assert set(index) == INDEX_KEYS and all(documented(k) for k in INDEX_KEYS)
    kind = model.cfg.ffn.kind
    assert index["schemaVersion"] == SCHEMA_VERSION and index["kinds"] == [kind]
    assert index["data"]["n_examples"] == n_examples and index["groundTruthFeatures"]
    for i, entry in enumerate(index["layers"]):
        unit = {"transcoder": "latent", "moe": "expert"}[kind]
        assert entry["file"] == f"layer{i}.json" and entry["unitType"] == unit
        layer = json.loads((out / entry["file"]).read_text())
        assert set(layer) == LAYER_KEYS and all(documented(k) for k in LAYER_KEYS)
        hook = {"transcoder": "hook_latents", "moe": "hook_expert_weights"}[kind]
        assert layer["hook"] == f"blocks.{i}.mlp.{hook}"
        mlp = model.blocks[i].mlp
        n_units = mlp.W_dec.shape[0] if kind == "transcoder" else mlp.n_experts
        assert layer["n_units"] == n_units == len(layer["features"])
        assert [r["index"] for r in layer["features"]] == list(range(n_units))
        for rec in layer["features"]:
            assert set(rec) == set(RECORD_TYPES), set(rec) ^ set(RECORD_TYPES)
            for k, t in RECORD_TYPES.items():
                assert isinstance(rec[k], t), (k, rec[k])
            assert len(rec["pos_str"]) == len(rec["pos_values"]) == 10
            assert rec["pos_values"] == sorted(rec["pos_values"], reverse=True)
            assert rec["neg_values"] == sorted(rec["neg_values"])
            assert set(rec["featureMatch"]) == {"feature", "f1", "precision"}
            assert rec["featureMatch"]["feature"] in index["groundTruthFeatures"]
            assert 0 <= rec["featureMatch"]["f1"] <= 1
            assert len(rec["activations"]) <= 10
            for c in rec["activations"]:
                assert set(c) == set(CONTEXT_TYPES)
                for k, t in CONTEXT_TYPES.items():
                    assert isinstance(c[k], t), (k, c[k])
                assert len(c["tokens"]) == len(c["values"])
                assert c["values"][c["maxValueTokenIndex"]] == c["maxValue"] > 0
            maxima = [c["maxValue"] for c in rec["activations"]]
            assert maxima == sorted(maxima, reverse=True)
            if maxima:
                assert maxima[0] == rec["maxActApprox"]
    for k in (*RECORD_TYPES, *CONTEXT_TYPES):
        assert documented(k), f"{k} is written but not documented in DASHBOARDS.md"


def test_feature_match_is_the_units_best_f1(transcoder_export):
    """The record of the unit that best covers some feature names that feature with
    the F1 that analysis.coverage gives it on the same tokens."""
    ckpt, out = transcoder_export
    model = load_pretrained(ckpt)
    suite, _ = load_suite_for(ckpt, model)
    units, col = unit_activations(model, suite_batches(suite, "val", EXAMPLES, seed=0))
    labels, names = ground_truth_labels(
        col.features, suite.feature_names, suite.feature_kinds, col.skill, suite.skill_names
    )
    cov = coverage(units[1], labels, names)
    layer = json.loads((out / "layer1.json").read_text())
    assert layer["n_tokens"] == units[1].shape[0]
    best = int(cov.unit_f1.argmax())
    rec = layer["features"][best]
    assert rec["featureMatch"]["feature"] == names[int(cov.unit_feature[best])]
    assert rec["featureMatch"]["f1"] == pytest.approx(float(cov.unit_f1[best]), abs=1e-5)
    assert rec["featureMatch"]["f1"] == max(r["featureMatch"]["f1"] for r in layer["features"])


def test_pages_link_the_units_they_show(transcoder_export):
    _, out = transcoder_export
    index = json.loads((out / "index.json").read_text())
    page_index = (out / "index.html").read_text()
    for entry in index["layers"]:
        page = (out / entry["page"]).read_text()
        assert entry["page_units"]
        for u in entry["page_units"]:
            assert f'id="unit-{u}"' in page and f'href="{entry["page"]}#unit-{u}"' in page_index
        assert "best feature" in page and "promotes" in page


def test_decoder_row_on_a_tokens_unembedding_promotes_it_first(tmp_path):
    """Known answer: the unembedding row of largest norm, t; a latent writing
    W_U[t] / ln_final.w raises logit s by W_U[t] . W_U[s], largest at s = t (Cauchy-
    Schwarz); a latent writing its negation lowers t most."""
    ckpt = tiny_checkpoint("transcoder")
    model = load_pretrained(ckpt)
    suite, _ = load_suite_for(ckpt, model)
    W_U = model.W_U.weight.detach()
    t = int(W_U.norm(dim=-1).argmax())
    direction = W_U[t] / model.ln_final.w.detach()
    mlp = model.blocks[1].mlp
    with torch.no_grad():
        mlp.W_dec[5] = direction
        mlp.W_dec[9] = -direction
    out = export_dashboards(model, suite, tmp_path / "f", n_examples=16)
    recs = json.loads((out / "layer1.json").read_text())["features"]
    token = model.tokenizer.id_to_token(t)
    assert recs[5]["pos_str"][0] == token and recs[9]["neg_str"][0] == token
    assert recs[5]["pos_values"][0] == pytest.approx(float(W_U[t] @ W_U[t]), rel=1e-4)
    assert token not in recs[5]["neg_str"] and token not in recs[9]["pos_str"]


def test_moe_experts(tmp_path, capsys):
    ckpt = tiny_checkpoint("moe")
    out = tmp_path / "features"
    assert main(["export", str(ckpt), "--to", "features", str(out), "--examples", "32"]) == 0
    assert "exported the features" in capsys.readouterr().out
    model = load_pretrained(ckpt)
    moe = model.blocks[0].mlp
    index = json.loads((out / "index.json").read_text())
    assert index["kinds"] == ["moe"]
    for i in range(model.cfg.n_layers):
        layer = json.loads((out / f"layer{i}.json").read_text())
        assert (
            layer["unitType"] == "expert" and layer["hook"] == f"blocks.{i}.mlp.hook_expert_weights"
        )
        recs = layer["features"]
        assert len(recs) == moe.n_experts
        # every token goes to exactly k experts
        assert sum(r["frac_nonzero"] for r in recs) == pytest.approx(moe.k, abs=1e-3)
        for r in recs:
            assert 0 < r["maxActApprox"] <= 1  # a renormalised gate weight
            if r["frac_nonzero"] > 0:
                assert sum(r["skillProfile"].values()) == pytest.approx(1, abs=1e-3)
                assert r["skillRate"]["copy"] == pytest.approx(r["frac_nonzero"], abs=1e-3)
            assert r["pos_str"] and r["featureMatch"] is not None


def test_skill_profile_known_answer():
    acts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [4.0, 5.0], [9.0, 9.0]])
    skill = torch.tensor([0, 0, 1, 1, -1])  # the last token has no skill: left out
    share, rate = skill_profile(acts, skill, 3)
    torch.testing.assert_close(share, torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]))
    torch.testing.assert_close(rate, torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0]]))


def test_logit_effects_closed_form():
    ckpt = tiny_checkpoint("transcoder")
    model = load_pretrained(ckpt)
    d = torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    eff = logit_effects(model, d)
    expected = (d * model.ln_final.w.detach()) @ model.W_U.weight.detach().T
    torch.testing.assert_close(eff, expected)
    # the order is that of the logits after the full final norm, which only rescales
    x = model.W_U(model.ln_final(d)).detach()
    assert torch.equal(top_logits(eff, 5)[0], x.topk(5).indices)


def test_refuses_no_examples(tmp_path):
    ckpt = tiny_checkpoint("moe")
    model = load_pretrained(ckpt)
    suite, _ = load_suite_for(ckpt, model)
    with pytest.raises(ArgumentError, match=re.escape("n_examples=0")):
        export_dashboards(model, suite, tmp_path / "f", n_examples=0)
    assert not (tmp_path / "f").exists()
