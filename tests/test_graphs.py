"""Exact attribution graphs (analysis.graphs): the completeness identity on every kind
and every shipped checkpoint, a hand-built model whose answer flows through one known
latent, invariance to an inactive latent, post-hoc error nodes, pruning, circuit-
tracer's graph schema and viewer, and `glassbox trace`'s bad-input lines."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch

from glassbox.analysis.graphs import trace
from glassbox.analysis.graphs.export import write_graph
from glassbox.analysis.graphs.prune import graph_stats, prune
from glassbox.archs import FFNConfig, ModelConfig, TranscoderConfig, Transformer, load_pretrained
from glassbox.archs.config import MoEConfig
from glassbox.archs.transcoder import Transcoder
from glassbox.archs.weight_sparsity import WeightSparsityConfig
from glassbox.cli import main

SHIPPED = sorted(p.name for p in Path("checkpoints").iterdir() if (p / "config.yaml").is_file())
KINDS = {
    "dense_swiglu": dict(ffn=FFNConfig(kind="dense", activation="swiglu", d_ff=24)),
    "dense_gelu_bias": dict(ffn=FFNConfig(kind="dense", activation="gelu", d_ff=24, bias=True)),
    "transcoder_topk": dict(
        ffn=FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=32, k=4))
    ),
    "transcoder_topk_skip": dict(
        ffn=FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=32, k=4, skip=True))
    ),
    "transcoder_jumprelu_skip": dict(
        ffn=FFNConfig(
            kind="transcoder",
            transcoder=TranscoderConfig(d_latent=32, activation="jumprelu", skip=True),
        )
    ),
    "moe_softmax_shared": dict(
        ffn=FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=8, n_shared_experts=1))
    ),
    "moe_relu_shared": dict(
        ffn=FFNConfig(
            kind="moe",
            moe=MoEConfig(
                n_experts=4,
                k=2,
                d_expert=8,
                router="relu",
                expert_activation="relu",
                n_shared_experts=1,
                normalize_weights=False,
            ),
        )
    ),  # fmt: skip
    "gqa_residual_topk": dict(
        n_kv_heads=1,
        ffn=FFNConfig(kind="dense", d_ff=24),
        weight_sparsity=WeightSparsityConfig(residual_topk=12),
    ),
}


def random_model(seed: int = 0, **kw) -> Transformer:
    """A float64 two-layer model with every weight (skips and biases too) random."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=20, d_model=16, n_layers=2, n_heads=2, max_seq_len=16, **kw)
    model = Transformer(cfg).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "W_skip" in name or "bias" in name or name.endswith(("b_enc", "b_dec")):
                p.normal_(std=0.1)
            if name.endswith(".w"):  # norm gains away from 1
                p.uniform_(0.5, 1.5)
    return model


PROMPT = [1, 5, 7, 3, 9, 2, 11]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_completeness_on_random_models_of_every_kind(kind):
    model = random_model(**KINDS[kind])
    g = trace(model, PROMPT, alternative=int(model(torch.tensor([PROMPT]))[0, -1].argmin()))
    assert g.completeness["logit_rel_error"] < 1e-5
    assert g.completeness["units_rel_error"] < 1e-5
    recon = g.logit_row.sum() + g.constant[-1] + g.rest[-1]
    assert recon.item() == pytest.approx(g.value[-1].item(), rel=1e-5)
    assert g.n_units == g.meta["active_units"] > 0
    # the kinds whose units are not linear in their input say what was frozen
    assert bool(g.meta["linearised"]) == (not kind.startswith("transcoder"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_linearised_ffn_reproduces_its_output(kind):
    model = random_model(**KINDS[kind])
    names = ["blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"]
    mlp = model.blocks[1].mlp
    names += [f"blocks.1.mlp.{h}" for h in mlp.hooks_to_read()]
    _, cache = model.run_with_cache(torch.tensor([PROMPT]), names_filter=names)
    x = cache["blocks.1.hook_mlp_in"][0]
    lin = mlp.linearise(x, {h: cache[f"blocks.1.mlp.{h}"][0] for h in mlp.hooks_to_read()})
    torch.testing.assert_close(lin.output(x), cache["blocks.1.hook_mlp_out"][0])
    acts = (x[lin.token] * lin.read).sum(-1) + lin.read_bias
    torch.testing.assert_close(acts, lin.act)


@pytest.mark.parametrize("name", SHIPPED)
def test_completeness_on_every_shipped_checkpoint(name):
    model = load_pretrained(f"glassbox/{name}").eval()
    g = trace(model, "3 4 + 5 8 =")
    assert g.completeness["logit_rel_error"] < 1e-4
    assert g.completeness["units_rel_error"] < 1e-4
    stats = graph_stats(g)
    assert stats["error_share"] == 0.0 and stats["agreement"] == 1.0
    assert 0 < stats["nodes_80"] <= stats["nodes_90"] <= g.n_units


def hand_built() -> Transformer:
    """One layer, attention silenced, a transcoder whose latent 2 fires on token 1 (its
    embedding e0, read x 5) and writes e1, the unembedding row of token 3."""
    ffn = FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=4, k=1))
    cfg = ModelConfig(vocab_size=5, d_model=4, n_layers=1, n_heads=1, max_seq_len=8, ffn=ffn)
    model = Transformer(cfg).double().eval()
    eye = torch.eye(4, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.blocks[0].ln1, model.blocks[0].ln2, model.ln_final):
            ln.w.fill_(1.0)
        model.W_E.weight[1] = eye[0]
        model.W_E.weight[2] = eye[2]
        mlp = model.blocks[0].mlp
        mlp.W_enc[:, 2] = 5 * eye[0]
        mlp.W_dec[2] = eye[1]
        model.W_U.weight[3] = eye[1]
    return model


def test_hand_built_answer_flows_through_its_one_latent():
    model = hand_built()
    g = trace(model, [2, 1])
    assert g.target.id == 3
    assert (g.layers.tolist(), g.positions.tolist(), g.units.tolist()) == ([0], [1], [2])
    A = g.adjacency
    latent, emb1, logit = 0, 2, 3  # node 1: the embedding of position 0
    act = g.activations[0]
    # 5 x e0 normalised: rms 1/2, eps 1e-5 (the norm runs in float32)
    assert act.item() == pytest.approx(5 * (0.25 + 1e-5) ** -0.5, rel=1e-6)
    assert A[logit, latent].item() == pytest.approx(g.value[-1].item(), rel=1e-6)
    assert A[latent, emb1].item() == pytest.approx(act.item(), rel=1e-6)
    expected = torch.zeros_like(A)
    expected[logit, latent], expected[latent, emb1] = A[logit, latent], A[latent, emb1]
    assert torch.equal(A, expected)  # nothing else: no edge from emb0, none emb -> logit
    p = prune(g, 0.8, 0.8)
    assert p.edges.nonzero().tolist() == [[latent, emb1], [logit, latent]]


def test_graph_is_invariant_to_an_inactive_latent():
    model = random_model(ffn=KINDS["transcoder_jumprelu_skip"]["ffn"])
    cfg = model.cfg
    wide_tc = TranscoderConfig(d_latent=33, activation="jumprelu", skip=True)
    wide = Transformer(
        ModelConfig(**{**cfg.__dict__, "ffn": FFNConfig(kind="transcoder", transcoder=wide_tc)})
    )
    wide = wide.double().eval()
    state = model.state_dict()
    with torch.no_grad():
        for name, p in wide.state_dict().items():
            old = state[name]
            if p.shape == old.shape:
                p.copy_(old)
                continue
            p.zero_()
            p[tuple(slice(0, s) for s in old.shape)] = old
            if name.endswith("log_threshold"):
                p[-1] = 10.0  # threshold e^10: never fires
            if name.endswith("W_dec"):
                p[-1] = torch.randn(cfg.d_model, dtype=p.dtype)
    a, b = trace(model, PROMPT), trace(wide, PROMPT)
    assert torch.equal(a.units, b.units) and torch.equal(a.positions, b.positions)
    torch.testing.assert_close(a.adjacency, b.adjacency, rtol=1e-10, atol=1e-12)


def test_posthoc_replacement_has_error_nodes_and_stays_complete():
    model = random_model(ffn=KINDS["dense_swiglu"]["ffn"])
    torch.manual_seed(1)
    tc = Transcoder(16, TranscoderConfig(d_latent=32, k=4)).double().eval()
    g = trace(model, PROMPT, replacements={0: tc})
    assert g.error_layers == [0] and g.n_errors == len(PROMPT)
    assert g.completeness["logit_rel_error"] < 1e-5  # the errors complete the sum
    assert g.completeness["units_rel_error"] < 1e-5
    stats = graph_stats(g)
    assert 0 < stats["error_share"] < 1 and 0 < stats["error_influence"] < 1
    assert stats["agreement"] in (0.0, 1.0)
    assert g.meta["unit_groups"][0][0][0] == "latent"  # layer 0 is read as the transcoder


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("graphs")
    model = load_pretrained("glassbox/transcoder").eval()
    g = trace(model, "3 4 + 5 8 =")
    path = write_graph(g, out, "tc", features_dir=Path("checkpoints/transcoder/features"))
    return out, path, g


def test_graph_file_validates_with_circuit_tracer_schema(written):
    schema = pytest.importorskip(
        "circuit_tracer.frontend.graph_models",
        reason="circuit-tracer is a peer (pip install --no-deps circuit-tracer==0.5.0)",
    )
    out, path, g = written
    data = json.loads(path.read_text())
    parsed = schema.Model(**data)
    ids = {n.node_id for n in parsed.nodes}
    assert all(link["source"] in ids and link["target"] in ids for link in parsed.links)
    assert sum(n.is_target_logit for n in parsed.nodes) == 1
    assert data["metadata"]["glassbox"]["completeness"]["logit_rel_error"] < 1e-4
    units = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert units and all("features/layer" in n["url"] for n in units)  # dashboards linked
    listing = json.loads((out / "graph-metadata.json").read_text())
    assert [m["slug"] for m in listing["graphs"]] == ["tc"]


def test_circuit_tracer_viewer_serves_the_graph(written):
    server = pytest.importorskip(
        "circuit_tracer.frontend.local_server",
        reason="circuit-tracer is a peer (pip install --no-deps circuit-tracer==0.5.0)",
    )
    out, path, _ = written
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    srv = server.serve(str(out), port=port)
    try:
        url = f"http://localhost:{port}/graph_data/tc.json"
        served = json.loads(urllib.request.urlopen(url, timeout=10).read())
        meta = json.loads(
            urllib.request.urlopen(
                f"http://localhost:{port}/data/graph-metadata.json", timeout=10
            ).read()
        )
    finally:
        srv.stop()
    assert served == json.loads(path.read_text())
    assert meta["graphs"][0]["slug"] == "tc"


@pytest.mark.parametrize(
    "args, says",
    [
        (["glassbox/nope", "3 4 ="], "glassbox/nope"),
        (["glassbox/transcoder", "3 4 =", "--target", "zzz"], "target='zzz'"),
        (["glassbox/transcoder", " ".join(["3"] * 300)], "longer than the model's context"),
        (["glassbox/transcoder", "3 4 qqq ="], "not in the vocabulary: qqq"),
    ],
)
def test_trace_bad_input_is_one_line(args, says, capsys, tmp_path):
    assert main(["trace", *args, "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err


def test_trace_command_writes_a_complete_graph(tmp_path, capsys):
    assert (
        main(["trace", "glassbox/transcoder", "3 4 + 5 8 =", "--out", str(tmp_path), "--slug", "g"])
        == 0
    )
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["metadata"]["glassbox"]["completeness"]["logit_rel_error"] < 1e-4
    assert "completeness error" in capsys.readouterr().out
