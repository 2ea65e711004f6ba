"""Logit lens: the last layer is the model's own output, earlier layers match a
hand-run truncated forward pass, for every FFN kind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from glassbox.analysis.logit_lens import (
    lens_labels,
    logit_lens,
    logit_lens_loss,
    logit_lens_nll,
    logit_lens_target_prob,
    logit_lens_top_k,
    next_token_targets,
    plot_logit_lens_loss,
    plot_logit_lens_probs,
    unembed,
)
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, TranscoderConfig, Transformer
from glassbox.training.skill_scores import masked_lm_loss

V = 41
FFNS = {
    "dense": FFNConfig(d_ff=48),
    "gelu": FFNConfig(activation="gelu", d_ff=48),
    "moe": FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=16)),
    "transcoder": FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=64, k=4)),
}


def tiny(ffn: FFNConfig, **kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, d_model=32, n_layers=3, n_heads=4, max_seq_len=32, ffn=ffn)
    cfg.update(kw)
    return Transformer(ModelConfig(**cfg)).eval()


@pytest.fixture(params=list(FFNS))
def model(request) -> Transformer:
    return tiny(FFNS[request.param])


def test_last_layer_is_the_models_logits(model):
    x = torch.randint(0, V, (3, 9))
    lens = logit_lens(model, x)
    assert lens.shape == (3, 3, 9, V)
    torch.testing.assert_close(lens[-1], model(x), rtol=1e-5, atol=1e-5)


def test_earlier_layers_match_a_truncated_forward(model):
    x = torch.randint(0, V, (2, 7))
    lens = logit_lens(model, x, include_embed=True)
    assert lens.shape[0] == model.cfg.n_layers + 1
    h = model.W_E(x)
    cos, sin = model.rotary.tables(None, x.shape[1])
    torch.testing.assert_close(lens[0], model.W_U(model.ln_final(h)))
    for i, block in enumerate(model.blocks):
        h = block(h, cos, sin, None, None)
        want = model.W_U(model.ln_final(h))
        torch.testing.assert_close(lens[i + 1], want, rtol=1e-5, atol=1e-5)


def test_loss_at_the_last_layer_is_the_training_loss(model):
    x = torch.randint(0, V, (4, 10))
    loss_mask = (torch.rand(4, 10) > 0.4).long()
    loss_mask[:, 1] = 1
    targets, mask = next_token_targets(x, loss_mask)
    losses = logit_lens_loss(model, x, targets, mask)
    assert losses.shape == (3,)
    want = masked_lm_loss(model(x), x, loss_mask)
    torch.testing.assert_close(losses[-1], want, rtol=1e-5, atol=1e-5)
    # per-layer loss = a hand mean over the masked positions of the per-layer NLL
    nll = logit_lens_nll(model, x, targets)
    for layer in range(3):
        torch.testing.assert_close(losses[layer], nll[layer][mask].mean())


def test_target_alignment_and_probabilities():
    model = tiny(FFNS["dense"])
    x = torch.randint(0, V, (2, 6))
    targets, mask = next_token_targets(x)
    assert torch.equal(targets[:, :-1], x[:, 1:])
    assert mask[:, :-1].all() and not mask[:, -1].any()
    p = logit_lens_target_prob(model, x, targets)
    want = model(x).softmax(-1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(p[-1], want, rtol=1e-5, atol=1e-6)
    # the unmasked loss is the plain mean cross-entropy
    loss = logit_lens_loss(model, x, targets)
    ref = F.cross_entropy(model(x).transpose(1, 2), targets)
    torch.testing.assert_close(loss[-1], ref, rtol=1e-5, atol=1e-5)


def test_top_k_is_sorted_and_argmax(model):
    x = torch.randint(0, V, (2, 8))
    probs, ids = logit_lens_top_k(model, x, k=5)
    assert probs.shape == ids.shape == (3, 2, 8, 5)
    assert (probs[..., :-1] >= probs[..., 1:]).all()
    torch.testing.assert_close(ids[-1, ..., 0], model(x).argmax(-1), rtol=0, atol=0)
    full = logit_lens(model, x).softmax(-1)
    torch.testing.assert_close(probs, full.gather(-1, ids), rtol=1e-5, atol=1e-6)


def test_unembed_and_labels():
    model = tiny(FFNS["dense"], tie_embeddings=True)
    r = torch.randn(5, 32)
    torch.testing.assert_close(unembed(model, r), model.W_U(model.ln_final(r)))
    assert lens_labels(3) == ["0", "1", "2"]
    assert lens_labels(2, include_embed=True) == ["embed", "0", "1"]


def test_plots(tmp_path):
    model = tiny(FFNS["dense"])
    x = torch.randint(0, V, (2, 6))
    targets, mask = next_token_targets(x)
    losses = logit_lens_loss(model, x, targets, mask, include_embed=True)
    fig = plot_logit_lens_loss(losses, lens_labels(3, True), path=tmp_path / "loss.png")
    assert isinstance(fig, Figure) and (tmp_path / "loss.png").stat().st_size > 0
    p = logit_lens_target_prob(model, x, targets)[:, 0]
    fig = plot_logit_lens_probs(
        p, lens_labels(3), [str(t) for t in x[0].tolist()], path=tmp_path / "p.png"
    )
    assert isinstance(fig, Figure) and (tmp_path / "p.png").stat().st_size > 0
