"""The analysis notebooks run end to end on the shipped checkpoints and compute what
they say.

Each notebook loads the package's pretrained checkpoints ("glassbox/<name>": the
repository's checkpoints/, or the folder GLASSBOX_CHECKPOINTS names), trains nothing
but a short post-hoc fit, and is executed with nbclient on the venv's python3 kernel
from the repository root, writing its plots and a results.json into
GLASSBOX_NOTEBOOK_OUT/<notebook>/. The tests then check those results against what
holds for any trained checkpoint: two routes to the same number (routing shares
counted from the hooks and by specialisation_report, an ablation through the report
and by hand, L0 from coverage_scores and from the hooks, tool reliance by tool_report
and by hand, report.md against report.json against the checkpoint's metrics.json),
closed forms (TopK keeps min(k, positive pre-activations) latents, OLMoE's
specialisation is at least k/E, softmax gate weights sum to 1, gaps in percent,
lexical features are the ones the token gives) and symbolic ground truth (every
calculator result is the sum, every lookup the knowledge graph's entry). How well a
checkpoint learnt is its model card's business; the few claims asserted about the
trained models are ones any checkpoint of the kind meets (a tool model calls its
tools; zeroing the experts a skill favours costs that skill answers).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from glassbox.archs import shipped_checkpoints
from glassbox.archs.checkpoint import read_config, read_metrics, resolve_checkpoint, shipped_dir

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = (
    "expert_specialisation",
    "transcoder_features",
    "auditing_tool_calls",
    "the_gap",
    "attribution_graphs",
)
PLOTTED = (
    "expert_specialisation",
    "the_gap",
    "attribution_graphs",
)  # the notebooks that draw figures


def needs(*names: str) -> None:
    """Skip unless the shipped checkpoints `names` are there (they are shipped with the
    package; GLASSBOX_CHECKPOINTS points at another folder of them)."""
    missing = sorted(set(names) - set(shipped_checkpoints()))
    if missing:
        pytest.skip(f"needs the shipped checkpoints {missing} in {shipped_dir()}")


def config(name: str) -> dict:
    return read_config(resolve_checkpoint(f"glassbox/{name}"))


def execute(name: str, out: Path, monkeypatch) -> dict:
    """Run notebooks/<name>.ipynb (cells time out after 600 s) and return the
    results.json it wrote; a failing cell raises CellExecutionError with its traceback."""
    from nbclient import NotebookClient

    monkeypatch.setenv("GLASSBOX_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return json.loads((out / name / "results.json").read_text())


def test_notebooks_are_committed_with_their_outputs():
    """`make notebooks` executed every cell in order, and each notebook shows a plot."""
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        counts = [cell.execution_count for cell in code]
        assert counts == list(range(1, len(code) + 1)), (name, counts)  # one run, in order
        outputs = [o for cell in code for o in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        if name in PLOTTED:
            assert any("image/png" in o.get("data", {}) for o in outputs), name
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "torch.set_num_threads(1)" in nb.cells[1].source, name
        assert "results.json" in code, name
        # they read the shipped checkpoints and train none of their own
        assert "glassbox/" in code and "training.train import" not in code, name


@pytest.mark.slow
def test_expert_specialisation(tmp_path, monkeypatch):
    needs("moe", "moe_relu", "dense")
    r = execute("expert_specialisation", tmp_path, monkeypatch)
    skills = r["skills"]
    trained = [s for s, w in config("moe")["data"]["mix"].items() if w > 0]
    assert sorted(skills) == sorted(trained)
    k, n_experts = r["k"], r["n_experts"]
    # the softmax router's renormalised gate weights sum to 1 on every token
    assert r["weight_sum_error"] < 1e-5
    # P(skill | expert) counted from hook_expert_indices by hand is specialisation_report's
    assert r["share_diff"] < 1e-9
    # skill_accuracy by hand is the report's causal baseline, on the same test batches
    for s in skills:
        assert r["accuracy"][s] == pytest.approx(r["report_accuracy"][s], abs=1e-9)
    # force_routing, read back through hook_expert_indices inside the block: the k experts asked
    assert r["forced_experts_seen"] == r["forced_experts_asked"]
    assert all(len(v) == k for v in r["forced_experts_asked"].values())
    # ablate_experts restores the model on exit
    assert r["restored"] == r["accuracy"]
    # specialisation_report's causal row for dyck is the by-hand ablation of the same experts
    # (the notebook passes the drops through a float32 tensor for the plot)
    d = skills.index("dyck")
    for j, s in enumerate(skills):
        assert r["drop"][d][j] == pytest.approx(r["accuracy"][s] - r["ablated_dyck"][s], abs=1e-6)
    # zeroing, in every layer, the k experts dyck favours costs dyck answers
    assert r["ablated_dyck"]["dyck"] < r["accuracy"]["dyck"], r["drop"][d]
    # a skill's favourite expert sees at least the mean share of its tokens: k/E (k-means: 1/E)
    for name, spec in r["domain_specialization"].items():
        floor = (1 if name == "dense_kmeans" else k) / n_experts
        assert floor - 1e-9 <= spec <= 1.0, (name, spec)
    for v in (*r["nmi_label"].values(), *r["nmi_arithmetic"].values()):
        assert 0.0 < v <= 1.0
    assert r["nmi_lift"] == pytest.approx(r["nmi_label"]["moe"] - r["nmi_token"], abs=1e-9)
    assert all(-1.0 <= v <= 1.0 for v in r["selectivity"].values())
    assert len(r["plots"]) == 4 and all(Path(p).stat().st_size > 0 for p in r["plots"])


@pytest.mark.slow
def test_transcoder_features(tmp_path, monkeypatch):
    needs("transcoder", "dense")
    r = execute("transcoder_features", tmp_path, monkeypatch)
    k = r["k"]
    assert k == config("transcoder")["model"]["ffn"]["transcoder"]["k"]
    # TopK keeps min(k, positive pre-activations) latents on every token, read from the hooks
    assert r["topk_closed_form"] == {"transcoder": True, "posthoc": True}
    for route in ("transcoder", "posthoc"):
        # coverage_scores' l0 is the count from the hooks on the same tokens, and at most k
        assert r[route]["interp.l0"] == pytest.approx(r["l0_from_hooks"][route], rel=1e-5)
        assert 0.0 < r[route]["interp.l0"] <= k
    assert 0.0 <= r["transcoder"]["interp.dead_fraction"] < 1.0
    for cov in (r["transcoder"], r["untrained_twin"], r["dense"], r["posthoc"]):
        assert 0.0 < cov["interp.coverage"] <= 1.0
    # lexical features are those the token alone gives with F1 >= 0.9
    assert r["token"]["interp.coverage_lexical"] >= 0.9
    # the fit explains most of the MLP output and recovers some of its loss
    assert r["posthoc"]["fvu"] < 1.0 and r["posthoc"]["ce_loss_recovered"] > 0.0
    assert r["posthoc"]["fit_steps"] == 200
    for b in r["best"].values():
        assert 0.0 < b["f1"] <= 1.0 and 0.0 <= b["precision"] <= 1.0 and 0.0 <= b["recall"] <= 1.0
        # the best unit's F1 from coverage() is coverage_scores' for that layer and feature
        assert b["f1"] == pytest.approx(b["f1_coverage_scores"], abs=1e-6)
    # an opening bracket is the token itself: the token alone reads it perfectly
    is_open = r["best"]["dyck.is_open | transcoder latent"]
    assert is_open["kind"] == "lexical" and is_open["token_f1"] == pytest.approx(1.0)
    # the page's latent is the best over every contextual feature
    page = r["page"]
    assert page["kind"] == "contextual"
    for f in ("copy.is_repeat", "addition.carry_out"):
        b = r["best"][f"{f} | transcoder latent"]
        assert b["kind"] == "contextual" and page["f1"] >= b["f1"]
    text = Path(page["text"]).read_text()
    assert text.startswith(f"unit {page['unit']} | best feature {page['feature']}")
    assert "[[" in text and Path(page["html"]).read_text().startswith("<!DOCTYPE html>")
    assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())


@pytest.mark.slow
def test_auditing_tool_calls(tmp_path, monkeypatch):
    needs("tool")
    r = execute("auditing_tool_calls", tmp_path, monkeypatch)
    # every executed call checked against plain Python / the knowledge graph
    assert r["trace_checked"] and all(r["trace_checked"])
    for call in r["trace"]:
        if call["tool"] == "calculator" and call["error"] is None:
            a, b = call["arguments"].replace(" ", "").split("+")
            assert call["value"] == int(a) + int(b)
    # withholding writes nothing between <result> and </result>; the trace keeps the truth
    assert r["withheld"]["written"] and set(r["withheld"]["written"]) == {"<result> </result>"}
    assert r["withheld"]["trace_checked"] and all(r["withheld"]["trace_checked"])
    # the injected value is what sits between <result> and </result>
    assert r["counterfactual"]["written"] and all(r["counterfactual"]["written"])
    s = r["summary"]
    # reliance by hand (the same prompts, an injector of the same seed) is tool_report's
    assert r["reliance_by_hand"] == pytest.approx(s["interp.tool_reliance"])
    assert r["n_injected_by_hand"] == r["counts"]["counterfactual"] > 0
    assert s["interp.tool_reliance"] + s["tools.counterfactual_follows_true"] <= 1.0 + 1e-9
    # a tool model calls where a call is needed and not elsewhere, and its right answers
    # need the result
    assert s["interp.call_recall"] > 0.5 and s["interp.call_precision"] > 0.5, s
    assert s["tools.exact_match_withheld"] < s["tools.exact_match"], s
    # the long additions: each length factor times the trained number of digits
    assert set(r["lengths"]) == {f"{f}x" for f in r["length_factors"]}
    for f in r["length_factors"]:
        assert r["lengths"][f"{f}x"]["digits"] == f * r["addition_max_digits"]


@pytest.mark.slow
def test_the_gap(tmp_path, monkeypatch):
    needs("dense", "moe", "transcoder")
    r = execute("the_gap", tmp_path, monkeypatch)
    assert r["first_line"] == "# What interpretability costs, and what it buys"
    assert r["architectures"] == ["dense", "moe", "transcoder"]
    dense = r["mean_accuracy"]["dense"]
    for arch, acc in r["mean_accuracy"].items():
        assert r["gap_percent"][arch] == pytest.approx(100.0 * (acc - dense) / dense)
    # nothing trained: the capability is each checkpoint's metrics.json, printed in report.md
    for arch in r["architectures"]:
        assert (
            r["val_loss"][arch] == read_metrics(resolve_checkpoint(f"glassbox/{arch}"))["val_loss"]
        )
        assert r["val_loss_md"][arch] == f"{r['val_loss'][arch]:.3f}"
    assert all(0.0 <= c <= 1.0 for c in (*r["coverage"].values(), *r["coverage_init"].values()))
    assert 0.0 <= r["coverage_posthoc"] <= 1.0
    assert 0.0 < r["l0"] <= config("transcoder")["model"]["ffn"]["transcoder"]["k"]
    assert 0.0 < r["l0_posthoc"] <= r["posthoc_k"]
    assert -1.0 <= r["selectivity"] <= 1.0
    assert Path(r["pareto"]).stat().st_size > 0
    assert "| dense |" in Path(r["report_md"]).read_text()
    # the full report scores every shipped kind from its checkpoint, at its training seed
    kinds = {"dense", "moe", "moe_relu", "transcoder", "tool", "weight_sparse"}
    assert set(r["real_architectures"]) == kinds
    assert r["real_checkpoints"] == {a: f"glassbox/{a}" for a in r["real_architectures"]}
    assert r["real_seeds"] == [config("dense")["run"]["seed"]]


@pytest.mark.slow
def test_attribution_graphs(tmp_path, monkeypatch):
    needs("transcoder", "tool")
    r = execute("attribution_graphs", tmp_path, monkeypatch)
    assert set(r["graphs"]) == {
        f"{m}/{s}" for m in ("transcoder", "tool") for s in ("addition", "ioi")
    }
    for g in r["graphs"].values():
        # the completeness identity, stored and recomputed from the adjacency matrix
        assert g["completeness"]["logit_rel_error"] < 1e-4
        assert g["by_hand"] == pytest.approx(g["logit"], rel=1e-4)
        assert g["error_nodes"] == 0 and 0 <= g["nodes_80"] <= g["unit_nodes"]
    for key, s in r["stats"].items():
        assert s["completeness"] < 1e-4, key
        assert s["summary"]["interp.graph_error_share"] == 0.0, key  # by construction
        assert s["summary"]["interp.graph_top1_agreement"] == 1.0, key
    assert len(r["files"]) == 4
    written = tmp_path / "attribution_graphs" / "graphs"
    listing = json.loads((written / "graph-metadata.json").read_text())
    assert sorted(m["slug"] + ".json" for m in listing["graphs"]) == sorted(r["files"])
