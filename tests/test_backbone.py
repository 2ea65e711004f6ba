"""The backbone: causality, hook points, caching, patching, KV-cache generation,
checkpoint round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glassbox import archs
from glassbox.archs import ModelConfig, Transformer
from glassbox.archs.config import ConfigError, FFNConfig, MoEConfig, validate_model_config

DOCUMENTED_HOOKS = [
    "hook_embed",
    "blocks.{i}.hook_resid_pre",
    "blocks.{i}.attn.hook_pattern",
    "blocks.{i}.hook_attn_out",
    "blocks.{i}.hook_mlp_in",
    "blocks.{i}.hook_mlp_out",
    "blocks.{i}.hook_resid_post",
    "ln_final.hook_normalized",
]


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    cfg.update(kw)
    return Transformer(ModelConfig(**cfg)).eval()


@pytest.fixture(params=["mha", "gqa", "gelu_tied"])
def model(request) -> Transformer:
    if request.param == "gqa":
        return tiny(n_kv_heads=2)
    if request.param == "gelu_tied":
        return tiny(tie_embeddings=True, ffn=FFNConfig(activation="gelu", d_ff=48))
    return tiny()


def test_causality(model):
    x = torch.randint(0, 61, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 61  # change a future token
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-4


def test_documented_hook_names_present(model):
    for i in range(model.cfg.n_layers):
        for name in DOCUMENTED_HOOKS:
            assert name.format(i=i) in model.hook_names
    _, cache = model.run_with_cache(torch.randint(0, 61, (1, 5)))
    assert set(cache) == set(model.hook_names)


def test_cache_equals_recomputation(model):
    x = torch.randint(0, 61, (2, 10))
    logits, cache = model.run_with_cache(x)
    torch.testing.assert_close(logits, model(x))
    # recompute the residual stream by hand from the weights
    h = model.W_E(x)
    torch.testing.assert_close(cache["hook_embed"], h)
    for i, block in enumerate(model.blocks):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_pre"], h, rtol=1e-5, atol=1e-5)
        normed = F.rms_norm(h, (h.shape[-1],), eps=model.cfg.norm_eps) * block.ln1.w
        attn = _reference_attention(block.attn, normed, model)
        torch.testing.assert_close(cache[f"blocks.{i}.hook_attn_out"], attn, rtol=1e-5, atol=1e-5)
        h = h + attn
        mlp_in = F.rms_norm(h, (h.shape[-1],), eps=model.cfg.norm_eps) * block.ln2.w
        torch.testing.assert_close(cache[f"blocks.{i}.hook_mlp_in"], mlp_in, rtol=1e-5, atol=1e-5)
        h = h + block.mlp(mlp_in)
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_post"], h, rtol=1e-5, atol=1e-5)
    # the pattern is causal and rows sum to one
    pattern = cache["pattern", 0]
    assert pattern.shape == (2, 4, 10, 10)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 10))
    assert pattern.triu(1).abs().max() == 0
    torch.testing.assert_close(cache["resid_post", 1], cache["blocks.1.hook_resid_post"])


def _reference_attention(attn, x, model):
    """Plain softmax attention with rotary written out with complex numbers
    (the interleaved-free half-split convention), independent of the module's code."""
    B, T, _ = x.shape
    H, G, D = attn.n_heads, attn.n_kv, attn.d_head
    q = attn.W_Q(x).view(B, T, H, D)
    k = attn.W_K(x).view(B, T, G, D)
    v = attn.W_V(x).view(B, T, G, D)
    inv = 1.0 / (model.cfg.rope_theta ** (torch.arange(0, D, 2).float() / D))
    ang = torch.outer(torch.arange(T).float(), inv)  # (T, D/2)
    rot = torch.polar(torch.ones_like(ang), ang)[None, :, None]

    def rope(t):
        c = torch.complex(t[..., : D // 2], t[..., D // 2 :]) * rot
        return torch.cat([c.real, c.imag], dim=-1)

    q, k = rope(q), rope(k)
    k = k.repeat_interleave(H // G, dim=2)
    v = v.repeat_interleave(H // G, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
    return attn.W_O(z.reshape(B, T, H * D))


def test_names_filter_caches_only_what_is_asked(model):
    _, cache = model.run_with_cache(
        torch.randint(0, 61, (1, 5)), names_filter="blocks.*.hook_resid_post"
    )
    assert sorted(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    _, cache = model.run_with_cache(
        torch.randint(0, 61, (1, 5)), names_filter=lambda n: n == "hook_embed"
    )
    assert list(cache) == ["hook_embed"]
    with pytest.raises(KeyError, match="no hook point"):
        with model.hooks([("blocks.9.hook_nothing", lambda a, h: None)]):
            pass


def test_hooks_removed_after_exception(model):
    calls = []

    def record(act, hook):
        calls.append(hook.name)

    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([("blocks.0.hook_resid_post", record), ("hook_embed", record)]):
            model(torch.randint(0, 61, (1, 4)))
            raise RuntimeError("boom")
    assert calls == ["hook_embed", "blocks.0.hook_resid_post"]
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
    model(torch.randint(0, 61, (1, 4)))
    assert len(calls) == 2

    def failing(act, hook):
        raise ValueError("hook failed")

    with pytest.raises(ValueError, match="hook failed"):
        model.run_with_hooks(torch.randint(0, 61, (1, 4)), fwd_hooks=[("hook_embed", failing)])
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())


def test_patching_hook_changes_output_as_predicted(model):
    clean = torch.randint(0, 61, (1, 9))
    corrupt = clean.clone()
    corrupt[0, 2] = (corrupt[0, 2] + 5) % 61
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=last)
    corrupt_logits = model(corrupt)

    # Patching the final residual stream at position 6 from the clean run makes the
    # corrupted run's logits at 6 equal the clean ones and leaves the others alone.
    def patch(act, hook):
        act = act.clone()
        act[:, 6] = clean_cache[hook.name][:, 6]
        return act

    patched = model.run_with_hooks(corrupt, fwd_hooks=[(last, patch)])
    torch.testing.assert_close(patched[:, 6], clean_logits[:, 6])
    torch.testing.assert_close(patched[:, :6], corrupt_logits[:, :6])
    torch.testing.assert_close(patched[:, 7:], corrupt_logits[:, 7:])

    # Zero-ablating every attention output makes each position see only itself: the
    # logits no longer depend on other tokens.
    ablate = [("blocks.*.hook_attn_out", lambda a, h: torch.zeros_like(a))]
    a = model.run_with_hooks(clean, fwd_hooks=ablate)
    b = model.run_with_hooks(corrupt, fwd_hooks=ablate)
    keep = [i for i in range(9) if i != 2]
    torch.testing.assert_close(a[:, keep], b[:, keep])


def test_pattern_hook_path_equals_fused_attention(model):
    x = torch.randint(0, 61, (2, 11))
    logits, _ = model.run_with_cache(x, names_filter="blocks.*.attn.hook_pattern")
    torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-5)


def test_kv_cache_generation_equals_full_recomputation(model):
    prompts = [[3, 4, 5], [7, 8, 9, 10, 11, 12], [1]]
    out = model.generate(prompts, max_new_tokens=6)
    for p, cont in zip(prompts, out.continuations):
        seq = list(p)
        for _ in range(6):  # greedy, recomputing the whole sequence every step
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert cont == seq[len(p) :]


def test_generate_stop_tokens_and_sampling(model):
    prompt = [[3, 4, 5]]
    greedy = model.generate(prompt, max_new_tokens=8).continuations[0]
    stop = greedy[2]
    out = model.generate(prompt, max_new_tokens=8, stop_tokens=[stop])
    assert out.continuations[0] == greedy[: greedy.index(stop) + 1]
    assert out.finished == [True]
    a = model.generate(prompt, max_new_tokens=8, temperature=1.0, top_k=5, seed=1).continuations
    b = model.generate(prompt, max_new_tokens=8, temperature=1.0, top_k=5, seed=1).continuations
    assert a == b
    # top_k=1 sampling is greedy
    assert (
        model.generate(prompt, max_new_tokens=8, temperature=1.0, top_k=1, seed=3).continuations[0]
        == greedy
    )
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(prompt, max_new_tokens=100)


def test_save_load_round_trip(model, tmp_path):
    x = torch.randint(0, 61, (2, 8))
    path = archs.save_pretrained(model, tmp_path / "ckpt", metrics={"val_loss": 1.5})
    for f in ("config.yaml", "model.safetensors", "metrics.json", "README.md"):
        assert (path / f).is_file()
    loaded = archs.load_pretrained(path)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.cfg == model.cfg
    if model.cfg.tie_embeddings:
        assert loaded.W_U.weight is loaded.W_E.weight


def test_atomic_save_keeps_old_checkpoint_on_crash(tmp_path, monkeypatch):
    model = tiny()
    path = archs.save_pretrained(model, tmp_path / "ckpt")
    before = (path / "model.safetensors").read_bytes()
    other = tiny(d_model=64)

    import glassbox.archs.checkpoint as ck

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_model_card", crash)  # fails after the weights were written
    with pytest.raises(OSError, match="disk full"):
        archs.save_pretrained(other, path)
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left behind
    assert archs.load_pretrained(path).cfg.d_model == 32


def test_hub_id_loads_from_local_hub_cache(tmp_path, monkeypatch):
    """The hub path goes through huggingface_hub; offline, it resolves the local cache."""
    model = tiny()
    repo = tmp_path / "hub" / "models--someone--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    archs.save_pretrained(model, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = archs.load_pretrained("someone/tiny")  # glassbox/<name> means a shipped one
    x = torch.randint(0, 61, (1, 6))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        archs.load_pretrained(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(d_model=30, n_heads=4), "model.d_model"),
        (dict(n_kv_heads=3), "model.n_kv_heads"),
        (dict(ffn=FFNConfig(kind="conv")), "model.ffn.kind"),
        (dict(ffn=FFNConfig(activation="tanh")), "model.ffn.activation"),
        (dict(n_layers=0), "model.n_layers"),
    ],
)
def test_model_config_errors_name_the_key(kw, key):
    cfg = ModelConfig(vocab_size=10, **kw)
    with pytest.raises(ConfigError) as e:
        validate_model_config(cfg)
    assert e.value.key == key
    assert "\n" not in str(e.value) and key in str(e.value)


def test_moe_k_larger_than_experts_is_a_config_error():
    cfg = ModelConfig(vocab_size=10, ffn=FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=6)))
    with pytest.raises(
        ConfigError, match=r"model.ffn.moe.k=6: must be between 1 and moe.n_experts=4"
    ):
        validate_model_config(cfg)
