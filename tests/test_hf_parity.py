"""The dense baseline is exactly HF transformers' LlamaForCausalLM: the same weights
give the same logits (1e-5, float32) in both directions, with left padding, in greedy
generation with a KV cache, and through an exported `from_pretrained` directory."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassbox.archs import FFNConfig, ModelConfig, Transformer, load_pretrained, save_pretrained  # noqa: E402
from glassbox.archs.export import ExportError, export_hf, from_hf_llama, to_hf_llama  # noqa: E402
from glassbox.archs.export.hf import name_map  # noqa: E402
from tests.parity import BACKBONES, greedy_equal, random_model, random_tokens  # noqa: E402

ATOL = 1e-5

CONFIGS = {
    "mha": ModelConfig(**BACKBONES["mha"], ffn=FFNConfig(d_ff=96)),
    "gqa_tied": ModelConfig(**BACKBONES["gqa_tied"], ffn=FFNConfig(d_ff=80)),
    # with MLP biases (Llama's mlp_bias)
    "mqa_bias": ModelConfig(**BACKBONES["mqa"], ffn=FFNConfig(d_ff=72, bias=True)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_to_hf_logits_equal(name):
    model = random_model(CONFIGS[name])
    hf = to_hf_llama(model)
    assert hf.config._attn_implementation == "sdpa"
    x = random_tokens(model.cfg)
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    assert ours.abs().max() > 0.1  # logits are not trivially small
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_hf_logits_equal(name):
    hf_config = to_hf_llama(random_model(CONFIGS[name])).config
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(hf_config)
    with torch.no_grad():  # HF initialises norms at 1 and biases at 0: randomise them
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    hf.eval()
    model = from_hf_llama(hf)
    assert model.cfg.kv_heads == hf_config.num_key_value_heads
    assert model.cfg.tie_embeddings == hf_config.tie_word_embeddings
    x = random_tokens(model.cfg, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_is_exact(name):
    model = random_model(CONFIGS[name])
    back = from_hf_llama(to_hf_llama(model))
    assert back.cfg.d_model == model.cfg.d_model
    assert back.cfg.ffn == model.cfg.ffn
    ours, again = model.state_dict(), back.state_dict()
    assert ours.keys() == again.keys()
    for k in ours:
        assert torch.equal(ours[k], again[k]), k
    # the name map covers every parameter of both models exactly once
    mapped = {a for a, _ in name_map(model.cfg)}
    assert mapped == {n for n, _ in model.named_parameters()}


def test_weights_are_copies_not_shared():
    model = random_model(CONFIGS["mha"])
    hf = to_hf_llama(model)
    with torch.no_grad():
        hf.model.embed_tokens.weight.zero_()
    assert model.W_E.weight.abs().sum() > 0


@pytest.mark.parametrize("name", ["mha", "gqa_tied"])
def test_left_padding_equal(name):
    model = random_model(CONFIGS[name])
    hf = to_hf_llama(model)
    lengths = [9, 4, 7]
    T = max(lengths)
    x = random_tokens(model.cfg, B=3, T=T, seed=5)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, : T - n] = 0
        mask[b, T - n :] = 1
        x[b, : T - n] = model.cfg.pad_token_id
    # HF's forward takes positions from its caller (its generate derives them from
    # the mask the same way); padded slots get position 0 in both.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(x, attention_mask=mask)
        theirs = hf(x, attention_mask=mask, position_ids=pos).logits
        real = mask.bool()
        torch.testing.assert_close(ours[real], theirs[real], atol=ATOL, rtol=0)
        # and each padded row equals the same sequence run alone
        for b, n in enumerate(lengths):
            alone = model(x[b : b + 1, T - n :])[0]
            torch.testing.assert_close(ours[b, T - n :], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["mha", "gqa_tied"])
def test_greedy_generation_equal(name):
    model = random_model(CONFIGS[name], seed=7)
    hf = to_hf_llama(model)
    g = torch.Generator().manual_seed(8)
    V = model.cfg.vocab_size
    prompts = [torch.randint(1, V, (n,), generator=g).tolist() for n in (6, 3, 5)]
    out = greedy_equal(model, hf, prompts, 12)
    assert out.tokens.shape == (3, 6 + 12)
    # the continuation is not one repeated token (a test that could not tell models apart)
    assert len({t for c in out.continuations for t in c}) > 3


def _tiny_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    special = ["<pad>", "<bos>", "<eos>", "<unk>"]
    words = special + [f"w{i}" for i in range(vocab_size - len(special))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_export_dir_loads_with_from_pretrained(tmp_path):
    model = random_model(CONFIGS["gqa_tied"])
    model.tokenizer = _tiny_tokenizer(model.cfg.vocab_size)
    out = export_hf(model, tmp_path / "hf")
    assert out == tmp_path / "hf"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (0, 1, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left

    hf = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    x = random_tokens(model.cfg, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=ATOL, rtol=0)

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "w3 w10 nope w0"
    assert hf_tok(text)["input_ids"] == model.tokenizer.encode(text).ids
    assert (hf_tok.pad_token, hf_tok.bos_token, hf_tok.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert hf_tok.padding_side == "left"


def test_export_from_checkpoint_path(tmp_path):
    model = random_model(CONFIGS["mqa_bias"])
    save_pretrained(model, tmp_path / "ckpt")
    out = export_hf(str(tmp_path / "ckpt"), tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(hf, transformers.LlamaForCausalLM)
    assert not (out / "tokenizer.json").exists()  # the checkpoint has none
    x = random_tokens(model.cfg, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(
            load_pretrained(tmp_path / "ckpt")(x), hf(x).logits, atol=ATOL, rtol=0
        )
    # re-export over an existing directory replaces it
    export_hf(model, out)
    assert (out / "config.json").is_file()


def _refuses(model, tmp_path, *fragments):
    with pytest.raises(ExportError) as e:
        export_hf(model, tmp_path / "hf")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("cannot export to hf:")
    for f in fragments:
        assert f in msg, msg
    assert not (tmp_path / "hf").exists()
    return msg


def test_export_refuses_non_dense(tmp_path):
    # The check reads the config alone, before any weight is touched.
    cfg = ModelConfig(vocab_size=32, n_layers=2, ffn_by_layer={"1": FFNConfig(kind="moe")})
    _refuses(SimpleNamespace(cfg=cfg), tmp_path, "model.ffn_by_layer.1.kind='moe'", "'dense'")
    cfg = ModelConfig(vocab_size=32, ffn=FFNConfig(kind="transcoder"))
    _refuses(SimpleNamespace(cfg=cfg), tmp_path, "model.ffn.kind='transcoder'")


def test_export_refuses_real_moe_model(tmp_path):
    # a softmax top-k MoE exports as a Mixtral (tests/test_mixtral_export.py); the
    # relu router has no HF form
    from glassbox.archs import MoEConfig

    ffn = FFNConfig(kind="moe", moe=MoEConfig(router="relu"))
    model = Transformer(ModelConfig(vocab_size=32, n_layers=2, ffn=ffn))
    _refuses(model, tmp_path, "model.ffn.moe.router='relu'")


def test_export_refuses_gelu_and_mixed_widths(tmp_path):
    gelu = Transformer(ModelConfig(vocab_size=32, ffn=FFNConfig(activation="gelu")))
    _refuses(gelu, tmp_path, "model.ffn.activation='gelu'", "swiglu")
    mixed = Transformer(ModelConfig(vocab_size=32, ffn_by_layer={"1": FFNConfig(d_ff=64)}))
    _refuses(mixed, tmp_path, "model.ffn_by_layer.1.d_ff=64", "intermediate_size")


def test_from_hf_refuses_attention_bias():
    hf_config = to_hf_llama(random_model(CONFIGS["mha"])).config
    hf_config.attention_bias = True
    hf = transformers.LlamaForCausalLM(hf_config)
    with pytest.raises(ExportError, match="attention_bias=True"):
        from_hf_llama(hf)
