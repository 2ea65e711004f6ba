"""Causal tracing on a model built by hand whose fact lives in one layer.

Prompt [subject, "="]; the answer is predicted at position 1.
layer 0: nothing (all weights zero);
layer 1: the MLP maps each subject's embedding to its answer's direction (the fact);
layer 2: attention moves position 0 into position 1 (pattern set by a hook);
layer 3: nothing. Unembedding reads the answer directions.

So the restored hidden state recovers the answer exactly where the information
is: at the subject position up to layer 1, at the last position from layer 2 on.
The MLP trace points at layer 1, the attention trace at layer 2.
"""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from glassbox.analysis.causal_tracing import causal_trace, embedding_std, plot_causal_trace
from glassbox.archs import FFNConfig, ModelConfig, Transformer

N_SUBJ, EQ = 4, 1
SUBJ = torch.arange(2, 2 + N_SUBJ)  # subject tokens 2..5
ANS = torch.arange(10, 10 + N_SUBJ)  # answer tokens 10..13


def fact_model() -> Transformer:
    cfg = ModelConfig(
        vocab_size=16,
        d_model=32,
        n_layers=4,
        n_heads=1,
        max_seq_len=8,
        ffn=FFNConfig(activation="gelu", d_ff=N_SUBJ),
    )
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.zero_()
        # embeddings: subject i on dim i, "=" on dim 4, every other token its own dim 12..
        others = [t for t in range(16) if t not in SUBJ.tolist() and t != EQ]
        for i, s in enumerate(SUBJ.tolist()):
            model.W_E.weight[s, i] = 1
        model.W_E.weight[EQ, 4] = 1
        for j, t in enumerate(others):
            model.W_E.weight[t, 12 + j] = 1
        mlp = model.blocks[1].mlp  # the fact: subject i -> answer direction 8 + i
        for i in range(N_SUBJ):
            mlp.W_in.weight[i, i] = 2.0
            mlp.W_out.weight[8 + i, i] = 1.0
        attn = model.blocks[2].attn  # copy the normalised residual of the attended position
        attn.W_V.weight.copy_(torch.eye(32))
        attn.W_O.weight.copy_(torch.eye(32))
        for i in range(N_SUBJ):
            model.W_U.weight[ANS[i], 8 + i] = 3.0
    return model


def move_to_last(pattern, hook):
    out = torch.zeros_like(pattern)
    out[..., 0] = 1  # every position attends to the subject position
    return out


def prompts():
    tokens = torch.stack([SUBJ, torch.full((N_SUBJ,), EQ)], dim=1)  # (4, 2)
    subject = torch.zeros(N_SUBJ, 2, dtype=torch.bool)
    subject[:, 0] = True
    return tokens, subject


def trace(model, **kw):
    tokens, subject = prompts()
    with model.hooks([("blocks.2.attn.hook_pattern", move_to_last)]):
        return causal_trace(model, tokens, subject, ANS, noise_std=1.0, n_samples=8, **kw)


def test_the_construction_recalls_the_facts():
    model = fact_model()
    tokens, _ = prompts()
    with model.hooks([("blocks.2.attn.hook_pattern", move_to_last)]):
        logits = model(tokens)
    assert torch.equal(logits[:, -1].argmax(-1), ANS)


def test_hidden_state_trace_follows_the_information():
    model = fact_model()
    t = trace(model)
    assert t.p_clean > 0.95 and t.p_corrupted < 0.5
    te = t.total_effect
    want = torch.tensor([[te, 0.0], [te, 0.0], [0.0, te], [0.0, te]])
    torch.testing.assert_close(t.indirect_effect, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(t.restored, want + t.p_corrupted, rtol=0, atol=1e-5)


def test_mlp_trace_points_at_the_fact_layer():
    model = fact_model()
    t = trace(model, hook="mlp_out")
    ie = t.indirect_effect
    assert divmod(int(ie.argmax()), 2) == (1, 0)  # layer 1, subject position
    assert ie[1, 0] > 0.5 * t.total_effect
    mask = torch.ones_like(ie, dtype=torch.bool)
    mask[1, 0] = False
    torch.testing.assert_close(ie[mask], torch.zeros(7), rtol=0, atol=1e-6)
    # a window of 3 layers centred on l restores layer 1 for l = 0, 1, 2
    w = trace(model, hook="mlp_out", window=3).indirect_effect[:, 0]
    torch.testing.assert_close(
        w, torch.stack([ie[1, 0]] * 3 + [torch.tensor(0.0)]), atol=1e-6, rtol=0
    )


def test_attention_trace_points_at_the_moving_layer():
    model = fact_model()
    t = trace(model, hook="attn_out")
    want = torch.zeros(4, 2)
    want[2, 1] = t.total_effect
    torch.testing.assert_close(t.indirect_effect, want, rtol=0, atol=1e-5)


def test_seeded_noise_and_defaults():
    model = fact_model()
    a, b, c = trace(model, seed=3), trace(model, seed=3), trace(model, seed=4)
    torch.testing.assert_close(a.indirect_effect, b.indirect_effect, rtol=0, atol=0)
    assert a.p_corrupted != c.p_corrupted
    # default noise unit: the embedding weights' standard deviation (16 one-hot rows of 32)
    assert embedding_std(model) == pytest.approx(float(model.W_E.weight.detach().std()))
    tokens, subject = prompts()
    with model.hooks([("blocks.2.attn.hook_pattern", move_to_last)]):
        d = causal_trace(model, tokens, subject, ANS, n_samples=4)
    assert d.indirect_effect.shape == (4, 2) and d.p_clean == pytest.approx(a.p_clean)
    with pytest.raises(ValueError, match="subject_mask"):
        causal_trace(model, tokens, torch.zeros_like(subject), ANS)
    with pytest.raises(ValueError, match="hook"):
        causal_trace(model, tokens, subject, ANS, hook="nope")


def test_plot(tmp_path):
    t = trace(fact_model())
    fig = plot_causal_trace(t, ["subject*", "="], path=tmp_path / "trace.png")
    assert isinstance(fig, Figure) and (tmp_path / "trace.png").stat().st_size > 0
