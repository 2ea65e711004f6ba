"""Export to TransformerLens: the bridge's logits equal ours (1e-4), and every hook
point of ours carries the same activation as its TL name in TL_HOOK_NAMES; on a
trained checkpoint (and every shipped dense one) booted from its export directory,
logits, hook_resid_pre, hook_mlp_out and attention patterns equal ours."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("transformer_lens.model_bridge.sources")

from glassbox.archs import FFNConfig, ModelConfig, Transformer  # noqa: E402
from glassbox.archs.export import TL_HOOK_NAMES, ExportError, tl_hook_name, to_transformer_lens  # noqa: E402
from tests.parity import BACKBONES, random_model, random_tokens  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def gqa_pair():
    model = random_model(ModelConfig(**BACKBONES["gqa_tied"], ffn=FFNConfig(d_ff=96)))
    return model, to_transformer_lens(model)


def test_logits_equal_gqa(gqa_pair):
    model, bridge = gqa_pair
    x = random_tokens(model.cfg, B=2, T=11, seed=1)
    with torch.no_grad():
        ours, theirs = model(x), bridge(x)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)


def test_logits_equal_mha_tied():
    model = random_model(ModelConfig(**BACKBONES["mha"], tie_embeddings=True), seed=2)
    bridge = to_transformer_lens(model)
    x = random_tokens(model.cfg, B=3, T=9, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(bridge(x), model(x), atol=ATOL, rtol=0)


def test_every_hook_maps_onto_tl(gqa_pair):
    model, bridge = gqa_pair
    x = random_tokens(model.cfg, B=2, T=11, seed=4)
    with torch.no_grad():
        _, ours = model.run_with_cache(x)
        _, theirs = bridge.run_with_cache(x)
    assert set(ours) == set(model.hook_names)
    for name in model.hook_names:
        tl = tl_hook_name(name)
        assert tl in theirs, f"{name} -> {tl} is not a TL hook"
        torch.testing.assert_close(theirs[tl], ours[name], atol=ATOL, rtol=0, msg=name)
    # the documented subtlety: our hook_mlp_in is the norm's output (weight applied),
    # which is not TL's ln2.hook_normalized (before the weight) nor its hook_mlp_in
    assert tl_hook_name("blocks.1.hook_mlp_in") == "blocks.1.ln2.hook_out"
    assert not torch.allclose(theirs["blocks.1.ln2.hook_normalized"], ours["blocks.1.hook_mlp_in"])


def test_hook_name_table():
    assert tl_hook_name("ln_final.hook_normalized") == "ln_final.hook_out"
    assert tl_hook_name("blocks.12.attn.hook_pattern") == "blocks.12.attn.hook_pattern"
    assert all("{i}" in k for k in TL_HOOK_NAMES if k.startswith("blocks"))
    with pytest.raises(KeyError, match="no TransformerLens counterpart"):
        tl_hook_name("blocks.0.mlp.hook_latents")


def test_patching_through_tl_name_changes_the_same_way(gqa_pair):
    """Zero-ablating a hook by our name and by its TL name gives equal logits."""
    model, bridge = gqa_pair
    x = random_tokens(model.cfg, B=1, T=8, seed=5)

    def zero(act, hook):
        return torch.zeros_like(act)

    with torch.no_grad():
        ours = model.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_mlp_out", zero)])
        theirs = bridge.run_with_hooks(x, fwd_hooks=[(tl_hook_name("blocks.0.hook_mlp_out"), zero)])
        clean = model(x)
    assert not torch.allclose(ours, clean, atol=1e-3)
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)


def _word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(vocab_size - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_tokenizer_comes_along():
    tok = _word_tokenizer(32)
    model = random_model(ModelConfig(vocab_size=32, n_layers=1))
    model.tokenizer = tok
    bridge = to_transformer_lens(model)
    ids = bridge.to_tokens("w5 w7", prepend_bos=False)[0].tolist()
    assert ids == tok.encode("w5 w7").ids
    assert bridge.tokenizer.eos_token == "<eos>"


def test_refuses_non_dense():
    gelu = Transformer(ModelConfig(vocab_size=32, ffn=FFNConfig(activation="gelu")))
    with pytest.raises(
        ExportError, match="^cannot export to transformer-lens: model.ffn.activation"
    ):
        to_transformer_lens(gelu)


def test_exported_dir_boots_in_tl(tmp_path, monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge

    from glassbox.archs import save_pretrained
    from glassbox.archs.export import export_transformer_lens

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the directory must be enough
    model = random_model(ModelConfig(vocab_size=40, n_layers=2, n_kv_heads=2))
    model.tokenizer = _word_tokenizer(40)
    save_pretrained(model, tmp_path / "ckpt")
    out = export_transformer_lens(str(tmp_path / "ckpt"), tmp_path / "tl")
    bridge = TransformerBridge.boot_transformers(str(out), device="cpu")
    x = random_tokens(model.cfg, B=2, T=7, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(bridge(x), model(x), atol=ATOL, rtol=0)
    assert bridge.to_tokens("w1 w2")[0].tolist() == [1, 5, 6]  # TL prepends <bos>


# ------------------------------------------------- on trained (and shipped) checkpoints

# a trained checkpoint booted in TL from its export directory: logits within ATOL, the
# cached residual stream, MLP outputs and attention patterns within float32 rounding of
# their own size, TRAINED_ACT_RTOL x their largest magnitude (at least 1e-5). Measured:
# tiny trained checkpoint logits 1e-6, activations 1.2e-7; shipped dense, tool and
# weight_sparse logits <= 1.7e-5, MLP outputs <= 1.5e-5 at magnitudes ~23-32 (7e-7 of it)
TRAINED_ACT_RTOL = 2e-6


def assert_tl_parity_on_checkpoint(checkpoint, tmp_path) -> None:
    """Export `checkpoint` (a directory or a shipped name) for TL, boot it offline with
    TransformerBridge.boot_transformers, and compare with our model on sentences of
    the checkpoint's own vocabulary."""
    from transformer_lens.model_bridge import TransformerBridge

    from glassbox.archs import load_pretrained
    from glassbox.archs.export import export_transformer_lens

    model = load_pretrained(checkpoint)
    out = export_transformer_lens(checkpoint, tmp_path / "tl")
    bridge = TransformerBridge.boot_transformers(str(out), device="cpu")
    tok = model.tokenizer
    vocab = sorted(tok.get_vocab(), key=tok.token_to_id)
    words = [w for w in vocab if not w.startswith("<")]
    g = torch.Generator().manual_seed(0)
    rows = [
        [tok.token_to_id("<bos>")] + [tok.token_to_id(words[int(i)]) for i in torch.randint(0, len(words), (15,), generator=g)]
        for _ in range(3)
    ]  # fmt: skip
    x = torch.tensor(rows)
    L = model.cfg.n_layers
    names = [f"blocks.{i}.{h}" for i in range(L) for h in ("hook_resid_pre", "hook_mlp_out", "attn.hook_pattern")]  # fmt: skip
    with torch.no_grad():
        ours_logits, ours = model.run_with_cache(x, names_filter=names)
        theirs_logits, theirs = bridge.run_with_cache(
            x, names_filter=[tl_hook_name(n) for n in names]
        )
    assert ours_logits.abs().max() > 1.0  # a trained model's logits, not near zero
    torch.testing.assert_close(theirs_logits, ours_logits, atol=ATOL, rtol=0)
    for name in names:
        scale = max(1.0, float(ours[name].abs().max()))
        atol = max(1e-5, TRAINED_ACT_RTOL * scale)
        torch.testing.assert_close(
            theirs[tl_hook_name(name)], ours[name], atol=atol, rtol=0, msg=name
        )
    # the patterns compared are causal softmaxes (rows sum to 1, nothing after the query)
    for i in range(L):
        pattern = ours[f"blocks.{i}.attn.hook_pattern"]  # (B, H, T, S)
        torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
        assert pattern.triu(1).abs().max() == 0


def test_trained_dense_checkpoint_in_tl(tmp_path, monkeypatch):
    from tests.tiny_checkpoints import tiny_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_tl_parity_on_checkpoint(tiny_checkpoint("dense"), tmp_path)


def _shipped_dense() -> list[str]:
    from glassbox.archs import shipped_checkpoints
    from glassbox.archs.checkpoint import read_config, shipped_dir

    out = []
    for name in shipped_checkpoints():
        model = read_config(shipped_dir() / name)["model"]
        ffn = model.get("ffn", {})
        topk = (model.get("weight_sparsity") or {}).get("residual_topk", 0)
        if ffn.get("kind") == "dense" and ffn.get("activation", "swiglu") == "swiglu" and not topk:
            if not model.get("ffn_by_layer"):
                out.append(name)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped_dense())
def test_shipped_dense_checkpoint_in_tl(name, tmp_path, monkeypatch):
    """Every shipped dense SwiGLU checkpoint (none until they are trained)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_tl_parity_on_checkpoint(f"glassbox/{name}", tmp_path)
