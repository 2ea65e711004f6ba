"""The mechanistic runner on a small real skill suite, for every FFN kind: each
section agrees with an independent computation (the training metrics for the
lens and the IOI logit difference, the head-score functions), the plots and the
JSON are written; a text-like suite without ground truth runs what applies."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset, DatasetDict

from glassbox.analysis.heads import induction_scores, previous_token_scores
from glassbox.analysis.mechanistic import MechanisticConfig, run_mechanistic
from glassbox.analysis.mechanistic_config import sample_rows
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, TranscoderConfig, Transformer
from glassbox.training.data import DataConfig, SuiteData, build_datasets, collate
from glassbox.training.data.skills.facts import FactsConfig
from glassbox.training.data.skills.ioi import IOIConfig
from glassbox.training.skill_scores import SkillMetrics

FFNS = {
    "dense": FFNConfig(d_ff=48),
    "moe": FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=16)),
    "transcoder": FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=48, k=4)),
}
CFG = MechanisticConfig(
    n_examples=48,
    batch_size=48,
    probe_max_examples=40,
    probe_max_iter=30,
    probe_features=["addition.carry_out", "ioi.order", "facts.relation", "dyck.depth"],
    n_trace_prompts=3,
    trace_samples=2,
    n_ioi=6,
    max_latents=3,
    induction_seq_len=6,
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> SuiteData:
    mix = dict.fromkeys(("copy", "reverse", "sort", "modadd", "dyck"), 0.0)
    mix.update(addition=1.0, facts=1.0, ioi=1.0)
    cfg = DataConfig(
        n_train=300,
        n_val=90,
        n_test=10,
        n_ood=10,
        mix=mix,
        facts=FactsConfig(n_entities=6, relations=["city", "colour"]),
        ioi=IOIConfig(n_names=6),
        cache_dir=str(tmp_path_factory.mktemp("data")),
    )
    return build_datasets(cfg)


def tiny(suite, ffn: FFNConfig) -> Transformer:
    torch.manual_seed(0)
    V = suite.tokenizer.get_vocab_size()
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=48, ffn=ffn)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("kind", list(FFNS))
def test_runner_sections_agree_with_independent_computations(suite, kind, tmp_path):
    model = tiny(suite, FFNS[kind])
    report = run_mechanistic(model, suite, tmp_path, CFG)
    assert set(report) >= {"logit_lens", "heads", "probes", "causal_tracing", "ioi", "summary"}

    # the lens after the last layer is the model: its answer loss and accuracy per
    # skill are the training metrics' on the same examples
    rows = sample_rows(suite, "val", CFG.n_examples, CFG.seed)
    batch = collate(rows, suite.pad_id)
    metrics = SkillMetrics(suite.skill_names)
    with torch.no_grad():
        metrics.update(model(batch["input_ids"], attention_mask=batch["attention_mask"]), batch)
    want = metrics.compute()["skills"]
    lens = report["logit_lens"]
    assert lens["layers"] == ["embed", "0", "1"]
    assert set(lens["by_skill"]) == set(want)
    for name, vals in want.items():
        got = lens["by_skill"][name]
        assert got["answer_loss"][-1] == pytest.approx(vals["loss"], rel=1e-4)
        assert got["answer_accuracy"][-1] == pytest.approx(vals["accuracy"], abs=1e-6)

    # head scores: the functions of analysis.heads on the same data
    prev = previous_token_scores(model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(
        torch.tensor(report["heads"]["previous_token"]), prev, atol=1e-5, rtol=0
    )
    lo, hi = report["heads"]["vocab_range"]
    assert lo == suite.tokenizer.token_to_id("0")
    ind = induction_scores(model, CFG.induction_seq_len, vocab_range=(lo, hi), seed=CFG.seed)
    torch.testing.assert_close(torch.tensor(report["heads"]["induction"]), ind, atol=1e-6, rtol=0)

    # IOI logit difference: the training metric's, on the same prompts
    ioi = report["ioi"]
    sid = suite.skill_names.index("ioi")
    ioi_rows = sample_rows(suite, "val", 4 * CFG.n_ioi, CFG.seed, keep=lambda s: s == sid)
    ioi_batch = collate(ioi_rows[: ioi["n_prompts"]], suite.pad_id)
    f = suite.feature_names
    m = SkillMetrics(suite.skill_names, ioi=(sid, f.index("ioi.io_token"), f.index("ioi.s_token")))
    with torch.no_grad():
        m.update(model(ioi_batch["input_ids"]), ioi_batch)
    assert ioi["logit_diff"] == pytest.approx(m.compute()["skills"]["ioi"]["logit_diff"], abs=1e-4)
    assert torch.tensor(ioi["heads"]["scores"]).shape == (2, 4)
    T = len(ioi["tokens"])
    assert ioi["tokens"][-1] == "to" and torch.tensor(ioi["resid_pre"]["scores"]).shape == (2, T)
    # resid_pre at layer 0 is the embedding: positions whose token is not a name score 0
    names = {i for i, t in enumerate(ioi["tokens"]) if t[0].isupper() and t != "When"}
    row0 = torch.tensor(ioi["resid_pre"]["scores"][0])
    for p in range(T):
        if p not in names:
            assert abs(float(row0[p])) < 1e-5
    if kind == "moe":
        assert torch.tensor(ioi["experts"]["scores"]).shape == (2, 4)
    if kind == "transcoder":
        assert {"latents_0", "latents_1"} <= set(ioi)

    # probes: the variables asked for, at every layer, with a control
    probes = report["probes"]["variables"]
    assert set(probes) <= set(CFG.probe_features) and probes
    assert "dyck.depth" in report["probes"]["skipped"]  # a skill with no examples here
    for v in probes.values():
        assert list(v["by_layer"]) == ["embed", "0", "1"]
        for r in v["by_layer"].values():
            assert r["selectivity"] == pytest.approx(r["accuracy"] - r["control_accuracy"])

    # causal tracing: one trace per facts layout, shaped (n_layers, prompt length)
    for entry in report["causal_tracing"].values():
        ie = torch.tensor(entry["resid_post"]["indirect_effect"])
        assert ie.shape == (2, len(entry["tokens"]))
        assert sum(t.endswith("*") for t in entry["tokens"]) == 1
        mlp = torch.tensor(entry["mlp_out"]["indirect_effect"])
        peak = entry["mlp_peak"]
        assert peak["effect"] == pytest.approx(float(mlp.max()))
        assert float(mlp[peak["layer"], entry["tokens"].index(peak["token"])]) == pytest.approx(
            peak["effect"]
        )

    # files: every plot listed exists; the JSON is the report
    for name in report["plots"]:
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "mechanistic.json").read_text()) == json.loads(json.dumps(report))
    assert all(isinstance(v, float) for v in report["summary"].values())


def test_text_suite_without_ground_truth(tmp_path):
    """A corpus: no skills, no features. The lens and the head scores still run."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 50, (12, 10), generator=g)
    ids[:, 0] = 1
    rows = {
        "input_ids": ids.tolist(),
        "loss_mask": [[0] + [1] * 9] * 12,
        "answer_mask": [[0] + [1] * 9] * 12,
        "skill": [[-1] * 10] * 12,
        "features": [[[] for _ in range(10)]] * 12,
        "example_skill": [-1] * 12,
    }
    suite = SuiteData(DatasetDict({"val": Dataset.from_dict(rows)}), None, [], [], 0)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
    )
    report = run_mechanistic(model, suite, tmp_path, MechanisticConfig(induction_seq_len=5))
    assert set(report) == {"config", "plots", "logit_lens", "heads", "summary"}
    # every answer token counted once: the lens' last layer is the plain next-token loss
    with torch.no_grad():
        logits = model(ids)
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), ids[:, 1:].reshape(-1))
    assert report["logit_lens"]["answer_loss"][-1] == pytest.approx(float(want), rel=1e-4)
    assert report["logit_lens"]["by_skill"] == {}
    assert model.training  # the runner leaves the train/eval mode as it found it
