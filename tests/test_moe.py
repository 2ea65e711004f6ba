"""The mixture-of-experts FFN: routing, parity with references, losses, interventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import glassbox.archs.experts as experts_mod
from glassbox.archs import (
    ConfigError,
    FFNConfig,
    ModelConfig,
    MoEConfig,
    Transformer,
    load_pretrained,
    save_pretrained,
)
from glassbox.archs.dense import DenseMLP
from glassbox.archs.experts import grouped_matmul
from glassbox.archs.export.mixtral import mixtral_experts
from glassbox.archs.moe import MoE, moe_layers
from glassbox.archs.moe_interventions import ablate_experts, force_routing
from glassbox.archs.moe_units import expert_means
from glassbox.archs.routing import ReLURouter


def make_moe(d_model=16, **kw) -> MoE:
    return MoE(d_model, FFNConfig(kind="moe", moe=MoEConfig(**kw)))


def make_model(vocab=40, **kw) -> Transformer:
    cfg = ModelConfig(
        vocab_size=vocab,
        d_model=32,
        n_layers=2,
        n_heads=4,
        max_seq_len=32,
        ffn=FFNConfig(kind="moe", moe=MoEConfig(**kw)),
    )
    return Transformer(cfg)


def reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token, expert by expert: the definition, with no batching."""
    _, idx, w = moe.route(x)
    xf, idx, w = x.reshape(-1, moe.d_model), idx.reshape(-1, moe.k), w.reshape(-1, moe.k)
    out = torch.zeros_like(xf)
    for n in range(xf.shape[0]):
        for j in range(moe.k):
            e = int(idx[n, j])
            h = xf[n] @ moe.W_in.weight[e]
            if moe.activation == "swiglu":
                h = F.silu(xf[n] @ moe.W_gate.weight[e]) * h
            elif moe.activation == "gelu":
                h = F.gelu(h)
            else:
                h = F.relu(h)
            out[n] += w[n, j] * (h @ moe.W_out.weight[e])
    if moe.shared is not None:
        out += moe.shared(xf)
    return out.view_as(x)


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_experts=8, k=2, d_expert=8),
        dict(n_experts=16, k=4, d_expert=8, expert_activation="gelu", n_shared_experts=1),
        dict(n_experts=8, k=3, d_expert=8, router="relu", expert_activation="relu"),
        dict(n_experts=4, k=4, d_expert=8, normalize_weights=False),
    ],
)
def test_layer_matches_per_token_reference(kw):
    torch.manual_seed(0)
    moe = make_moe(**kw)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(moe(x), reference_moe(moe, x), atol=1e-6, rtol=1e-5)


def test_exactly_k_distinct_experts_per_token():
    torch.manual_seed(1)
    moe = make_moe(n_experts=16, k=4, d_expert=8)
    seen = {}
    moe.hook_expert_indices.register_forward_hook(lambda m, i, o: seen.update(idx=o))
    moe(torch.randn(4, 9, 16))
    idx = seen["idx"]
    assert idx.shape == (4, 9, 4)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct experts
    assert ((idx >= 0) & (idx < 16)).all()


def test_grouped_matmul_paths_agree_with_loop():
    torch.manual_seed(2)
    E, d_in, d_out = 5, 8, 12
    counts = torch.tensor([3, 0, 7, 1, 0])  # empty experts included
    x, w = torch.randn(int(counts.sum()), d_in), torch.randn(E, d_in, d_out)
    offsets = counts.cumsum(0).to(torch.int32)
    ref = torch.cat([x[o - c : o] @ w[e] for e, (c, o) in enumerate(zip(counts, offsets))])
    torch.testing.assert_close(grouped_matmul(x, w, counts, offsets), ref)
    # float64 never takes the grouped_mm kernel: the padded-bmm fallback
    got = grouped_matmul(x.double(), w.double(), counts, offsets)
    torch.testing.assert_close(got, ref.double(), atol=1e-5, rtol=1e-5)
    none = torch.zeros(E, dtype=torch.long)  # no rows at all, on both paths
    for dtype in (torch.float32, torch.float64):
        out = grouped_matmul(x[:0].to(dtype), w.to(dtype), none, none.to(torch.int32))
        assert out.shape == (0, d_out)


def test_padded_fallback_layer_matches_reference(monkeypatch):
    monkeypatch.setattr(experts_mod, "_grouped_mm_applies", lambda x, w: False)
    torch.manual_seed(3)
    moe = make_moe(n_experts=8, k=2, d_expert=8)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(moe(x), reference_moe(moe, x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
def test_one_expert_k1_equals_dense_mlp(activation):
    torch.manual_seed(4)
    d, h = 16, 24
    dense = DenseMLP(d, FFNConfig(kind="dense", activation=activation, d_ff=h))
    moe = make_moe(d, n_experts=1, k=1, d_expert=h, expert_activation=activation)
    with torch.no_grad():
        moe.W_in.weight[0] = dense.W_in.weight.T
        moe.W_out.weight[0] = dense.W_out.weight.T
        if activation == "swiglu":
            moe.W_gate.weight[0] = dense.W_gate.weight.T
    x = torch.randn(2, 6, d)
    torch.testing.assert_close(moe(x), dense(x), atol=1e-6, rtol=1e-5)


def test_gradients_reach_router_from_the_output_alone():
    torch.manual_seed(5)
    moe = make_moe(n_experts=8, k=2, d_expert=8, load_balance_weight=0.0, z_loss_weight=0.0)
    moe(torch.randn(2, 5, 16)).square().sum().backward()
    assert moe.W_router.weight.grad is not None and moe.W_router.weight.grad.abs().sum() > 0
    for p in (moe.W_gate.weight, moe.W_in.weight, moe.W_out.weight):
        assert p.grad.abs().sum() > 0


def test_load_balance_and_z_loss_closed_form():
    # Constructed routing: every token's logits are [a, 0, 0, 0], k=1, so every
    # token goes to expert 0: f = (1, 0, 0, 0), P_0 = e^a / (e^a + 3).
    a = 2.0
    moe = make_moe(n_experts=4, k=1, d_expert=8)
    logits = torch.tensor([a, 0.0, 0.0, 0.0]).expand(2, 5, 4)
    moe.hook_router_logits.register_forward_hook(lambda m, i, o: logits.clone())
    moe(torch.randn(2, 5, 16))
    w_lb, lb = moe.aux_losses["load_balance"]
    w_z, z = moe.aux_losses["router_z"]
    assert (w_lb, w_z) == (0.01, 0.001)
    p0 = math.exp(a) / (math.exp(a) + 3)
    assert lb.item() == pytest.approx(4 * p0, rel=1e-6)
    assert z.item() == pytest.approx(math.log(math.exp(a) + 3) ** 2, rel=1e-6)


def test_load_balance_is_one_when_balanced():
    # Equal logits (P_e = 1/E) and routing forced to spread slots evenly: loss = 1.
    moe = make_moe(n_experts=4, k=2, d_expert=8)
    moe.hook_router_logits.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    forced = torch.tensor([[0, 1], [2, 3]]).repeat(4, 1).view(1, 8, 2)
    moe.hook_expert_indices.register_forward_hook(lambda m, i, o: forced)
    moe(torch.randn(1, 8, 16))
    assert moe.aux_losses["load_balance"][1].item() == pytest.approx(1.0, rel=1e-6)


def test_relu_router_l1_loss_and_nonnegative_weights():
    torch.manual_seed(6)
    moe = make_moe(
        n_experts=8, k=2, d_expert=8, router="relu", expert_activation="relu", sparsity_weight=0.1
    )
    seen = {}
    moe.hook_router_logits.register_forward_hook(lambda m, i, o: seen.update(logits=o))
    moe.hook_expert_weights.register_forward_hook(lambda m, i, o: seen.update(w=o))
    moe(torch.randn(2, 5, 16))
    w, l1 = moe.aux_losses["router_l1"]
    assert w == 0.1
    assert l1.item() == pytest.approx(F.relu(seen["logits"]).sum(-1).mean().item(), rel=1e-6)
    assert (seen["w"] >= 0).all()


def test_sparsity_estimate_matches_measured_fraction():
    # For iid Gaussian expert weights the Gaussian model of each hidden unit's
    # pre-activation is exact, so rho is the expected share of units that fire.
    torch.manual_seed(7)
    moe = make_moe(32, n_experts=4, k=1, d_expert=4096, router="relu", expert_activation="relu")
    with torch.no_grad():
        shift = torch.linspace(-0.02, 0.02, 4)[:, None, None]  # experts from sparse to dense
        moe.W_in.weight.copy_(torch.randn_like(moe.W_in.weight) * 0.02 + shift)
    x = torch.randn(10, 32)
    rho = ReLURouter.sparsity_estimate(x, moe.expert_input_weight())  # (10, 4)
    measured = (torch.einsum("nd,edh->neh", x, moe.W_in.weight) > 0).float().mean(-1)
    torch.testing.assert_close(rho, measured, atol=0.03, rtol=0)
    assert rho.std() > 0.1  # the experts really differ, so the check has teeth


def test_relu_router_prefers_sparser_experts_on_equal_logits():
    torch.manual_seed(15)
    moe = make_moe(32, n_experts=4, k=1, d_expert=64, router="relu", expert_activation="relu")
    with torch.no_grad():
        moe.W_router.weight.zero_()  # every logit 0: only the sparsity term decides
        shift = torch.tensor([0.01, -0.01, 0.03, 0.0])[:, None, None]
        moe.W_in.weight.copy_(torch.randn_like(moe.W_in.weight) * 0.02 + shift)
    x = torch.randn(1, 12, 32)
    seen = {}
    moe.hook_expert_indices.register_forward_hook(lambda m, i, o: seen.update(idx=o))
    moe(x)
    rho = ReLURouter.sparsity_estimate(x[0], moe.expert_input_weight())  # (12, 4)
    assert torch.equal(seen["idx"][0, :, 0], rho.argmin(-1))
    assert rho.argmin(-1).unique().numel() > 1  # the choice depends on the token


def test_ablate_changes_only_routed_tokens():
    torch.manual_seed(8)
    moe = make_moe(n_experts=8, k=2, d_expert=8)
    x = torch.randn(3, 10, 16)
    seen = {}
    moe.hook_expert_indices.register_forward_hook(lambda m, i, o: seen.update(idx=o))
    moe.hook_expert_weights.register_forward_hook(lambda m, i, o: seen.update(w=o))
    base = moe(x)
    e = int(seen["idx"][0, 0, 0])
    routed = (seen["idx"] == e).any(-1)  # (B, T)
    assert 0 < routed.sum() < routed.numel()
    moe.ablation = {e: None}
    zeroed = moe(x)
    moe.ablation = {}
    changed = (zeroed - base).abs().amax(-1) > 0
    assert torch.equal(changed, routed)
    # exact size of the change: minus the weighted output of expert e
    w_e = (seen["w"] * (seen["idx"] == e)).sum(-1, keepdim=True)
    y_e = moe.expert_output(x.reshape(-1, 16), e).view_as(x)
    torch.testing.assert_close(base - zeroed, w_e * y_e, atol=1e-6, rtol=1e-5)
    # mean ablation: the output of e becomes the given vector
    mean = torch.randn(16)
    moe.ablation = {e: mean}
    meaned = moe(x)
    moe.ablation = {}
    torch.testing.assert_close(meaned - zeroed, w_e * mean, atol=1e-6, rtol=1e-5)


def test_ablate_experts_context_in_model_and_restores_on_error():
    torch.manual_seed(9)
    model = make_model(n_experts=8, k=2, d_expert=8)
    tokens = torch.randint(0, 40, (2, 12))
    base, cache = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_expert_indices")
    idx = cache["expert_indices", 1]
    e = int(idx[0, 0, 0])
    routed = (idx == e).any(-1)
    _, c0 = model.run_with_cache(tokens, names_filter="blocks.1.hook_mlp_out")
    with ablate_experts(model, {1: [e]}):
        _, c1 = model.run_with_cache(tokens, names_filter="blocks.1.hook_mlp_out")
    changed = (c1["mlp_out", 1] - c0["mlp_out", 1]).abs().amax(-1) > 0
    assert torch.equal(changed, routed)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_experts(model, {0: [1, 2]}):
            raise RuntimeError("boom")
    assert all(not m.ablation for m in moe_layers(model).values())
    torch.testing.assert_close(model(tokens), base)
    with pytest.raises(ValueError, match="expert 99"):
        with ablate_experts(model, {0: [99]}):
            pass
    with pytest.raises(ValueError, match="no MoE"):
        with ablate_experts(model, {5: [0]}):
            pass


def test_mean_ablation_with_expert_means():
    torch.manual_seed(10)
    model = make_model(n_experts=4, k=1, d_expert=8)
    tokens = torch.randint(0, 40, (3, 12))
    means = expert_means(model, [tokens])
    assert means[0].shape == (4, 32)
    # the means are what they say: average output of each expert on its tokens
    _, cache = model.run_with_cache(
        tokens, names_filter=["blocks.0.hook_mlp_in", "blocks.0.mlp.hook_expert_indices"]
    )
    x, idx = cache["mlp_in", 0].reshape(-1, 32), cache["expert_indices", 0].reshape(-1)
    moe = moe_layers(model)[0]
    for e in idx.unique().tolist():
        want = moe.expert_output(x[idx == e], e).mean(0)
        torch.testing.assert_close(means[0][e], want, atol=1e-6, rtol=1e-5)
    # k=1 and normalised weights: mean-ablating every expert makes the layer's
    # output the mean of the chosen expert
    with ablate_experts(model, {0: range(4)}, mode="mean", means=means):
        _, c = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_out")
    torch.testing.assert_close(c["mlp_out", 0].reshape(-1, 32), means[0][idx])


def test_force_routing_and_hooks_removed_on_error():
    torch.manual_seed(11)
    model = make_model(n_experts=8, k=2, d_expert=8)
    tokens = torch.randint(0, 40, (2, 6))
    base = model(tokens)
    with force_routing(model, {0: [3, 5]}):
        _, cache = model.run_with_cache(tokens, names_filter="*hook_expert_*")
    assert (cache["expert_indices", 0] == torch.tensor([3, 5])).all()
    assert not (cache["expert_indices", 1] == torch.tensor([3, 5])).all()
    # forcing to what the router chose anyway changes nothing
    with force_routing(model, {0: lambda idx: idx, 1: lambda idx: idx}):
        torch.testing.assert_close(model(tokens), base)
    with pytest.raises(RuntimeError, match="boom"):
        with force_routing(model, {1: [0, 1]}):
            raise RuntimeError("boom")
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
    with pytest.raises(ValueError, match="experts must be in"):
        with force_routing(model, {0: [0, 8]}):
            model(tokens)


def test_active_params_count_k_experts():
    model = make_model(n_experts=16, k=4, d_expert=8)
    per_expert = 3 * 32 * 8
    assert model.num_params() - model.num_params(active=True) == 2 * 12 * per_expert
    dense = Transformer(
        ModelConfig(
            vocab_size=40,
            d_model=32,
            n_layers=2,
            n_heads=4,
            max_seq_len=32,
            ffn=FFNConfig(kind="dense", d_ff=4 * 8),
        )
    )
    router = 2 * 32 * 16
    assert model.num_params(active=True) == dense.num_params() + router


def test_init_follows_backbone_convention():
    torch.manual_seed(12)
    model = make_model(n_experts=16, k=2, d_expert=32)
    moe = moe_layers(model)[0]
    std = model.cfg.init_std
    assert moe.W_in.weight.std().item() == pytest.approx(std, rel=0.05)
    assert moe.W_out.weight.std().item() == pytest.approx(std / math.sqrt(4), rel=0.05)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.ffn\.moe\.k"):
        make_model(n_experts=4, k=5)
    with pytest.raises(ConfigError, match=r"model\.ffn\.moe\.router"):
        make_model(router="noisy")
    with pytest.raises(ConfigError, match=r"sparsity_weight"):
        make_model(sparsity_weight=0.1)
    with pytest.raises(ConfigError, match=r"load_balance_weight"):
        make_model(load_balance_weight=-1.0)


@pytest.mark.parametrize("router", ["softmax", "relu"])
def test_model_trains_and_round_trips(tmp_path, router):
    torch.manual_seed(13)
    kw = dict(n_experts=8, k=2, d_expert=16, n_shared_experts=1)
    if router == "relu":
        kw.update(router="relu", expert_activation="relu", sparsity_weight=0.01)
        kw.update(normalize_weights=False)
    model = make_model(**kw)
    # a learnable stream: each sequence counts up modulo the vocabulary
    start = torch.randint(0, 40, (16, 1))
    tokens = (start + torch.arange(16)) % 40
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        logits = model(tokens)
        lm = F.cross_entropy(logits[:, :-1].reshape(-1, 40), tokens[:, 1:].reshape(-1))
        aux = model.aux_losses()
        assert set(aux) >= {"aux/load_balance", "aux/router_z"}
        loss = lm + sum(aux.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(lm.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    path = save_pretrained(model, tmp_path / "ckpt", metrics={"val_loss": losses[-1]})
    loaded = load_pretrained(path)
    assert isinstance(loaded.blocks[0].mlp, MoE)
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["eager", "grouped_mm"])
def test_parity_with_hf_mixtral_sparse_block(impl):
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    from transformers import MixtralConfig

    torch.manual_seed(14)
    moe = make_moe(32, n_experts=8, k=2, d_expert=16)
    cfg = MixtralConfig(
        hidden_size=32, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2
    )
    cfg._experts_implementation = impl
    hf = mixtral.MixtralSparseMoeBlock(cfg)
    with torch.no_grad():  # HF stores (E, out, in) with [gate; up] stacked
        hf.gate.weight.copy_(moe.W_router.weight)
        gate_up, down = mixtral_experts(moe.W_gate.weight, moe.W_in.weight, moe.W_out.weight)
        hf.experts.gate_up_proj.copy_(gate_up)
        hf.experts.down_proj.copy_(down)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(moe(x), hf(x), atol=1e-6, rtol=1e-5)
