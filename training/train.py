"""`glassbox train`: one run from a config to an exported checkpoint.

Run directory (run.out_dir):
    config.yaml          the resolved config of the run
    logs/                CSV and TensorBoard logs (Lightning loggers)
    checkpoints/         resumable Lightning checkpoints: last.ckpt and periodic step=N.ckpt
    checkpoint/          the exported checkpoint (DESIGN.md format), written at the end
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf
from torch.utils.data import IterableDataset

from glassbox.archs.checkpoint import save_pretrained
from glassbox.archs.config import ConfigError
from glassbox.archs.weight_sparsity import nonzero_params
from glassbox.training.callbacks import AtomicCheckpointIO, NaNGuard, Throughput
from glassbox.training.config import ExperimentConfig, to_dict
from glassbox.training.datamodule import SuiteDataModule
from glassbox.training.evaluate import evaluate_model, ioi_spec
from glassbox.training.module import LMModule


def _precision(cfg: ExperimentConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def _devices(spec: str) -> Any:
    if spec == "auto":
        return "auto"
    if "," in spec:
        return [int(d) for d in spec.split(",") if d.strip()]
    try:
        return int(spec)
    except ValueError:
        raise ConfigError(
            "trainer.devices", spec, 'auto, a count ("2") or a list ("0,1")'
        ) from None


def _resume_path(cfg: ExperimentConfig, ckpt_dir: Path) -> str | None:
    r = cfg.run.resume
    if not r:
        return None
    path = ckpt_dir / "last.ckpt" if r == "last" else Path(r)
    if not path.is_file():
        raise ConfigError("run.resume", r, f"no checkpoint at {path}")
    return str(path)


def build_trainer(
    cfg: ExperimentConfig, out: Path, flops_per_token: float
) -> tuple[L.Trainer, Throughput]:
    t = cfg.trainer
    throughput = Throughput(flops_per_token)
    periodic = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step={step}",
        auto_insert_metric_name=False,
        every_n_train_steps=t.checkpoint_every_n_steps,
        save_last=True,
        # "step" as the monitored value keeps the newest keep_checkpoints files.
        monitor="step",
        mode="max",
        save_top_k=t.keep_checkpoints,
    )
    callbacks: list[L.Callback] = [periodic, NaNGuard(), throughput]
    if t.progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    loggers = []
    if "csv" in t.loggers:
        loggers.append(CSVLogger(out, name="logs", version=""))
    if "tensorboard" in t.loggers:
        loggers.append(TensorBoardLogger(out, name="logs", version="tb"))
    trainer = L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        accelerator=t.accelerator,
        devices=_devices(t.devices),
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=_precision(cfg),  # type: ignore[arg-type]
        gradient_clip_val=t.gradient_clip_val or None,
        accumulate_grad_batches=t.accumulate_grad_batches,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the ResumableSampler shards by rank itself
        enable_progress_bar=t.progress_bar,
        enable_model_summary=t.progress_bar,
        deterministic=t.deterministic,
        default_root_dir=out,
    )
    return trainer, throughput


def _longest(suite) -> int:
    """Longest row over the map-style splits (streamed text has fixed-size blocks)."""
    lengths = [
        max(map(len, ds["input_ids"]), default=0)
        for ds in suite.splits.values()
        if not isinstance(ds, IterableDataset)
    ]
    return max(lengths, default=0)


def train(cfg: ExperimentConfig) -> Path:
    """Train per `cfg`; returns the exported checkpoint directory. torch's thread
    count (`trainer.cpu_threads`) is set for the run and restored after it."""
    threads = torch.get_num_threads()
    try:
        if cfg.trainer.cpu_threads:
            torch.set_num_threads(cfg.trainer.cpu_threads)
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: ExperimentConfig) -> Path:
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    dm = SuiteDataModule(
        cfg.data, seed=cfg.run.seed, accumulate_grad_batches=cfg.trainer.accumulate_grad_batches
    )
    dm.setup()
    suite = dm.suite
    assert suite is not None
    vocab = suite.tokenizer.get_vocab_size()
    if 0 < cfg.model.vocab_size < vocab:
        raise ConfigError(
            "model.vocab_size", cfg.model.vocab_size, f"0 or >= the tokenizer's {vocab}"
        )
    model_cfg = dataclasses.replace(
        cfg.model,
        vocab_size=cfg.model.vocab_size or vocab,
        pad_token_id=suite.pad_id,
        name=cfg.run.name,
    )
    longest = _longest(suite)
    if longest > model_cfg.max_seq_len:
        raise ConfigError(
            "model.max_seq_len",
            model_cfg.max_seq_len,
            f"must be >= {longest}, the longest example of the data",
        )
    cfg = dataclasses.replace(cfg, model=model_cfg)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(to_dict(cfg)))

    module = LMModule(
        model=to_dict(model_cfg),
        optim=to_dict(cfg.optim),
        max_steps=cfg.trainer.max_steps,
        skill_names=suite.skill_names,
        ioi=ioi_spec(suite),
        val_split_names=dm.val_split_names,
    )
    if cfg.trainer.compile:
        module.model = torch.compile(module.model)  # type: ignore[assignment]
    seq_len = min(model_cfg.max_seq_len, max(longest, 1))
    trainer, throughput = build_trainer(cfg, out, module.model.flops_per_token(seq_len))
    trainer.fit(module, datamodule=dm, ckpt_path=_resume_path(cfg, out / "checkpoints"))

    model = getattr(module.model, "_orig_mod", module.model)  # unwrap torch.compile for export
    tokens = int(module.tokens_trained)
    metrics = evaluate_model(
        model, suite, batch_size=cfg.data.batch_size, max_batches=cfg.run.eval_max_batches
    )
    metrics["params"] = {
        "total": model.num_params(),
        "active": model.num_params(active=True),
        "nonzero": nonzero_params(model),  # what a weight-sparse model is matched on
    }
    metrics["train"] = {
        "steps": trainer.global_step,
        "tokens": tokens,  # non-padding tokens, all processes
        "flops": model.flops_per_token(seq_len) * tokens,
        # tokens_per_second, flops_per_second, mfu, peak_flops, peak_source
        **throughput.summary(),
    }
    export = out / "checkpoint"
    if trainer.is_global_zero:
        model.tokenizer = suite.tokenizer
        save_pretrained(
            model,
            export,
            metrics=metrics,
            extra_config={
                k: to_dict(getattr(cfg, k)) for k in ("data", "optim", "trainer", "run", "tools")
            },
        )
    return export
