"""Activation patching: constructed cases with known answers (clean into itself,
nothing patched, a whole layer patched, a corruption at one position that
causality confines), a hand-patched forward pass as the reference, and the
expert / latent helpers against the FFNs' own decompositions."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from glassbox.analysis.patching import (
    PatchingResult,
    activation_patching,
    expert_contribution,
    ffn_layers_with,
    patch_experts,
    patch_heads,
    patch_latents,
    patch_mlp_out,
    patch_residual,
    patch_slices,
    patch_sweep,
    plot_patching,
    rows_independent,
    run_with_patches,
    slice_patch,
)
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, TranscoderConfig, Transformer

V, T, P_STAR, TARGET = 37, 7, 3, 5
FFNS = {
    "dense": FFNConfig(d_ff=48),
    "moe": FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=16)),
    "transcoder": FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=48, k=4)),
}


def tiny(ffn: FFNConfig, **kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, ffn=ffn)
    cfg.update(kw)
    model = Transformer(ModelConfig(**cfg)).eval()
    with torch.no_grad():  # make the tiny model's outputs depend on its inputs visibly
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(10)
    return model


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, TARGET].mean()


def pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted batches that differ only at position P_STAR."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, V, (3, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, P_STAR] = (clean[:, P_STAR] + 1 + torch.randint(0, V - 1, (3,), generator=g)) % V
    return clean, corrupted


@pytest.fixture(params=list(FFNS))
def model(request) -> Transformer:
    return tiny(FFNS[request.param])


@torch.no_grad()
def test_clean_into_itself_gives_the_clean_metric(model):
    clean, _ = pair()
    want = float(metric(model(clean)))
    for res in (
        patch_residual(model, clean, clean, metric, normalise_scores=False),
        patch_residual(model, clean, clean, metric, hook="resid_post", normalise_scores=False),
        patch_mlp_out(model, clean, clean, metric, normalise_scores=False),
        patch_heads(model, clean, clean, metric, normalise_scores=False),
    ):
        assert res.clean == res.corrupted == pytest.approx(want)
        torch.testing.assert_close(res.patched, torch.full_like(res.patched, want))
    with pytest.raises(ValueError, match="nothing to restore"):
        patch_residual(model, clean, clean, metric)


def test_patching_nothing_scores_zero(model):
    clean, corrupted = pair()
    res = activation_patching(
        model, clean, corrupted, metric, [], lambda cell, cache: [], (2, 3), ("a", "b")
    )
    torch.testing.assert_close(res.scores, torch.zeros(2, 3))
    assert res.clean != res.corrupted


def test_a_whole_residual_layer_restores_everything(model):
    clean, corrupted = pair()
    L = model.cfg.n_layers
    for hook in ("resid_pre", "resid_mid", "resid_post"):
        names = [f"blocks.{i}.hook_{hook}" for i in range(L)]
        res = activation_patching(
            model,
            clean,
            corrupted,
            metric,
            names,
            lambda cell, cache, names=names: [slice_patch(names[cell[0]], ..., cache)],
            (L,),
            ("layer",),
        )
        torch.testing.assert_close(res.scores, torch.ones(L), rtol=0, atol=1e-4)


def test_one_corrupted_position_closed_form(model):
    """Inputs differ only at P_STAR: patching the embedding there restores all of
    it; positions before P_STAR hold the same values in both runs (causal) and
    score 0; at the last layer only the last position reaches the metric."""
    clean, corrupted = pair()
    res = patch_residual(model, clean, corrupted, metric)  # resid_pre, (L, T)
    assert res.scores.shape == (2, T) and res.dims == ("layer", "pos")
    want0 = torch.zeros(T)
    want0[P_STAR] = 1
    torch.testing.assert_close(res.scores[0], want0, rtol=0, atol=1e-4)
    torch.testing.assert_close(res.scores[:, :P_STAR], torch.zeros(2, P_STAR), rtol=0, atol=1e-6)
    post = patch_residual(model, clean, corrupted, metric, hook="resid_post")
    last = torch.zeros(T)
    last[-1] = 1
    torch.testing.assert_close(post.scores[-1], last, rtol=0, atol=1e-4)
    heads = patch_heads(model, clean, corrupted, metric, by_position=True)
    assert heads.scores.shape == (2, 4, T)
    torch.testing.assert_close(
        heads.scores[..., :P_STAR], torch.zeros(2, 4, P_STAR), rtol=0, atol=1e-6
    )
    # the head grid is the (layer, head) sweep with every position at once
    flat = patch_heads(model, clean, corrupted, metric)
    assert flat.scores.shape == (2, 4)


def _hand_forward(model, tokens, layer, replace) -> torch.Tensor:
    """A forward pass run block by block that applies `replace(x)` to the residual
    stream entering `layer` (the reference for resid_pre patching)."""
    cos, sin = model.rotary.tables(None, tokens.shape[1])
    x = model.W_E(tokens)
    for i, block in enumerate(model.blocks):
        if i == layer:
            x = replace(x)
        x = block(x, cos, sin, None, None)
    return model.W_U(model.ln_final(x))


@torch.no_grad()
def test_matches_a_hand_patched_forward(model):
    clean, corrupted = pair(1)
    res = patch_residual(model, clean, corrupted, metric)
    _, cache = model.run_with_cache(clean, names_filter="blocks.*.hook_resid_pre")
    for layer in range(2):
        for pos in range(T):
            src = cache[f"blocks.{layer}.hook_resid_pre"]

            def replace(x, pos=pos, src=src):
                x = x.clone()
                x[:, pos] = src[:, pos]
                return x

            want = float(metric(_hand_forward(model, corrupted, layer, replace)))
            assert float(res.patched[layer, pos]) == pytest.approx(want, rel=1e-4, abs=1e-4)
    clean_m, corrupt_m = float(metric(model(clean))), float(metric(model(corrupted)))
    torch.testing.assert_close(
        res.scores, (res.patched - corrupt_m) / (clean_m - corrupt_m), rtol=1e-5, atol=1e-5
    )


def test_patch_slices_is_a_row_of_the_grid():
    model = tiny(FFNS["dense"])
    clean, corrupted = pair()
    grid = patch_residual(model, clean, corrupted, metric, hook="resid_post")
    row = patch_slices(
        model,
        clean,
        corrupted,
        metric,
        "blocks.0.hook_resid_post",
        [(slice(None), p) for p in range(T)],
    )
    torch.testing.assert_close(row.scores, grid.scores[0])
    with pytest.raises(KeyError, match="no hook point"):
        patch_slices(model, clean, corrupted, metric, "blocks.0.nothing", [0])
    with pytest.raises(ValueError, match="same shape"):
        patch_residual(model, clean, corrupted[:, :-1], metric)


@torch.no_grad()
def test_expert_contributions_add_up_to_the_moe_output():
    model = tiny(FFNS["moe"])
    clean, _ = pair()
    assert ffn_layers_with(model, "hook_expert_weights") == [0, 1]
    names = ["blocks.1.hook_mlp_out", "blocks.1.hook_mlp_in", "blocks.1.mlp.hook_expert_indices"]
    names.append("blocks.1.mlp.hook_expert_weights")
    _, cache = model.run_with_cache(clean, names_filter=names)
    moe = model.blocks[1].mlp
    x = cache["blocks.1.hook_mlp_in"].reshape(-1, 32)
    idx = cache["blocks.1.mlp.hook_expert_indices"].reshape(-1, 2)
    w = cache["blocks.1.mlp.hook_expert_weights"].reshape(-1, 2)
    total = torch.zeros_like(cache["blocks.1.hook_mlp_out"])
    for e in range(4):
        c = expert_contribution(model, clean, 1, e)
        # reference: the expert's own output on its tokens, times its gate weight
        gate = (w * (idx == e)).sum(-1, keepdim=True)  # (N, 1)
        want = (gate * moe.expert_output(x, e)).view_as(c)
        torch.testing.assert_close(c, want, rtol=1e-4, atol=1e-5)
        total += c
    torch.testing.assert_close(total, cache["blocks.1.hook_mlp_out"], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_patch_experts_closed_forms():
    model = tiny(FFNS["moe"])
    clean, corrupted = pair(2)
    res = patch_experts(model, clean, corrupted, metric)
    assert res.scores.shape == (2, 4) and res.labels["layer"] == ["0", "1"]
    # all experts of a layer patched together = that layer's FFN output patched
    deltas = sum(
        expert_contribution(model, clean, 1, e) - expert_contribution(model, corrupted, 1, e)
        for e in range(4)
    )
    both = run_with_patches(model, corrupted, [("blocks.1.hook_mlp_out", lambda a, h: a + deltas)])
    _, cache = model.run_with_cache(clean, names_filter="blocks.1.hook_mlp_out")
    whole = run_with_patches(model, corrupted, [slice_patch("blocks.1.hook_mlp_out", ..., cache)])
    torch.testing.assert_close(both, whole, rtol=1e-4, atol=1e-4)
    # one cell recomputed by hand
    d = expert_contribution(model, clean, 0, 2) - expert_contribution(model, corrupted, 0, 2)
    one = metric(
        run_with_patches(model, corrupted, [("blocks.0.hook_mlp_out", lambda a, h: a + d)])
    )
    assert float(res.patched[0, 2]) == pytest.approx(float(one), rel=1e-5, abs=1e-5)
    # clean into itself: every expert scores exactly the clean metric
    same = patch_experts(model, clean, clean, metric, layers=[1], normalise_scores=False)
    torch.testing.assert_close(same.patched, torch.full((1, 4), same.clean), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="no MoE layer"):
        patch_experts(tiny(FFNS["dense"]), clean, corrupted, metric)


@torch.no_grad()
def test_patch_latents_closed_forms():
    model = tiny(FFNS["transcoder"])
    clean, corrupted = pair()
    name = "blocks.1.mlp.hook_latents"
    _, a = model.run_with_cache(clean, names_filter=name)
    _, b = model.run_with_cache(corrupted, names_filter=name)
    changed = ((a[name] - b[name]).abs().flatten(0, 1).amax(0) > 0).nonzero().flatten().tolist()
    still = [j for j in range(48) if j not in changed]
    res = patch_latents(model, clean, corrupted, metric, layer=1)
    assert res.labels["latent"] == [str(j) for j in changed] and res.scores.shape == (len(changed),)
    # a latent equal in both runs patches to a no-op
    quiet = patch_latents(model, clean, corrupted, metric, layer=1, latents=still[:3])
    torch.testing.assert_close(quiet.scores, torch.zeros(3), rtol=0, atol=1e-6)
    # every latent at once = the FFN output patched (no skip connection)
    all_latents = run_with_patches(model, corrupted, [slice_patch(name, ..., a)])
    _, c = model.run_with_cache(clean, names_filter="blocks.1.hook_mlp_out")
    whole = run_with_patches(model, corrupted, [slice_patch("blocks.1.hook_mlp_out", ..., c)])
    torch.testing.assert_close(all_latents, whole, rtol=1e-4, atol=1e-4)
    # one latent by hand
    j = changed[0]
    ref = run_with_patches(model, corrupted, [slice_patch(name, (Ellipsis, j), a)])
    assert float(res.patched[0]) == pytest.approx(float(metric(ref)), rel=1e-5, abs=1e-5)
    with pytest.raises(KeyError, match="transcoder"):
        patch_latents(tiny(FFNS["dense"]), clean, corrupted, metric, layer=1)


@torch.no_grad()
def test_stacked_passes_equal_one_patch_per_pass(model):
    clean, corrupted = pair(3)
    for fn in (patch_residual, patch_heads):
        stacked = fn(model, clean, corrupted, metric, max_rows=64)
        single = fn(model, clean, corrupted, metric, max_rows=None)
        torch.testing.assert_close(stacked.patched, single.patched, rtol=1e-5, atol=1e-5)
    assert rows_independent(model, corrupted)


@torch.no_grad()
def test_batch_coupled_model_is_patched_one_cell_at_a_time():
    """A BatchTopK transcoder without a threshold yet keeps the top k*N over the
    whole batch: rows interact, so stacking patched copies would change them."""
    ffn = FFNConfig(
        kind="transcoder", transcoder=TranscoderConfig(d_latent=48, k=4, activation="batchtopk")
    )
    model = tiny(ffn)
    clean, corrupted = pair()
    assert not rows_independent(model, corrupted)
    res = patch_residual(model, clean, corrupted, metric)
    _, cache = model.run_with_cache(clean, names_filter="blocks.1.hook_resid_pre")
    ref = run_with_patches(
        model, corrupted, [slice_patch("blocks.1.hook_resid_pre", (slice(None), 2), cache)]
    )
    assert float(res.patched[1, 2]) == pytest.approx(float(metric(ref)), rel=1e-5, abs=1e-5)


def test_patch_sweep_shapes_and_plot(tmp_path):
    model = tiny(FFNS["dense"])
    clean, corrupted = pair()
    res = patch_residual(model, clean, corrupted, metric)
    assert isinstance(res, PatchingResult)
    fig = plot_patching(res, path=tmp_path / "resid.png")
    assert isinstance(fig, Figure) and (tmp_path / "resid.png").stat().st_size > 0
    row = patch_sweep(model, corrupted, metric, lambda c: [], (3,), 1.0, 0.0, ("x",))
    assert isinstance(plot_patching(row, path=tmp_path / "row.png"), Figure)
    heads = patch_heads(model, clean, corrupted, metric, by_position=True)
    with pytest.raises(ValueError, match="slice"):
        plot_patching(heads)
