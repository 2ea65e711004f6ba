"""Analysis on a text corpus: domains from the Python standard library's own source
(found through sysconfig), domain scores on hand-built models with known answers,
and `glassbox analyze` end to end on a tiny model trained on that corpus."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from glassbox.analysis.text_analysis import (
    NOT_APPLICABLE,
    has_ground_truth,
    not_applicable_line,
    text_report,
    usage_contrast,
)
from glassbox.archs.config import ConfigError
from glassbox.compare import compare, load_compare_config
from glassbox.report import Report
from glassbox.results import RunResult
from glassbox.training.data import SuiteData
from glassbox.training.data.text import corpus_domains, resolve_path, stdlib_dir
from tests.test_moe_analysis import N_SKILLS, built_batches, built_model

# small packages of the standard library: a corpus of ~170 kB in three domains
STDLIB_DOMAINS = ("json", "concurrent", "wsgiref")
TINY = [
    f"data.text.paths=[{','.join(f'stdlib:{d}' for d in STDLIB_DOMAINS)}]",
    "data.text.extensions=[.py]", "data.text.vocab_size=320", "data.text.block_size=64",
    "data.source=text", "model.d_model=32", "model.n_heads=2", "model.max_seq_len=64",
    "trainer.max_steps=20", "optim.warmup_steps=2", "trainer.val_every_n_steps=20",
    "trainer.checkpoint_every_n_steps=20", "trainer.progress_bar=false",
]  # fmt: skip


def test_stdlib_resolver_names_packages_as_domains():
    root = Path(sysconfig.get_paths()["stdlib"])
    assert stdlib_dir() == root
    assert resolve_path("stdlib:json") == (root, root / "json")
    assert resolve_path("stdlib:") == (root, root)
    found = corpus_domains([f"stdlib:{d}" for d in STDLIB_DOMAINS], [".py"])
    assert {d for _, d in found} == set(STDLIB_DOMAINS)
    for f, d in found:  # every file sits in its package's folder, and is Python source
        assert f.suffix == ".py" and f.relative_to(root).parts[0] == d
    assert (root / "json" / "decoder.py", "json") in found
    # a top-level module is its own domain (the file's stem)
    assert corpus_domains(["stdlib:abc"], [".py"]) == [(root / "abc.py", "abc")]
    with pytest.raises(ConfigError, match="no package or module 'no_such_pkg'"):
        resolve_path("stdlib:no_such_pkg")
    with pytest.raises(FileNotFoundError, match="extensions"):
        corpus_domains(["stdlib:json"])  # the default suffixes read no .py


def test_usage_contrast_closed_form():
    # unit 0 fires (1.0) on every token of label 0, unit 1 on every token, unit 2 never
    labels = torch.tensor([0, 0, 1, 1, 1, -1])
    acts = torch.tensor([[1.0, 2, 0], [1, 2, 0], [0, 2, 0], [0, 2, 0], [0, 2, 0], [9, 9, 9]])
    c = usage_contrast(acts, labels, 2)
    # unit 0: on label 0 mean 1, elsewhere 0, overall 2/5 -> 2.5; on label 1: -2.5
    assert c[:, 0].tolist() == pytest.approx([2.5, -2.5])
    assert c[:, 1].tolist() == pytest.approx([0.0, 0.0])
    assert c[:, 2].tolist() == [0.0, 0.0]


def _suite_from_batches(batches: list[dict]) -> SuiteData:
    """A text-corpus-shaped SuiteData whose domain is the hand-built batches' skill."""
    rows: dict[str, list] = {k: [] for k in ("input_ids", "loss_mask", "answer_mask", "skill")}
    rows.update(features=[], example_skill=[], domain=[])
    for b in batches:
        for i in range(b["input_ids"].shape[0]):
            n = b["input_ids"].shape[1]
            rows["input_ids"].append(b["input_ids"][i].tolist())
            rows["loss_mask"].append(b["answer_mask"][i].tolist())
            rows["answer_mask"].append(b["answer_mask"][i].tolist())
            rows["skill"].append([-1] * n)
            rows["features"].append([[]] * n)
            rows["example_skill"].append(-1)
            rows["domain"].append(b["skill"][i].tolist())
    return rows


def _domain_suite(names: list[str]) -> SuiteData:
    """The hand-built batches as a text corpus (val and test) whose domains are `names`:
    domain d holds skill d's tokens; a name past the batches' skills has none."""
    splits = {
        "val": _suite_from_batches(built_batches(6, seed=0)),
        "test": _suite_from_batches(built_batches(6, seed=1)),
    }
    return SuiteData(
        DatasetDict({k: Dataset.from_dict(v) for k, v in splits.items()}), None, [], [], 0,
        domain_names=names,
    )  # fmt: skip


def test_router_that_sends_each_domain_to_one_expert(tmp_path):
    """Domain d's tokens all go to expert d (k=1), and only expert d predicts them:
    domain specialisation 1, and ablating a domain's expert raises the loss on it
    alone (selectivity on it, exactly 0 on the others)."""
    names = [f"pkg{d}" for d in range(N_SKILLS)]
    suite = _domain_suite(names)
    assert not has_ground_truth(suite)
    model = built_model("moe")
    r = text_report(model, suite, tmp_path, n_examples=64, circuits=False)
    s = r["summary"]
    for n in names:
        assert s[f"domains.{n}.specialization"] == pytest.approx(1.0)
    assert s["interp.domain_specialization"] == pytest.approx(1.0)
    assert s["interp.nmi_expert_domain"] == pytest.approx(1.0)
    assert s["interp.domain_purity"] == pytest.approx(1.0)
    causal = r["causal"]
    assert causal["experts"] == {n: {"0": [d]} for d, n in enumerate(names)}
    drop = torch.tensor(causal["drop"])
    off = ~torch.eye(N_SKILLS, dtype=torch.bool)
    assert drop[off].abs().max() == 0.0  # other domains never touch the expert
    assert (drop.diagonal() > 1.0).all()  # the domain loses its only predictor
    assert s["interp.domain_delta_others"] == 0.0
    assert s["interp.domain_selectivity"] == pytest.approx(float(drop.diagonal().mean()))
    for n in names:
        assert s[f"domains.{n}.selectivity"] > 1.0
    # expert d is the only one routed tokens 2d, 2d+1, so those are its top tokens
    top = r["experts"]["0"]["top_tokens"]
    for d in range(N_SKILLS):
        assert {t["id"] for t in top[d]} == {2 * d, 2 * d + 1}
        assert all(t["share"] == 1.0 for t in top[d])
    assert (tmp_path / "expert_domain.png").stat().st_size > 0
    assert "domain=pkg0" in (tmp_path / "features_layer0.txt").read_text()
    # the ground-truth scores are said not to apply, not silently missing
    assert set(r["not_applicable"]) == set(NOT_APPLICABLE)
    assert "interp.coverage" not in s and "coverage" in not_applicable_line()


def test_a_domain_with_no_tokens_in_the_sample_has_no_specialisation(tmp_path):
    """On code every package is a domain and the sample holds a few: a domain none of
    whose tokens was seen has no favourite expert, so it gets None (not 0, which the
    report would print as a column of zeros), and the mean leaves it out."""
    names = [f"pkg{d}" for d in range(N_SKILLS)] + ["absent"]
    suite = _domain_suite(names)
    s = text_report(built_model("moe"), suite, tmp_path, n_examples=64, circuits=False)["summary"]
    assert s["domains.absent.specialization"] is None
    for n in names[:-1]:
        assert s[f"domains.{n}.specialization"] == pytest.approx(1.0)
    assert s["interp.domain_specialization"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    from glassbox.cli import main

    tmp = tmp_path_factory.mktemp("text")
    args = [
        "train", "configs/moe.yaml", *TINY, "model.ffn.moe.n_experts=4", "model.ffn.moe.k=1",
        "model.ffn.moe.d_expert=32", f"data.cache_dir={tmp / 'data'}", f"run.out_dir={tmp / 'run'}",
    ]  # fmt: skip
    assert main(args) == 0
    return tmp / "run" / "checkpoint"


@pytest.mark.slow
def test_analyze_on_a_stdlib_text_model(text_checkpoint, tmp_path, capsys):
    from glassbox.cli import main

    out = tmp_path / "a"
    args = ["analyze", str(text_checkpoint), "--out", str(out), "--examples", "16"]
    assert main([*args, "--reference", str(text_checkpoint)]) == 0
    printed = capsys.readouterr().out
    assert "not applicable on text" in printed
    report = json.loads((out / "analysis.json").read_text())
    interp = report["interp"]
    assert interp["domains"] == sorted(STDLIB_DOMAINS)
    s = interp["summary"]
    assert s["interp.router_saturation"] == 1.0  # against itself
    # the untrained twin, scored on the same tokens
    assert 0 < s["baselines.init.interp.domain_specialization"] <= 1
    assert "baselines.token.interp.nmi_expert_domain" in s
    # every domain is in the held-out sample, and the console says so
    assert "val: 3 of 3 domains" in printed and "test: 3 of 3 domains" in printed
    assert s["interp.n_domains_held_out"] == 3
    for d in STDLIB_DOMAINS:
        assert s[f"domains.{d}.loss"] > 0
        assert 0 < s[f"domains.{d}.specialization"] <= 1
        # a domain whose loss barely rises with every unit ablated has no circuit (None)
        assert (
            s[f"domains.{d}.circuit_fraction"] is None
            or 0 < s[f"domains.{d}.circuit_fraction"] <= 1
        )
    assert any(s[f"domains.{d}.circuit_fraction"] for d in STDLIB_DOMAINS)
    # information beyond the token about the domain, with its interval and control
    for key in ("interp.domain_info_beyond_token", "interp.domain_info_beyond_token_routed"):
        lo, hi = s[f"{key}_ci"]
        assert lo <= s[key] <= hi and f"baselines.shuffled.{key}" in s
    assert -1 <= s["interp.domain_selectivity"] <= 10
    assert {"logit_lens", "heads"} <= set(report["mechanistic"])
    assert (out / "features_layer0.html").stat().st_size > 0
    assert "promotes:" in (out / "features_layer0.txt").read_text()


def _text_row(arch: str, loss: float, sel: dict[str, float], init: float = 0.0) -> RunResult:
    interp = {"interp.domain_selectivity": sum(sel.values()) / len(sel)}
    interp["baselines.init.interp.domain_selectivity"] = init  # the untrained twin's
    interp |= {f"domains.{d}.selectivity": v for d, v in sel.items()}
    interp |= {f"domains.{d}.loss": loss for d in sel}
    capability = {"val_loss": loss, "mean_accuracy": None, "params.active": 10}
    return RunResult(
        arch, 0, f"runs/{arch}", capability, interp, not_applicable=("interp.coverage",)
    )


def _first_table(md: str) -> dict[str, dict[str, str]]:
    """The first markdown table of `md` as {row label: {column header: cell}}."""
    rows = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for line in rows[2:]:
        if set(line) <= {"|", "-"}:
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        out[cells[0]] = dict(zip(header[1:], cells[1:]))
    return out


def test_report_domain_tables_and_not_applicable_columns(tmp_path):
    runs = (
        _text_row("dense", 2.0, {"json": 0.5, "http": 0.1}),
        _text_row("moe", 3.0, {"json": 0.25, "http": 0.75}, init=0.49),
    )
    report = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=runs)
    text = "\n".join(report.domains_section())
    head = _first_table(text)  # the domain scores: one row per score, a column per kind
    assert head["domain selectivity"]["dense"] == "0.300"
    # moe's is within 0.02 of its untrained twin's: marked not informative
    assert head["domain selectivity"]["moe"] == "0.500 †"
    assert head["domain selectivity (init)"]["moe"] == "0.490"
    assert "domain purity" not in head  # no kind has it: no empty row
    assert "Not informative" in "\n".join(report.trust_note())
    # per domain: a column per domain (sorted), a row per architecture
    assert "| architecture | http | json |" in text
    assert "| dense | 0.100 | 0.500 |" in text and "| moe | 0.750 | 0.250 |" in text
    assert "| dense | 2.000 | 2.000 |" in text  # next-token loss per domain
    assert "Not applicable on text" in text and "coverage" in text.split("Not applicable")[1]
    assert "text corpus" in report.held_equal() or not report.held_equal()
    again = RunResult.from_json(json.loads(json.dumps(runs[0].to_json())))
    assert again.not_applicable == ("interp.coverage",)
    # a skill-suite report has no domain section
    plain = RunResult("dense", 0, "r", {"val_loss": 1.0}, {"interp.coverage": 0.5})
    assert Report(out_dir=tmp_path, seeds=(0,), config={}, runs=(plain,)).domains_section() == []


@pytest.mark.slow
def test_compare_text_config_end_to_end(tmp_path):
    """configs/compare_text.yaml at a tiny size: every kind trains on the stdlib
    corpus, and the report carries the domain tables."""
    args = [
        f"out_dir={tmp_path / 'report'}", "architectures={dense: configs/dense.yaml, "
        "moe: configs/moe.yaml, transcoder: configs/transcoder.yaml}", "analysis_examples=8",
        *TINY, f"data.cache_dir={tmp_path / 'data'}", "model.ffn.d_ff=64",
        "model.ffn.moe.n_experts=4", "model.ffn.moe.k=1", "model.ffn.moe.d_expert=32",
        "model.ffn.transcoder.d_latent=64", "model.ffn.transcoder.k=4",
        "model.ffn.transcoder.aux_k=8",
    ]  # fmt: skip
    cc = load_compare_config("configs/compare_text.yaml", args)
    report = compare(cc)
    md = report.path.read_text()
    assert "## Domains of the text corpus" in md and "Not applicable on text" in md
    for d in STDLIB_DOMAINS:
        assert f"| {d} |" in md or f" {d} |" in md
    for r in report.runs:
        assert "interp.coverage" in r.not_applicable
        assert all(r.interp.get(f"domains.{d}.loss") for d in STDLIB_DOMAINS)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["runs"]
