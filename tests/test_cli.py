"""The command line end to end on a tiny checkpoint: train, eval, generate, analyze,
export (docs/design.md, "Command line")."""

from __future__ import annotations

import json

import pytest
import torch

from glassbox import archs
from glassbox.cli import main
from tests.test_training import FAST


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    args = [
        "train", "configs/dense.yaml", *FAST, f"data.cache_dir={tmp / 'data'}", f"run.out_dir={tmp / 'run'}",
        "trainer.max_steps=8", "optim.warmup_steps=2",
    ]  # fmt: skip
    assert main(args) == 0
    return tmp / "run" / "checkpoint"


def test_eval_json_keys(checkpoint, capsys):
    assert main(["eval", str(checkpoint), "--json", "--max-batches", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"val_loss", "perplexity", "skills", "params", "train"} <= set(out)
    assert {"accuracy", "exact_match", "loss", "ood_accuracy"} <= set(out["skills"]["copy"])
    assert out["params"]["active"] == out["params"]["total"] > 0
    assert out["perplexity"] == pytest.approx(float(torch.tensor(out["val_loss"]).exp()), rel=1e-5)


def test_generate_prints_greedy_continuation(checkpoint, capsys):
    assert main(["generate", str(checkpoint), "copy 3 4 5 =", "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out.strip()
    model = archs.load_pretrained(checkpoint)
    ids = [model.tokenizer.token_to_id("<bos>")] + model.tokenizer.encode("copy 3 4 5 =").ids
    expected = model.generate(
        [ids], max_new_tokens=5, stop_tokens=[model.tokenizer.token_to_id("<eos>")]
    )
    assert printed == model.tokenizer.decode(expected.continuations[0], skip_special_tokens=False)


def test_analyze_writes_json_and_plots(checkpoint, tmp_path, capsys):
    assert main(["analyze", str(checkpoint), "--out", str(tmp_path / "a"), "--examples", "48"]) == 0
    report = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert 0 <= report["interp"]["summary"]["interp.coverage"] <= 1
    assert (
        "interp.nmi_expert_skill" in report["interp"]["summary"]
    )  # dense: the k-means comparison point
    assert list((tmp_path / "a").glob("*.png"))
    # the contract: every score with its untrained-twin and token-identity baselines
    summary = report["interp"]["summary"]
    keys = ["interp.coverage", "interp.coverage_contextual", "interp.coverage_lift",
            "interp.coverage_lexical", "interp.nmi_lift", "interp.nmi_expert_skill_label",
            "interp.skill_circuit_size.copy", "interp.skill_circuit_fraction.copy", "interp.skill_circuit_auc.copy",
            "interp.skill_circuit_fraction", "interp.skill_circuit_auc"]  # fmt: skip
    assert set(keys) <= set(summary)
    assert {f"baselines.init.{k}" for k in keys} <= set(summary)
    token = ["interp.coverage", "interp.coverage_contextual", "interp.coverage_lexical",
             "interp.nmi_expert_skill_label", "interp.purity"]  # fmt: skip
    assert {f"baselines.token.{k}" for k in token} <= set(summary)
    assert 0 < summary["interp.skill_circuit_size.copy"] <= 4 * 2 + 128 * 2  # heads + neurons
    assert summary["interp.nmi_lift"] == pytest.approx(
        summary["interp.nmi_expert_skill_label"]
        - summary["baselines.token.interp.nmi_expert_skill_label"]
    )
    assert report["interp"]["untrained_twin"]["init_seed"] == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "interp.coverage_lift" in printed


def test_export_hf_from_cli(checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert main(["export", str(checkpoint), "--to", "hf", str(tmp_path / "hf")]) == 0
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model = archs.load_pretrained(checkpoint)
    x = torch.randint(0, model.cfg.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), rtol=1e-5, atol=1e-5)


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 1
    assert "no checkpoint directory" in capsys.readouterr().err
