"""Head scores on constructed cases: hand-made patterns, a previous-token head
built from weights (rotary included), an induction head put in place through a
hook on hook_pattern, heads with identity / negated / permuting OV circuits."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure

from glassbox.analysis.heads import (
    copying_scores,
    full_ov_circuit,
    head_scores,
    induction_score_from_pattern,
    induction_scores,
    ov_factors,
    plot_head_scores,
    previous_token_score_from_pattern,
    previous_token_scores,
    repeated_random_tokens,
)
from glassbox.archs import ModelConfig, Transformer


def causal_uniform(B: int, H: int, T: int) -> torch.Tensor:
    tri = torch.ones(T, T).tril()
    return (tri / tri.sum(-1, keepdim=True)).expand(B, H, T, T).clone()


def previous_token_pattern(T: int) -> torch.Tensor:  # (T, T)
    p = torch.zeros(T, T)
    p[0, 0] = 1
    p[torch.arange(1, T), torch.arange(T - 1)] = 1
    return p


def induction_pattern(seq_len: int, prefix: int = 1) -> torch.Tensor:  # (T, T)
    """Second-half tokens attend to the token after their earlier occurrence;
    the others to the first position."""
    T = prefix + 2 * seq_len
    p = torch.zeros(T, T)
    p[:, 0] = 1
    for q in range(prefix + seq_len, T):
        p[q, 0] = 0
        p[q, q - seq_len + 1] = 1
    return p


def test_scores_of_hand_made_patterns():
    T, seq_len = 11, 5
    pats = torch.stack(
        [
            previous_token_pattern(T),
            induction_pattern(seq_len),
            torch.eye(T),
            causal_uniform(1, 1, T)[0, 0],
        ]
    )[None].expand(2, 4, T, T)
    prev = previous_token_score_from_pattern(pats)
    uniform_prev = sum(1 / (t + 1) for t in range(1, T)) / (T - 1)
    torch.testing.assert_close(prev[[0, 2, 3]], torch.tensor([1.0, 0.0, uniform_prev]))
    ind = induction_score_from_pattern(pats, seq_len)
    uniform_ind = sum(1 / (q + 1) for q in range(1 + seq_len, T)) / seq_len
    torch.testing.assert_close(ind[[0, 1, 2, 3]], torch.tensor([0.0, 1.0, 0.0, uniform_ind]))
    with pytest.raises(ValueError, match="expected"):
        induction_score_from_pattern(pats, seq_len + 1)


def test_previous_token_score_ignores_padding():
    T = 6
    pat = previous_token_pattern(T)[None, None].clone()
    pat[0, 0, 5] = 0
    pat[0, 0, 5, 5] = 1  # a padded query that attends to itself
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    assert float(previous_token_score_from_pattern(pat, mask)[0]) == pytest.approx(1.0)
    assert float(previous_token_score_from_pattern(pat)[0]) == pytest.approx(4 / 5)


def previous_token_model(n_layers: int = 2) -> Transformer:
    """Layer 0 head 0 attends to t-1 by construction; every other head has zero
    query/key weights and so attends uniformly to the past.

    Every embedding is [1, 0.5 * unit vector], so after RMSNorm coordinate 0 is
    the same constant for every token. The head's query and key read only it,
    with q = c e^{-i theta_j}, k = c in the rotary pairs j = 0, 1: the score is
    c^2 sum_j cos((t - s - 1) theta_j), largest at s = t - 1."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, d_model=16, n_layers=n_layers, n_heads=2, max_seq_len=32)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        u = torch.randn(20, 15)
        model.W_E.weight.copy_(
            torch.cat([torch.ones(20, 1), 0.5 * u / u.norm(dim=1, keepdim=True)], 1)
        )
        for block in model.blocks:
            block.attn.W_Q.weight.zero_()
            block.attn.W_K.weight.zero_()
        a = model.blocks[0].attn
        c = 6.0
        D = cfg.d_head
        for j in (0, 1):
            theta = 10000.0 ** (-2 * j / D)
            a.W_Q.weight[j, 0] = c * math.cos(theta)
            a.W_Q.weight[j + D // 2, 0] = -c * math.sin(theta)
            a.W_K.weight[j, 0] = c
    return model


def test_previous_token_head_built_from_weights():
    model = previous_token_model()
    T = 16
    tokens = torch.randint(0, 20, (4, T))
    scores = previous_token_scores(model, tokens)
    assert scores.shape == (2, 2)
    assert scores[0, 0] > 0.99
    uniform = sum(1 / (t + 1) for t in range(1, T)) / (T - 1)
    torch.testing.assert_close(scores[0, 1], torch.tensor(uniform), rtol=0, atol=1e-5)
    torch.testing.assert_close(scores[1], torch.full((2,), uniform), rtol=0, atol=1e-5)


def test_induction_head_through_a_pattern_hook():
    """Layer 1 head 0's pattern is replaced by an induction pattern (head 1 by a
    previous-token one) while the scores are measured."""
    model = previous_token_model()
    seq_len = 6

    def plant(pattern, hook):
        out = pattern.clone()
        T = out.shape[-1]
        out[:, 0] = induction_pattern(seq_len)[:T, :T]
        out[:, 1] = previous_token_pattern(T)
        return out

    with model.hooks([("blocks.1.attn.hook_pattern", plant)]):
        ind = induction_scores(model, seq_len=seq_len, n_seqs=8, vocab_range=(2, 20))
    assert ind.shape == (2, 2)
    assert float(ind[1, 0]) == pytest.approx(1.0)
    assert float(ind[1, 1]) == pytest.approx(0.0)  # t-1 is not q - seq_len + 1 for seq_len > 2
    uniform = sum(1 / (q + 1) for q in range(1 + seq_len, 1 + 2 * seq_len)) / seq_len
    assert float(ind[0, 1]) == pytest.approx(uniform, abs=1e-5)
    assert ind[0, 0] < 0.05  # the previous-token head is no induction head
    # without the hook nothing in layer 1 induces
    assert induction_scores(model, seq_len=seq_len, vocab_range=(2, 20))[1].max() < 0.2


def induction_model() -> Transformer:
    """A two-layer attention-only induction circuit built from weights.

    Residual layout (d_model 128): dim 0 a constant, dims 1..25 the token's
    one-hot, dims 64..88 the previous token's one-hot.
    layer 0 head 0: a previous-token head (rotary trick of `previous_token_model`)
        whose OV circuit copies the attended token's one-hot into dims 64..88;
    layer 1 head 0: query = current token, key = previous token, each token on
        its own coordinate of the rotary pairs that turn slowest (angles under
        0.1 rad over the sequence), so it attends to the token after an earlier
        occurrence of the current one: an induction head (K-composition);
    every other head: zero query/key weights (uniform attention), zero W_O;
    MLPs output zero."""
    V, D = 25, 64
    cfg = ModelConfig(vocab_size=V, d_model=128, n_layers=2, n_heads=2, max_seq_len=64)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.zero_()
        model.W_E.weight[:, 0] = 1.0
        model.W_E.weight[torch.arange(V), 1 + torch.arange(V)] = 1.0
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        for j in range(4):  # previous-token head: q = c e^{-i theta_j}, k = c
            theta = 10000.0 ** (-2 * j / D)
            a0.W_Q.weight[j, 0] = 2.0 * math.cos(theta)
            a0.W_Q.weight[j + D // 2, 0] = -2.0 * math.sin(theta)
            a0.W_K.weight[j, 0] = 2.0
        for t in range(V):
            a0.W_V.weight[t, 1 + t] = 1.0
            a0.W_O.weight[64 + t, t] = 1 / 8  # the normalised one-hot is ~8: write ~1
        for t in range(1, V):  # token t on rotary coordinate 20 + (t-1)//2 (+32 if odd)
            code = 20 + (t - 1) // 2 + D // 2 * ((t - 1) % 2)
            a1.W_Q.weight[code, 1 + t] = 2.0
            a1.W_K.weight[code, 64 + t] = 2.0
    return model


def test_induction_head_built_from_weights():
    model = induction_model()
    ind = induction_scores(model, seq_len=8, n_seqs=32, bos_token_id=0, vocab_range=(1, 25))
    prev = previous_token_scores(model, repeated_random_tokens(8, 8, (1, 25), bos_token_id=0))
    assert prev[0, 0] > 0.99  # the previous-token head works ...
    assert ind[1, 0] > 0.75  # ... and the head reading it induces (repeats within r split it)
    assert ind[0, 0] < 0.05 and ind[1, 1] < 0.15 and ind[0, 1] < 0.15
    # knock out the previous-token head's output: no K-composition, no induction
    with model.hooks([("blocks.0.attn.hook_z", lambda z, hook: torch.zeros_like(z))]):
        ablated = induction_scores(model, seq_len=8, n_seqs=32, bos_token_id=0, vocab_range=(1, 25))
    assert ablated[1, 0] < 0.15


def test_repeated_random_tokens():
    x = repeated_random_tokens(3, 5, (4, 9), bos_token_id=1, seed=2)
    assert x.shape == (3, 11) and (x[:, 0] == 1).all()
    assert torch.equal(x[:, 1:6], x[:, 6:]) and x[:, 1:].min() >= 4 and x[:, 1:].max() < 9
    assert torch.equal(x, repeated_random_tokens(3, 5, (4, 9), bos_token_id=1, seed=2))
    assert repeated_random_tokens(2, 4, (0, 5), bos_token_id=None).shape == (2, 8)


def ov_model() -> Transformer:
    """One layer, 3 heads of width 8, identity embeddings and unembeddings, on
    tokens 0..7: head 0 copies (OV = I), head 1 suppresses (OV = -I), head 2
    permutes (OV = a cyclic shift)."""
    cfg = ModelConfig(vocab_size=24, d_model=24, n_layers=1, n_heads=3, max_seq_len=16)
    model = Transformer(cfg).eval()
    shift = torch.roll(torch.eye(8), 1, dims=1)
    with torch.no_grad():
        model.W_E.weight.copy_(torch.eye(24))
        model.W_U.weight.copy_(torch.eye(24))
        a = model.blocks[0].attn
        a.W_V.weight.zero_()
        a.W_O.weight.zero_()
        for h, (v, o) in enumerate([(torch.eye(8), 1.0), (torch.eye(8), -1.0), (shift, 1.0)]):
            a.W_V.weight[h * 8 : (h + 1) * 8, :8] = v
            a.W_O.weight[:8, h * 8 : (h + 1) * 8] = o * torch.eye(8)
    return model


def test_copying_scores_of_constructed_ov_circuits():
    model = ov_model()
    eig = copying_scores(model, vocab_range=(0, 8))
    torch.testing.assert_close(eig, torch.tensor([[1.0, -1.0, 0.0]]), rtol=0, atol=1e-5)
    direct = copying_scores(model, method="direct", vocab_range=(0, 8))
    torch.testing.assert_close(direct, torch.tensor([[1.0, 0.0, 0.0]]))
    ov = full_ov_circuit(model, 0, 0, torch.arange(8))
    torch.testing.assert_close(
        ov, math.sqrt(24) * torch.eye(8), rtol=1e-3, atol=1e-5
    )  # RMSNorm eps
    with pytest.raises(ValueError, match="method"):
        copying_scores(model, method="nope")


def test_ov_circuit_matches_the_forward_pass_and_eigen_shortcut():
    """OV rows from a real forward pass (a one-token input attends only to itself,
    so hook_z is that token's value), grouped-query attention included; the
    eigenvalue score equals the one from the full V x V matrix."""
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=30, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=8)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.ln_final.w.uniform_(0.5, 1.5)
        model.blocks[0].ln1.w.uniform_(0.5, 1.5)
        tokens = torch.arange(30)[:, None]
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
        z = cache["blocks.0.attn.hook_z"][:, 0]  # (30, H, D)
        W_O = model.blocks[0].attn.W_O.weight
        for h in range(4):
            out = z[:, h] @ W_O[:, h * 8 : (h + 1) * 8].T  # (30, d_model)
            want = model.W_U(out * model.ln_final.w)
            torch.testing.assert_close(full_ov_circuit(model, 0, h), want, rtol=1e-4, atol=1e-5)
        eig = copying_scores(model, vocab_range=(0, 30))
        for h in range(4):
            lam = torch.linalg.eigvals(full_ov_circuit(model, 0, h).double())
            want = float(lam.real.sum() / lam.abs().sum())
            assert float(eig[0, h]) == pytest.approx(want, abs=1e-3)
        A, B = ov_factors(model, 0, 3)
        assert A.shape == (30, 8) and B.shape == (8, 30)


def test_head_scores_bundle_and_plot(tmp_path):
    model = previous_token_model()
    scores = head_scores(model, induction_seq_len=5, vocab_range=(2, 20))
    assert set(scores) == {"previous_token", "induction", "copying"}
    assert all(v.shape == (2, 2) for v in scores.values())
    assert scores["previous_token"][0, 0] > 0.99
    fig = plot_head_scores(scores["previous_token"], "prev", path=tmp_path / "prev.png")
    assert isinstance(fig, Figure) and (tmp_path / "prev.png").stat().st_size > 0
    assert isinstance(plot_head_scores(scores["copying"], signed=True), Figure)
