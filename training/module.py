"""The LightningModule: the training step around a plain `archs.Transformer`.

It holds nothing of the model's math: the loss is next-token cross-entropy on
loss-masked tokens plus whatever auxiliary losses the FFN slots report (load
balancing, z-loss, AuxK, ...), all logged. Right after every optimizer step the
model's `after_optimizer_step(step, max_steps)` runs: weight sparsity's pruning
(archs/weight_sparsity.py), then each FFN's hook (the FFN contract, archs/ffn.py:
unit-norm transcoder decoders). AdamW with linear warm-up and cosine decay; gradient
clipping and precision are the Trainer's.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from glassbox.archs.config import model_config_from_dict
from glassbox.archs.transformer import Transformer
from glassbox.training.callbacks import batch_tokens
from glassbox.training.skill_scores import SkillMetrics, masked_lm_loss


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> min_ratio
    at `total` steps, flat after."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LMModule(L.LightningModule):
    """model: a ModelConfig as a dict; optim: an OptimConfig as a dict; skill_names and
    ioi describe the validation data for per-skill metrics (see SkillMetrics)."""

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        max_steps: int,
        skill_names: list[str] | None = None,
        ioi: tuple[int, int, int] | None = None,
        val_split_names: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = Transformer(model_config_from_dict(model))
        self.optim_cfg = optim
        self.max_steps = max_steps
        self.val_split_names = val_split_names or ["val"]
        self.tokens_trained = 0  # non-padding tokens over all processes, kept across resumes
        self.val_metrics = torch.nn.ModuleList(
            SkillMetrics(skill_names or [], ioi) for _ in self.val_split_names
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Packed rows (training.data.packing): the model derives each example's
        # positions from the segment ids (bounded by the row: no check read back).
        logits = self.model(batch["input_ids"], segment_ids=batch.get("segment_ids"))
        lm = masked_lm_loss(logits, batch["input_ids"], batch["loss_mask"])
        aux = self.model.aux_losses()
        total = lm + sum(aux.values()) if aux else lm
        return total, {"lm_loss": lm, **aux}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts = self._loss(batch)
        B = batch["input_ids"].shape[0]
        self.tokens_trained += batch_tokens(batch) * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=B)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=B)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_trained"] = self.tokens_trained

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_trained = checkpoint.get("tokens_trained", 0)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Constraints kept after each update: weight sparsity at its scheduled density,
        # then each FFN's own (unit-norm transcoder decoders). global_step counts this
        # step only once optimizer_step has returned, hence the + 1.
        self.model.after_optimizer_step(self.trainer.global_step + 1, self.max_steps)

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ):
        logits = self.model(batch["input_ids"])
        self.val_metrics[dataloader_idx].update(logits, batch)

    def on_validation_epoch_end(self) -> None:
        for split, metric in zip(self.val_split_names, self.val_metrics):
            results = metric.compute()
            metric.reset()
            flat = {f"{split}/loss": results["val_loss"]}
            for skill, vals in results.get("skills", {}).items():
                for k, v in vals.items():
                    flat[f"{split}/{skill}/{k}"] = v
            self.log_dict(flat, prog_bar=False, add_dataloader_idx=False, sync_dist=False)
            if split == "val":
                self.log("val_loss", results["val_loss"], prog_bar=True)

    def configure_optimizers(self):
        o = self.optim_cfg
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": o["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(
            groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], fused=None
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: cosine_with_warmup(
                step, o["warmup_steps"], self.max_steps, o["min_lr_ratio"]
            ),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
