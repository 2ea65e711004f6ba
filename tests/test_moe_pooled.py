"""The pooled router (archs/routing.py, EMO style): causal pools, a KV cache that
routes as the full forward, packed rows, a hand-built pool per skill, its losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassbox.archs import (
    ConfigError,
    FFNConfig,
    ModelConfig,
    MoEConfig,
    Transformer,
    load_pretrained,
    save_pretrained,
)
from glassbox.archs.kv_cache import KVCache
from glassbox.archs.moe import MoE
from glassbox.archs.moe_interventions import remove_experts
from glassbox.archs.routing import PooledRouter
from tests.skill_pools import cue, pool_of, self_consistent_batches, skill_pool_model


def make_model(vocab=40, n_layers=2, **kw) -> Transformer:
    moe = dict(n_experts=8, k=2, d_expert=8, router="pooled", pool_size=4)
    cfg = ModelConfig(
        vocab_size=vocab,
        d_model=32,
        n_layers=n_layers,
        n_heads=4,
        max_seq_len=48,
        ffn=FFNConfig(kind="moe", moe=MoEConfig(**{**moe, **kw})),
    )
    return Transformer(cfg).eval()


def routed(model, tokens, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    names = [
        f"blocks.{i}.mlp.{h}" for i in range(2) for h in ("router.hook_pool", "hook_expert_indices")
    ]
    return model.run_with_cache(tokens, names_filter=names, **kw)


@pytest.mark.parametrize("pool_prefix,pool_gate", [(0, 0.0), (3, 0.0), (0, 1.0)])
def test_routing_never_reads_later_tokens(pool_prefix, pool_gate):
    torch.manual_seed(0)
    model = make_model(pool_prefix=pool_prefix, pool_gate=pool_gate)
    a = torch.randint(0, 40, (4, 20))
    b = a.clone()
    b[:, 10:] = torch.randint(0, 40, (4, 10))
    la, ca = routed(model, a)
    lb, cb = routed(model, b)
    for name in ca:
        assert torch.equal(ca[name][:, :10], cb[name][:, :10]), name
    torch.testing.assert_close(la[:, :10], lb[:, :10], rtol=0, atol=1e-6)
    # the change did reach the routing after it (else this test could not fail)
    assert not torch.equal(
        ca["blocks.1.mlp.hook_expert_indices"], cb["blocks.1.mlp.hook_expert_indices"]
    )
    if pool_prefix == 0:
        assert not torch.equal(
            ca["blocks.0.mlp.router.hook_pool"], cb["blocks.0.mlp.router.hook_pool"]
        )
    else:  # the pool is fixed once the first pool_prefix tokens are read
        pools = ca["blocks.0.mlp.router.hook_pool"]
        assert torch.equal(
            pools[:, pool_prefix - 1 :],
            pools[:, pool_prefix - 1 :][:, :1].expand_as(pools[:, pool_prefix - 1 :]),
        )


def incremental_logits(model, tokens, mask, prompt_len, forget=False):
    """Logits of the prompt in one pass with a KV cache, then one token per pass, as
    archs.generation.generate runs (forget: the cache drops the routing carry)."""
    B, T = tokens.shape
    cache = KVCache.empty(model.cfg, B, T, tokens.device, torch.float32)
    parts = [model(tokens[:, :prompt_len], attention_mask=mask[:, :prompt_len], cache=cache)]
    for t in range(prompt_len, T):
        if forget:
            cache.routing = [{} for _ in cache.routing]
        parts.append(model(tokens[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache))
    return torch.cat(parts, 1)


@pytest.mark.parametrize("pool_prefix,pool_gate", [(0, 0.0), (3, 0.0), (0, 1.0)])
def test_kv_cache_generation_equals_full_forward(pool_prefix, pool_gate):
    torch.manual_seed(1)
    model = make_model(pool_prefix=pool_prefix, pool_gate=pool_gate)
    prompts = [torch.randint(0, 40, (n,)).tolist() for n in (3, 7, 5)]  # left-padded
    out = model.generate(prompts, max_new_tokens=10)
    T0 = max(map(len, prompts))
    mask = torch.zeros_like(out.tokens)
    for i, p in enumerate(prompts):
        mask[i, T0 - len(p) :] = 1
    full = model(out.tokens, attention_mask=mask)
    inc = incremental_logits(model, out.tokens, mask, T0)
    real = mask.bool()
    torch.testing.assert_close(inc[real], full[real], rtol=1e-5, atol=1e-5)
    # greedy generation took the full forward's argmax at every new token
    assert torch.equal(full[:, T0 - 1 : -1].argmax(-1), out.tokens[:, T0:])
    # a cache without the routing carry routes otherwise (so this test can fail)
    forgot = incremental_logits(model, out.tokens, mask, T0, forget=True)
    assert not torch.allclose(forgot[real], full[real], atol=1e-3)


def test_packed_rows_route_as_each_sequence_alone():
    torch.manual_seed(2)
    model = make_model()
    a, b = torch.randint(0, 40, (1, 9)), torch.randint(0, 40, (1, 6))
    packed = torch.cat([a, b], 1)
    seg = torch.cat([torch.zeros(1, 9), torch.ones(1, 6)], 1).long()
    _, cp = routed(model, packed, segment_ids=seg)
    _, ca = routed(model, a)
    _, cb = routed(model, b)
    for name in cp:
        assert torch.equal(cp[name], torch.cat([ca[name], cb[name]], 1)), name


def test_hand_built_router_sends_each_skill_to_its_own_pool():
    model = skill_pool_model(n_skills=4, pool=2)
    batches = self_consistent_batches(model, n_skills=4)
    for s, batch in enumerate(batches):
        ids = batch["input_ids"]
        assert (ids[:, 1] == cue(s)).all() and not ((ids[:, 2:] >= 2) & (ids[:, 2:] < 6)).any()
        _, cache = model.run_with_cache(
            ids, names_filter=["blocks.0.mlp.router.hook_pool", "blocks.0.mlp.hook_expert_indices"]
        )
        pools = cache["blocks.0.mlp.router.hook_pool"][:, 1:].sort(-1).values  # from the cue on
        assert (pools == torch.tensor(pool_of(s))).all()
        experts = cache["blocks.0.mlp.hook_expert_indices"][:, 1:].sort(-1).values
        assert (experts == torch.tensor(pool_of(s))).all()


def test_removed_experts_are_never_chosen():
    torch.manual_seed(3)
    model = make_model()
    tokens = torch.randint(0, 40, (3, 12))
    with remove_experts(model, {0: [0, 1, 2, 3], 1: [1, 3, 5, 6, 7]}):
        _, cache = routed(model, tokens)
        gone = torch.arange(4)
        assert not torch.isin(cache["blocks.0.mlp.hook_expert_indices"], gone).any()
        assert not torch.isin(cache["blocks.0.mlp.router.hook_pool"], gone).any()
        # 3 left for a pool of 4: the pool holds a removed expert, no token chooses it
        gone = torch.tensor([1, 3, 5, 6, 7])
        assert not torch.isin(cache["blocks.1.mlp.hook_expert_indices"], gone).any()
    assert model.blocks[0].mlp.removed == frozenset()
    with pytest.raises(ValueError, match="fewer than k=2"):
        with remove_experts(model, {0: range(7)}):
            pass
    assert model.blocks[0].mlp.removed == frozenset()


def test_pool_losses_closed_form():
    moe = MoE(
        16,
        FFNConfig(
            kind="moe",
            moe=MoEConfig(
                n_experts=8,
                k=2,
                d_expert=8,
                router="pooled",
                pool_size=4,
                pool_balance_weight=1.0,
                pool_leak_weight=1.0,
            ),
        ),
    )
    with torch.no_grad():
        moe.W_router.weight.zero_()  # uniform probabilities: 1/8 each
    moe.train()
    moe(torch.randn(2, 5, 16))
    aux = moe.aux_losses
    # leak: the probability outside a pool of 4 of 8 uniform experts
    assert aux["pool_leak"][1].item() == pytest.approx(0.5)
    # balance: E * sum_e f_e / E = 1 whatever the pools, with uniform probabilities
    assert aux["pool_balance"][1].item() == pytest.approx(1.0)
    # concentrated: every pool is {0..3}, the probability all on 0..3: E * 1/4 * ... = 2
    logits = torch.full((1, 3, 8), -30.0)
    logits[..., :4] = 0.0
    router = moe.router
    router.route(logits, torch.zeros(1, 3, 16), moe.expert_input_weight())
    losses = router.aux_losses(logits)
    assert losses["pool_balance"][1].item() == pytest.approx(2.0, rel=1e-6)
    assert losses["pool_leak"][1].item() == pytest.approx(0.0, abs=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.ffn\.moe\.pool_size"):
        make_model(pool_size=1)  # below k
    with pytest.raises(ConfigError, match=r"model\.ffn\.moe\.pool_size"):
        make_model(pool_size=9)  # above n_experts
    with pytest.raises(ConfigError, match=r"pool_size.*only applies to moe.router=pooled"):
        make_model(router="softmax")
    with pytest.raises(ConfigError, match=r"pool_prefix"):
        make_model(pool_prefix=-1)


def test_model_trains_and_round_trips(tmp_path):
    torch.manual_seed(13)
    model = make_model(pool_balance_weight=0.01, pool_leak_weight=0.01, pool_gate=1.0).train()
    start = torch.randint(0, 40, (16, 1))
    tokens = (start + torch.arange(16)) % 40  # each sequence counts up
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        logits = model(tokens)
        lm = F.cross_entropy(logits[:, :-1].reshape(-1, 40), tokens[:, 1:].reshape(-1))
        aux = model.aux_losses()
        assert set(aux) >= {"aux/pool_balance", "aux/pool_leak", "aux/router_z"}
        opt.zero_grad()
        (lm + sum(aux.values())).backward()
        opt.step()
        losses.append(lm.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    path = save_pretrained(model, tmp_path / "ckpt", metrics={"val_loss": losses[-1]})
    loaded = load_pretrained(path)
    assert isinstance(loaded.blocks[0].mlp.router, PooledRouter)
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


def test_pool_gate_sends_the_loss_to_the_prefix_routing():
    torch.manual_seed(4)
    for gate, reaches in ((0.0, False), (1.0, True)):
        moe = MoE(
            16,
            FFNConfig(
                kind="moe",
                moe=MoEConfig(
                    n_experts=8, k=2, d_expert=8, router="pooled", pool_size=4, pool_gate=gate
                ),
            ),
        )
        x = torch.randn(1, 6, 16)
        logits = moe.W_router(x).float().detach().requires_grad_()
        gates, _ = moe.router.route(logits, x, moe.expert_input_weight())
        gates[0, -1].square().sum().backward()  # a loss on the last token's gates
        assert bool(logits.grad[0, :-1].abs().sum() > 0) is reaches
