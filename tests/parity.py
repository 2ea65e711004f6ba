"""What the parity tests against outside formats (HF Llama and Mixtral, TransformerLens)
share: the backbone shapes, a model whose every parameter is random, a batch of random
tokens, and the check that HF's greedy generation equals ours."""

from __future__ import annotations

import dataclasses

import torch

from glassbox.archs import ModelConfig, Transformer

# The attention and embedding layouts a converter must get right; each test adds its FFN:
# ModelConfig(**BACKBONES["mha"], ffn=...).
BACKBONES = {
    # multi-head attention, untied embeddings
    "mha": dict(vocab_size=101, d_model=64, n_layers=2, n_heads=4),
    # grouped-query attention, tied embeddings, odd vocabulary
    "gqa_tied": dict(
        vocab_size=67, d_model=64, n_layers=3, n_heads=8, n_kv_heads=2, tie_embeddings=True
    ),
    # multi-query attention, another rotary base and epsilon, a shorter context
    "mqa": dict(
        vocab_size=257,
        d_model=48,
        n_layers=2,
        n_heads=6,
        n_kv_heads=1,
        rope_theta=500.0,
        norm_eps=1e-6,
        max_seq_len=64,
    ),
}


def random_model(cfg: ModelConfig, seed: int = 0, router_scale: float = 1.0) -> Transformer:
    """A model in eval mode whose every parameter is random: matrices at init_std
    0.08, norm weights 1 + 0.3 N(0, 1) (so a norm's output differs from x / rms(x) and
    a hook on the wrong side of a norm is caught), biases 0.1 N(0, 1), so that a
    swapped or dropped tensor in a conversion changes the logits. `router_scale`
    spreads a MoE's router logits (top-k choices far from ties)."""
    torch.manual_seed(seed)
    model = Transformer(dataclasses.replace(cfg, init_std=0.08))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(
                    1.0 + 0.3 * torch.randn_like(p)
                    if name.endswith(".w")
                    else 0.1 * torch.randn_like(p)
                )
            elif "W_router" in name:
                p.mul_(router_scale)
    return model.eval()


def random_tokens(cfg: ModelConfig, B: int = 3, T: int = 17, seed: int = 1) -> torch.Tensor:
    """(B, T) token ids drawn uniformly from the vocabulary."""
    return torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def greedy_equal(model, hf, prompts: list[list[int]], n_new: int):
    """Assert that HF's greedy generation of `n_new` tokens from the prompts, left-padded
    with an attention mask, equals `model.generate`'s; returns ours."""
    out = model.generate(prompts, max_new_tokens=n_new)
    T = max(map(len, prompts))
    x = torch.full((len(prompts), T), model.cfg.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for b, p in enumerate(prompts):
        x[b, T - len(p) :] = torch.tensor(p)
        mask[b, T - len(p) :] = 1
    theirs = hf.generate(
        x, attention_mask=mask, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
        pad_token_id=model.cfg.pad_token_id, eos_token_id=None,
    )  # fmt: skip
    assert torch.equal(out.tokens, theirs)
    return out
