"""The softmax top-k MoE is HF transformers' MixtralForCausalLM: the same weights give
logits within 1e-4 in float32 and the same greedy generation (left-padded, KV cache),
on random models whose every parameter is random and on a trained checkpoint exported
through `glassbox export --to hf`; the MoE configs Mixtral cannot hold are refused in
one line naming the key."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, load_pretrained  # noqa: E402
from glassbox.archs.export import ExportError, export_hf, hf_mixtral_config, to_hf  # noqa: E402
from glassbox.archs.export.mixtral import name_map, to_hf_mixtral  # noqa: E402
from glassbox.cli import main  # noqa: E402
from tests.parity import BACKBONES, greedy_equal, random_model, random_tokens  # noqa: E402
from tests.tiny_checkpoints import tiny_checkpoint  # noqa: E402

ATOL = 1e-4  # float32 logits, ours vs Mixtral's (measured below 1e-5 on these models)


def moe_cfg(**moe) -> FFNConfig:
    return FFNConfig(kind="moe", moe=MoEConfig(**{"n_experts": 6, "k": 2, "d_expert": 24, **moe}))


CONFIGS = {
    # 6 experts top-2
    "mha": ModelConfig(**BACKBONES["mha"], ffn=moe_cfg()),
    # top-1 (the weight renormalises to 1)
    "gqa_tied_top1": ModelConfig(
        **BACKBONES["gqa_tied"], ffn=moe_cfg(n_experts=4, k=1, d_expert=16)
    ),
    # every expert on every token (k = n_experts)
    "dense_routing": ModelConfig(**BACKBONES["mqa"], ffn=moe_cfg(n_experts=3, k=3, d_expert=8)),
}
ROUTER_SCALE = 10.0  # router logits spread widely: top-k choices far from ties


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal(name):
    model = random_model(CONFIGS[name], router_scale=ROUTER_SCALE)
    hf = to_hf(model)
    assert isinstance(hf, transformers.MixtralForCausalLM)
    x = random_tokens(model.cfg)
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)


def test_config_fields():
    model = random_model(CONFIGS["gqa_tied_top1"], router_scale=ROUTER_SCALE)
    c = hf_mixtral_config(model)
    assert c.model_type == "mixtral"
    assert (c.num_local_experts, c.num_experts_per_tok, c.intermediate_size) == (4, 1, 16)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (8, 2, 8)
    assert c.router_jitter_noise == 0.0 and c.output_router_logits is False
    assert c.sliding_window is None and c.hidden_act == "silu" and c.tie_word_embeddings


def test_every_weight_is_mapped_and_copied():
    cfg = CONFIGS["mha"]
    model = random_model(cfg, router_scale=ROUTER_SCALE)
    experts = {f"blocks.{i}.mlp.{w}.weight" for i in range(2) for w in ("W_gate", "W_in", "W_out")}
    mapped = {a for a, _ in name_map(cfg)} | experts
    assert mapped == {n for n, _ in model.named_parameters()}
    hf = to_hf_mixtral(model)
    assert {b for _, b in name_map(cfg)} | {
        f"model.layers.{i}.mlp.experts.{w}" for i in range(2) for w in ("gate_up_proj", "down_proj")
    } == set(hf.state_dict())
    with torch.no_grad():  # copies, not views of our weights
        hf.model.layers[0].mlp.experts.down_proj.zero_()
    assert model.blocks[0].mlp.W_out.weight.abs().sum() > 0


def test_greedy_generation_equal_random():
    model = random_model(CONFIGS["mha"], seed=7, router_scale=ROUTER_SCALE)
    hf = to_hf(model)
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(1, 101, (n,), generator=g).tolist() for n in (6, 3, 5)]
    out = greedy_equal(model, hf, prompts, 12)
    assert len({t for c in out.continuations for t in c}) > 3


@pytest.fixture(scope="module")
def trained_moe(tmp_path_factory):
    """A tiny trained moe checkpoint (configs/moe.yaml: softmax top-k, SwiGLU,
    normalised weights, no shared experts) exported through the command line."""
    ckpt = tiny_checkpoint("moe")
    out = tmp_path_factory.mktemp("mixtral") / "hf"
    assert main(["export", str(ckpt), "--to", "hf", str(out)]) == 0
    return ckpt, out


def test_trained_checkpoint_exports_as_mixtral(trained_moe):
    ckpt, out = trained_moe
    assert json.loads((out / "config.json").read_text())["model_type"] == "mixtral"
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(hf, transformers.MixtralForCausalLM)
    model = load_pretrained(ckpt)
    tok = model.tokenizer
    text = ["<bos> copy 3 4 5 = 3 4 5 <eos>", "<bos> copy 9 1 = 9 1 <eos>"]
    ids = [tok.encode(t).ids for t in text]
    assert all(tok.token_to_id("<unk>") not in row for row in ids)
    x = torch.tensor([row + [0] * (12 - len(row)) for row in ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=ATOL, rtol=0)
    # the tokenizer came along
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok("copy 3 4")["input_ids"] == tok.encode("copy 3 4").ids


def test_trained_checkpoint_greedy_generation_equal(trained_moe):
    ckpt, out = trained_moe
    model = load_pretrained(ckpt)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = model.tokenizer
    prompts = [
        tok.encode(p).ids for p in ("<bos> copy 3 4 5 =", "<bos> copy 7 =", "<bos> copy 1 2 =")
    ]
    greedy_equal(model, hf, prompts, 8)


def _cfg(**moe):
    return ModelConfig(vocab_size=32, n_layers=2, ffn=moe_cfg(**moe))


REFUSED = [
    (_cfg(router="relu"), "model.ffn.moe.router='relu'"),
    (_cfg(expert_activation="gelu"), "model.ffn.moe.expert_activation='gelu'"),
    (_cfg(n_shared_experts=1), "model.ffn.moe.n_shared_experts=1"),
    (_cfg(normalize_weights=False), "model.ffn.moe.normalize_weights=False"),
    (
        dataclasses.replace(_cfg(), ffn_by_layer={"1": FFNConfig(kind="dense")}),
        "model.ffn_by_layer.1.kind='dense'",
    ),
    (
        dataclasses.replace(_cfg(), ffn_by_layer={"1": moe_cfg(n_experts=8)}),
        "model.ffn_by_layer.1.moe.n_experts=8",
    ),
    (ModelConfig(vocab_size=32, ffn=FFNConfig(kind="transcoder")), "model.ffn.kind='transcoder'"),
]


@pytest.mark.parametrize("cfg, fragment", REFUSED, ids=[f for _, f in REFUSED])
def test_refuses_what_mixtral_cannot_hold(tmp_path, cfg, fragment):
    with pytest.raises(ExportError) as e:
        export_hf(SimpleNamespace(cfg=cfg), tmp_path / "hf")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("cannot export to hf:") and fragment in msg, msg
    assert not (tmp_path / "hf").exists()


def test_refuses_residual_topk(tmp_path):
    cfg = _cfg()
    cfg = dataclasses.replace(
        cfg, weight_sparsity=dataclasses.replace(cfg.weight_sparsity, residual_topk=8)
    )
    with pytest.raises(ExportError, match="model.weight_sparsity.residual_topk=8"):
        export_hf(SimpleNamespace(cfg=cfg), tmp_path / "hf")


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from glassbox.archs import save_pretrained

    relu = random_model(
        dataclasses.replace(CONFIGS["mha"], ffn=moe_cfg(router="relu")), router_scale=ROUTER_SCALE
    )
    save_pretrained(relu, tmp_path / "relu")
    assert main(["export", str(tmp_path / "relu"), "--to", "hf", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.ffn.moe.router='relu'" in err
    assert err.startswith("glassbox export: cannot export to hf:")
    assert not (tmp_path / "x").exists()
