"""Capability metrics on the skill suite, as a torchmetrics Metric (sums that reduce
correctly across processes).

Per skill, on answer tokens under teacher forcing: `accuracy` (share of answer
tokens predicted right by argmax), `exact_match` (share of examples whose every
answer token is right, which is exactly whether greedy decoding reproduces the
answer), `loss` (mean cross-entropy of answer tokens); for IOI also `logit_diff`
(logit of the indirect object minus logit of the subject at the answer position).
Overall: `val_loss` (mean cross-entropy over loss-masked tokens) and `perplexity`.
The same next-token cross-entropy is the training loss (`masked_lm_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric


def shifted_token_loss(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Cross-entropy of predicting input_ids[:, 1:] from logits[:, :-1]: (B, T-1)."""
    V = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, V).float(), input_ids[:, 1:].reshape(-1), reduction="none"
    ).view(input_ids.shape[0], -1)


def masked_lm_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """Mean next-token cross-entropy over tokens t with loss_mask[t] = 1 (t >= 1)."""
    nll = shifted_token_loss(logits, input_ids)
    w = loss_mask[:, 1:].to(nll.dtype)
    return (nll * w).sum() / w.sum().clamp(min=1)


class SkillMetrics(Metric):
    """Accumulates per-skill capability metrics over batches from training.data.collate.

    skill_names: index = skill id in the batch's `skill` column.
    ioi: (skill id of IOI, feature index of the indirect-object token id, feature
    index of the subject token id), or None when the suite has no IOI.
    """

    full_state_update = False

    def __init__(self, skill_names: list[str], ioi: tuple[int, int, int] | None = None):
        super().__init__()
        self.skill_names = list(skill_names)
        self.ioi = ioi
        n = max(len(skill_names), 1)
        for name in ("tok_correct", "tok_total", "tok_loss", "ex_correct", "ex_total"):
            self.add_state(name, default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("loss_sum", "loss_tokens", "ld_sum", "ld_count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, batch: dict[str, Tensor]) -> None:
        ids = batch["input_ids"]
        nll = shifted_token_loss(logits, ids)  # (B, T-1)
        lm = batch["loss_mask"][:, 1:].bool()
        self.loss_sum += nll[lm].double().sum()
        self.loss_tokens += lm.sum()
        if not self.skill_names:
            return
        ans = batch["answer_mask"][:, 1:].bool()
        skill = batch["skill"][:, 1:]
        correct = logits[:, :-1].argmax(-1) == ids[:, 1:]
        s = skill[ans]
        self.tok_correct.index_add_(0, s, correct[ans].double())
        self.tok_total.index_add_(0, s, torch.ones_like(s, dtype=torch.float64))
        self.tok_loss.index_add_(0, s, nll[ans].double())
        # Exact match per example: a row is one example, or in packed rows
        # (training.data.packing) each segment is; example_skill is (B,) or (B, K).
        ex_skill = batch["example_skill"].reshape(-1)
        K = ex_skill.numel() // ids.shape[0]
        example = torch.arange(ids.shape[0], device=ids.device)[:, None] * K
        if "segment_ids" in batch:
            example = example + batch["segment_ids"][:, 1:]
        example = example.expand_as(ans)[ans]  # the example of each answer token
        has_answer = torch.zeros_like(ex_skill, dtype=torch.bool).index_fill_(0, example, True)
        wrong = torch.zeros_like(has_answer).index_fill_(0, example[~correct[ans]], True)
        ex_ok = has_answer & ~wrong
        ex_skill = ex_skill[has_answer]
        self.ex_correct.index_add_(0, ex_skill, ex_ok[has_answer].double())
        self.ex_total.index_add_(0, ex_skill, torch.ones_like(ex_skill, dtype=torch.float64))
        if self.ioi is not None:
            ioi_id, f_io, f_s = self.ioi
            # the first answer token of each IOI example: predicted from position t-1
            is_ioi = ans & (skill == ioi_id)
            rows, cols = is_ioi.nonzero(as_tuple=True)
            if len(rows):
                feats = batch["features"][:, 1:]
                io, sub = feats[rows, cols, f_io], feats[rows, cols, f_s]
                ok = (io >= 0) & (sub >= 0)
                lg = logits[:, :-1][rows[ok], cols[ok]].float()
                diff = lg.gather(1, io[ok, None]) - lg.gather(1, sub[ok, None])
                self.ld_sum += diff.double().sum()
                self.ld_count += ok.sum()

    def compute(self) -> dict:
        val_loss = float(self.loss_sum / self.loss_tokens.clamp(min=1))
        out: dict = {"val_loss": val_loss, "perplexity": math.exp(min(val_loss, 50.0))}
        skills = {}
        for i, name in enumerate(self.skill_names):
            if self.tok_total[i] == 0:
                continue
            skills[name] = {
                "accuracy": float(self.tok_correct[i] / self.tok_total[i]),
                "exact_match": float(self.ex_correct[i] / self.ex_total[i].clamp(min=1)),
                "loss": float(self.tok_loss[i] / self.tok_total[i]),
            }
            if self.ioi is not None and i == self.ioi[0] and self.ld_count > 0:
                skills[name]["logit_diff"] = float(self.ld_sum / self.ld_count)
        if skills:
            out["skills"] = skills
        return out
