"""The transcoder FFN (archs/transcoder.py): activations, gradients, training state,
hooks, checkpoints, and a model built with it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glassbox.archs import (
    ConfigError,
    FFNConfig,
    ModelConfig,
    TranscoderConfig,
    Transformer,
    load_pretrained,
    save_pretrained,
)
from glassbox.archs.transcoder import Transcoder


def tc(d_model=16, **kw) -> Transcoder:
    torch.manual_seed(0)
    return Transcoder(d_model, TranscoderConfig(**{"d_latent": 64, "k": 4, **kw}))


def tiny_model(**tc_kw) -> Transformer:
    torch.manual_seed(0)
    ffn = FFNConfig(kind="transcoder", transcoder=TranscoderConfig(**{"d_latent": 64, **tc_kw}))
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=2, n_heads=2, max_seq_len=32, ffn=ffn)
    return Transformer(cfg)


# ------------------------------------------------------------------ activations
def test_topk_exactly_k_active_and_matches_reference():
    m = tc(k=5)
    with torch.no_grad():
        m.b_enc.fill_(10.0)  # every pre-activation positive: ReLU removes none of the top k
    x = torch.randn(3, 7, 16)
    lat = m.encode(x)
    assert ((lat != 0).sum(-1) == 5).all()
    pre = x @ m.W_enc + m.b_enc
    # Reference: keep a value iff it is >= the 5th largest of its token.
    kth = pre.sort(-1, descending=True).values[..., 4:5]
    torch.testing.assert_close(lat, torch.where(pre >= kth, pre, 0.0))
    # Without the bias, ReLU can only remove: never more than k.
    with torch.no_grad():
        m.b_enc.fill_(-1.0)
    assert ((m.encode(x) != 0).sum(-1) <= 5).all()


def test_batchtopk_averages_k_over_the_batch():
    m = tc(k=4, activation="batchtopk").train()
    with torch.no_grad():
        m.b_enc.fill_(10.0)
    x = torch.randn(2, 8, 16) * torch.linspace(0.1, 3, 8)[None, :, None]  # uneven tokens
    lat = m.encode(x)
    per_token = (lat != 0).sum(-1)
    assert per_token.sum() == 4 * 16  # k on average ...
    assert per_token.min() < 4 < per_token.max()  # ... not k on every token
    # The kept values are exactly the k*N largest over the batch.
    pre = (x @ m.W_enc + m.b_enc).flatten()
    cutoff = pre.sort(descending=True).values[4 * 16 - 1]
    torch.testing.assert_close(lat.flatten(), torch.where(pre >= cutoff, pre, 0.0))


def test_batchtopk_threshold_running_average_and_eval_rule():
    m = tc(k=4, activation="batchtopk", batchtopk_threshold_lr=0.25).train()
    mins = []
    for seed in range(3):
        x = torch.randn(10, 16, generator=torch.Generator().manual_seed(seed))
        lat = m.encode(x)  # the latents m(x) computes, without the state update
        mins.append(lat[lat > 0].min().item())
        m(x)
    expect = mins[0]  # the first batch sets it, later ones move it by lr
    for v in mins[1:]:
        expect = 0.75 * expect + 0.25 * v
    assert m.threshold.item() == pytest.approx(expect, rel=1e-5)
    m.eval()
    x = torch.randn(5, 16)
    pre = x @ m.W_enc + m.b_enc
    torch.testing.assert_close(m(x), torch.where(pre > expect, pre, 0.0) @ m.W_dec + m.b_dec)


def test_batchtopk_eval_before_any_training_falls_back_to_batch_topk():
    m = tc(k=3, activation="batchtopk").eval()
    with torch.no_grad():
        m.b_enc.fill_(10.0)
    assert ((m.encode(torch.randn(1, 16)) != 0).sum() == 3).all()


def test_jumprelu_forward_and_threshold_gradients_match_closed_form():
    eps = 0.5
    m = tc(activation="jumprelu", jumprelu_bandwidth=eps, jumprelu_init_threshold=1.0, l0_weight=1)
    theta = 1.0
    # Latent 0 sees pre-activations inside the kernel window (|z - theta| < eps/2) and outside.
    z = torch.tensor([0.7, 0.9, 1.1, 1.2, 1.4, 2.0])
    with torch.no_grad():
        m.W_enc.zero_()
        m.W_enc[0, 0] = 1.0
    x = torch.zeros(6, 16)
    x[:, 0] = z
    lat = m.encode(x)
    torch.testing.assert_close(lat[:, 0], torch.where(z > theta, z, 0.0))

    g = torch.randn(6, 16)
    # dL/dtheta_0 = sum_n -(theta/eps) K((z_n - theta)/eps) * dL/dlatent_n, with
    # dL/dlatent_n = <W_dec[0], g_n>; kernel window: z in (0.75, 1.25).
    window = ((z - theta).abs() < eps / 2).float()
    dlat = g @ m.W_dec[0].detach()
    d_theta = (-(theta / eps) * window * dlat).sum()
    # L0 = mean_n sum_i step(z - theta): d/dtheta_0 = -(1/eps) sum_n K(.) / N
    d_theta_l0 = -(1 / eps) * window.sum() / 6
    m(x)
    assert m.aux_losses["l0"][0] == 1
    l0 = m.aux_losses["l0"][1]
    l0.backward()
    assert m.log_threshold.grad[0].item() == pytest.approx(d_theta_l0.item() * theta, rel=1e-5)
    m.zero_grad()
    (m(x) * g).sum().backward()
    # d/dlog_theta = theta * d/dtheta.
    assert m.log_threshold.grad[0].item() == pytest.approx(d_theta.item() * theta, rel=1e-5)
    assert m.log_threshold.grad[0] != 0
    assert l0.item() == pytest.approx(
        ((x @ m.W_enc + m.b_enc) > m.log_threshold.exp()).float().sum(-1).mean().item()
    )


# --------------------------------------------------- decoder norm, dead latents
def test_decoder_gradient_is_tangent_and_normalize_restores_unit_rows():
    m = tc().train()
    x = torch.randn(32, 16)
    m(x).pow(2).sum().backward()
    radial = (m.W_dec.grad * m.W_dec.detach()).sum(-1)
    assert radial.abs().max() < 1e-5
    assert m.W_dec.grad.abs().sum() > 0
    with torch.no_grad():
        m.W_dec.mul_(torch.rand(64, 1) + 0.5)
    m.after_optimizer_step()
    torch.testing.assert_close(m.W_dec.norm(dim=-1), torch.ones(64))


def test_no_decoder_normalisation_when_disabled():
    m = tc(normalize_decoder=False)
    m(torch.randn(8, 16)).pow(2).sum().backward()
    assert (m.W_dec.grad * m.W_dec.detach()).sum(-1).abs().max() > 1e-3
    with torch.no_grad():
        m.W_dec.mul_(2)
    m.normalize_decoder()
    torch.testing.assert_close(m.W_dec.norm(dim=-1), torch.full((64,), 2.0))


def test_tokens_since_fired_counts_tokens():
    m = tc(k=1).train()
    with torch.no_grad():
        m.W_enc.zero_()
        m.b_enc.zero_()
        m.b_enc[3] = 1.0  # only latent 3 ever fires
    m(torch.randn(2, 5, 16))
    m(torch.randn(7, 16))
    expect = torch.full((64,), 17)
    expect[3] = 0
    assert torch.equal(m.tokens_since_fired, expect)
    m.eval()
    m(torch.randn(4, 16))  # eval passes do not count
    assert torch.equal(m.tokens_since_fired, expect)


def dead_setup(**kw):
    m = tc(k=2, aux_k=4, dead_after_tokens=1, **kw).train()
    with torch.no_grad():
        m.b_enc[:8] = 5.0  # latents 0..7 dominate the top-2; the rest go dead
    m(torch.randn(16, 16))
    return m


def test_auxk_loss_against_reference_and_reaches_dead_latents():
    m = dead_setup()
    assert m.dead_mask().sum() >= 50
    x, y = torch.randn(16, 16), torch.randn(16, 16)
    m.zero_grad()
    out = m(x, target=y)
    dead = m.dead_mask()  # after this batch's update: what the loss used
    w, loss = m.aux_losses["auxk"]
    assert w == pytest.approx(1 / 32)
    pre = x @ m.W_enc + m.b_enc
    vals, idx = pre.masked_fill(~dead, -math.inf).topk(4, dim=-1)
    aux_out = torch.zeros_like(pre).scatter(-1, idx, vals.relu()) @ m.W_dec
    e = y - out
    ref = (e - aux_out).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    g = m.W_enc.grad.abs().sum(0)
    assert g[idx.unique()].sum() > 0 and g[~dead].sum() == 0


def test_auxk_in_a_model_leaves_the_output_unchanged_but_feeds_dead_latents():
    m = dead_setup()
    x = torch.randn(16, 16)
    out = m(x)
    assert "auxk" not in m.aux_losses
    m_off = dead_setup(aux_k_weight=0.0)
    torch.testing.assert_close(out, m_off(x), rtol=0, atol=0)
    out.pow(2).sum().backward()
    assert m.W_enc.grad[:, m.dead_mask()].abs().sum() > 0


# ----------------------------------------------------------- hooks, init, io
def test_hook_latents_ablation_removes_exactly_that_latents_write():
    model = tiny_model(k=4).eval()
    tokens = torch.randint(0, 32, (2, 6))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.*")
    lat = cache["latents", 0]
    assert lat.shape == (2, 6, 64) and cache["latents_pre", 0].shape == (2, 6, 64)
    j = int(lat[0, 2].nonzero()[0])

    def ablate(act, hook):
        act = act.clone()
        act[..., j] = 0
        return act

    with model.hooks([("blocks.0.mlp.hook_latents", ablate)]):
        _, cache2 = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_out")
    W_dec = model.blocks[0].mlp.W_dec
    delta = cache2["blocks.0.hook_mlp_out"] - cache["blocks.0.hook_mlp_out"]
    torch.testing.assert_close(delta, -lat[..., j, None] * W_dec[j], atol=1e-5, rtol=1e-5)


def test_backbone_init_calls_transcoder_init():
    model = tiny_model(skip=True)
    mlp = model.blocks[1].mlp
    torch.testing.assert_close(mlp.W_dec.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(mlp.W_enc, mlp.W_dec.T)
    assert mlp.b_dec.abs().sum() == 0 and mlp.W_skip.abs().sum() == 0


def test_save_load_keeps_batchtopk_threshold(tmp_path):
    model = tiny_model(activation="batchtopk", k=4).train()
    model(torch.randint(0, 32, (4, 16)))
    thr = [b.mlp.threshold.clone() for b in model.blocks]
    assert all(t > 0 for t in thr)
    model.eval()
    tokens = torch.randint(0, 32, (2, 10))
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    for b, t in zip(loaded.blocks, thr):
        assert torch.equal(b.mlp.threshold, t)
        assert b.mlp.tokens_since_fired.sum() > 0
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


def test_active_params_count_only_k_decoder_rows():
    model = tiny_model(k=4)
    mlp = model.blocks[0].mlp
    assert mlp.inactive_params() == (64 - 4) * 16
    assert model.num_params() - model.num_params(active=True) == 2 * (64 - 4) * 16


@pytest.mark.parametrize(
    "kw",
    [
        {"k": 4},
        {"k": 4, "activation": "batchtopk"},
        {"activation": "jumprelu", "l0_weight": 1e-3},
        {"k": 4, "skip": True},
    ],
)
def test_model_with_transcoder_ffn_trains(kw):
    model = tiny_model(**kw).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(32, generator=gen)
    losses = []
    for _ in range(25):
        seq = torch.randint(0, 32, (8, 1), generator=gen)
        for _ in range(11):  # next token = perm[token]: learnable in a few steps
            seq = torch.cat([seq, perm[seq[:, -1]][:, None]], 1)
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 32), seq[:, 1:].reshape(-1))
        aux = model.aux_losses()
        if kw.get("activation") == "jumprelu":
            assert set(aux) == {"aux/l0"}
        opt.zero_grad()
        (loss + sum(aux.values())).backward()
        opt.step()
        model.after_optimizer_step(1, 1)  # as the training loop does
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    for b in model.blocks:
        torch.testing.assert_close(b.mlp.W_dec.norm(dim=-1), torch.ones(64))


@pytest.mark.parametrize(
    "key,value",
    [
        ("activation", "relu"),
        ("k", 0),
        ("k", 65),
        ("jumprelu_bandwidth", 0.0),
        ("aux_k", -1),
        ("batchtopk_threshold_lr", 0.0),
        ("dead_after_tokens", 0),
    ],
)
def test_config_errors_name_the_key(key, value):
    ffn = FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=64, **{key: value}))
    with pytest.raises(ConfigError, match=f"model.ffn.transcoder.{key}="):
        Transformer(ModelConfig(vocab_size=8, d_model=16, n_heads=2, ffn=ffn))
