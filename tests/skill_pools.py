"""A hand-built pooled MoE whose router sends each skill to a pool of its own, and
batches on which the intact model is right on every answer token: the known answer
of the pooled router's tests and of the modularity scores (analysis.modularity).

Tokens: 0 pad, 1 <bos>, 2 .. 1 + n_skills the skills' cues, the rest content. One
layer, attention off (W_O = 0), so each token's FFN reads its own embedding. A cue's
embedding carries a direction of its own that the router maps to large logits on its
skill's experts (pool s = experts s*P .. s*P + P-1); every other token gives the
router nothing (uniform probabilities). From the cue on, the prefix mean is highest
on the cue's pool, so every later token of the sequence routes inside it.

The batches are the model's own greedy continuations of `<bos> cue c` (c a random
content token), so teacher-forced accuracy is 1 on every skill by construction; the
experts' outputs are scaled up so that re-routing a token changes its prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, Transformer

BOS = 1


def cue(skill: int) -> int:
    return 2 + skill


def skill_pool_model(n_skills: int = 4, pool: int = 2, router: str = "pooled", seed: int = 0):
    """A 1-layer MoE of n_skills * pool experts (k = pool) whose pooled router sends
    skill s to experts s * pool .. s * pool + pool - 1."""
    torch.manual_seed(seed)
    E, d_model, vocab = n_skills * pool, 32, 40
    moe = MoEConfig(n_experts=E, k=pool, d_expert=8, router=router, load_balance_weight=0.0)
    if router == "pooled":
        moe.pool_size = pool
    cfg = ModelConfig(
        vocab_size=vocab,
        d_model=d_model,
        n_layers=1,
        n_heads=4,
        max_seq_len=32,
        ffn=FFNConfig(kind="moe", moe=moe),
    )
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.blocks[0].attn.W_O.weight.zero_()
        model.W_E.weight[:, :n_skills] = 0.0  # the router's directions: cues only
        for s in range(n_skills):
            model.W_E.weight[cue(s), s] = 1.0
        w = model.blocks[0].mlp.W_router.weight  # (E, d_model)
        w.zero_()
        for s in range(n_skills):
            w[s * pool : (s + 1) * pool, s] = 10.0
        model.blocks[0].mlp.W_out.weight.mul_(100.0)  # the experts decide the prediction
        model.W_U.weight[: 2 + n_skills] = 0.0  # never predicts pad, <bos> or a cue
    return model


def pool_of(skill: int, pool: int = 2) -> list[int]:
    return list(range(skill * pool, (skill + 1) * pool))


def self_consistent_batches(
    model, n_skills: int = 4, per_skill: int = 8, new: int = 6, seed: int = 0
) -> list[dict[str, Tensor]]:
    """One batch per skill: `<bos> cue c` and the model's greedy continuation of `new`
    tokens (the answer), as training.data.collate lays them out."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.cfg.vocab_size
    batches = []
    for s in range(n_skills):
        content = torch.randint(2 + n_skills, vocab, (per_skill, 1), generator=g)
        prompt = torch.cat(
            [torch.full((per_skill, 1), BOS), torch.full((per_skill, 1), cue(s)), content], 1
        )
        ids = model.generate(prompt, max_new_tokens=new).tokens
        B, T = ids.shape
        answer = torch.zeros(B, T, dtype=torch.long)
        answer[:, prompt.shape[1] :] = 1
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones(B, T, dtype=torch.long),
                "loss_mask": answer.clone(),
                "answer_mask": answer,
                "skill": torch.full((B, T), s),
                "features": torch.full((B, T, 0), -1),
                "example_skill": torch.full((B,), s),
            }
        )
    return batches
