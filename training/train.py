"""`glassbox train`: one run from a config to an exported checkpoint.

Run directory (run.out_dir):
    config.yaml          the resolved config of the run
    logs/                CSV and TensorBoard logs (Lightning loggers)
    checkpoints/         resumable Lightning checkpoints: last.ckpt and periodic step=N.ckpt
    checkpoint/          the exported checkpoint (docs/design.md's format), written at the end;
                         on code, with corpus_manifest.json (packages, versions, splits)

Everything that can be checked is checked before the run directory is touched (the
resume checkpoint, the data against the model), so a refused run writes nothing.
What a killed run left half-written (temporary checkpoint files, a half-exported
checkpoint) is tidied when the next run starts in the same directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf
from torch.utils.data import IterableDataset

from glassbox.archs.checkpoint import CONFIG, save_pretrained, shipped_dir
from glassbox.archs.config import ConfigError, ModelConfig
from glassbox.archs.errors import GlassboxError, one_line
from glassbox.archs.transformer import Transformer
from glassbox.archs.weight_sparsity import nonzero_params
from glassbox.archs.writes import (
    Output,
    OutputError,
    claim_output_dir,
    clean_interrupted_writes,
    disk_full,
    is_disk_full,
)
from glassbox.training.callbacks import (
    AtomicCheckpointIO,
    NaNGuard,
    ProgressLines,
    ResumeOptimSettings,
    Throughput,
    notice,
)
from glassbox.training.config import ExperimentConfig, parse_devices, to_dict
from glassbox.training.data.code import CODE_MANIFEST, code_manifest
from glassbox.training.data.packing import example_lengths
from glassbox.training.datamodule import SuiteDataModule
from glassbox.training.evaluate import evaluate_model, ioi_spec
from glassbox.training.module import LMModule

LIGHTNING_KEYS = {"state_dict", "global_step", "pytorch-lightning_version"}  # of a .ckpt
RUN_FILES = (CONFIG, "logs", "checkpoints", "checkpoint")  # what train writes in out_dir
TRAIN = Output("glassbox train")


def _precision(cfg: ExperimentConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def _resume_path(cfg: ExperimentConfig, ckpt_dir: Path) -> str | None:
    """The checkpoint run.resume names, checked to exist and to be a torch zip file."""
    r = cfg.run.resume
    if not r:
        return None
    path = ckpt_dir / "last.ckpt" if r == "last" else Path(r)
    if not path.is_file():
        raise ConfigError(
            "run.resume", r, f"no checkpoint at {path}; run.resume= (empty) starts afresh"
        )
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            "run.resume", r, f"{path} is not a torch checkpoint (truncated or another format)"
        )
    try:  # mmap: the tensors are not read
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - objects weights_only refuses: Lightning judges it
        return str(path)
    if not (isinstance(state, dict) and LIGHTNING_KEYS <= set(state)):
        raise ConfigError(
            "run.resume", r,
            f"{path} is a torch file but not a Lightning checkpoint of a run (no "
            f"{' or '.join(sorted(LIGHTNING_KEYS))}): resume from a run's checkpoints/*.ckpt",
        )  # fmt: skip
    return str(path)


def check_run_dir(out: Path) -> None:
    """OutputError unless `train` may write the run directory `out`: new, empty, or
    one it wrote before (its config.yaml is a run config); never a file, a folder
    whose config.yaml, logs/, checkpoints/ or checkpoint/ are someone else's, or the
    shipped checkpoints."""
    if out.exists() and not out.is_dir():
        raise OutputError(out, "is a file, not a folder: run.out_dir names the run's folder")
    # where it may write at all (a link to a folder elsewhere is fine: it is written into)
    claim_output_dir(os.path.realpath(out), TRAIN, protected=[shipped_dir()], force=True)
    ours = [n for n in RUN_FILES if (out / n).exists()]
    if ours and not _is_run_config(out / CONFIG):
        raise OutputError(
            out,
            f"holds {', '.join(ours)} that glassbox train did not write (its config.yaml "
            "is no run config): set run.out_dir to a new or empty folder, or an earlier run's",
        )


def _is_run_config(file: Path) -> bool:
    try:
        config = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and {"model", "run", "trainer"} <= set(config)


def _check_pack_length(cfg: ExperimentConfig, suite) -> None:
    """data.pack_length against the longest train example, before the Trainer starts."""
    train = suite.splits.get("train")
    if not cfg.data.pack_length or train is None or isinstance(train, IterableDataset):
        return
    longest = int(example_lengths(train).max(initial=0))
    if longest > cfg.data.pack_length:
        raise ConfigError(
            "data.pack_length",
            cfg.data.pack_length,
            f"must be >= {longest}, the longest train example",
        )


def _clamp_warmup(cfg: ExperimentConfig) -> ExperimentConfig:
    """A warm-up as long as the run (the default 100 with trainer.max_steps=20) is
    clamped to max_steps - 1, with a notice."""
    o, steps = cfg.optim, cfg.trainer.max_steps
    if o.warmup_steps < steps:
        return cfg
    clamped = max(steps - 1, 0)
    notice(
        f"optim.warmup_steps={o.warmup_steps} is not shorter than trainer.max_steps={steps}: "
        f"warm-up clamped to {clamped} steps"
    )
    return dataclasses.replace(cfg, optim=dataclasses.replace(o, warmup_steps=clamped))


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
    callbacks: list[L.Callback] = [
        periodic,
        NaNGuard(),
        throughput,
        ResumeOptimSettings(to_dict(cfg.optim)),
    ]
    if t.progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    else:
        callbacks.append(ProgressLines())  # a line per tenth of the run, with the time left
    loggers = []
    if "csv" in t.loggers:
        loggers.append(CSVLogger(out, name="logs", version=""))
    if "tensorboard" in t.loggers:
        loggers.append(TensorBoardLogger(out, name="logs", version="tb"))
    try:
        trainer = _trainer(t, cfg, out, callbacks, loggers)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:
        # the accelerator, devices or strategy asked for cannot run here: name the one
        # Lightning's message is about
        text = str(e).lower()
        key = next((k for k in ("strategy", "devices", "accelerator") if k in text), "accelerator")
        raise ConfigError(f"trainer.{key}", getattr(t, key), one_line(str(e))[:400]) from None
    return trainer, throughput


def _trainer(t, cfg: ExperimentConfig, out: Path, callbacks, loggers) -> L.Trainer:
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        max_time=timedelta(seconds=t.max_seconds) if t.max_seconds else None,
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        accelerator=t.accelerator,
        devices=parse_devices(t.devices),
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
    count (`trainer.cpu_threads`) is set for the run and restored after it. A full
    disk is one OutputError naming run.out_dir and its free space (checkpoints are
    written whole or not at all, so run.resume=last continues from the last one)."""
    threads = torch.get_num_threads()
    try:
        if cfg.trainer.cpu_threads:
            torch.set_num_threads(cfg.trainer.cpu_threads)
        return _train(cfg)
    except Exception as e:
        if not is_disk_full(e):
            raise
        kept = (
            "no checkpoint was left half-written (run.resume=last goes on from the last whole one)"
        )
        raise disk_full(cfg.run.out_dir, e, kept) from None
    finally:
        torch.set_num_threads(threads)


def _fit_model_config(cfg: ExperimentConfig, suite, longest: int) -> ModelConfig:
    """cfg.model with the tokenizer's vocabulary, the pad token and the run's name,
    checked to hold the vocabulary and the data's longest example."""
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
    if longest > model_cfg.max_seq_len:
        raise ConfigError(
            "model.max_seq_len",
            model_cfg.max_seq_len,
            f"must be >= {longest}, the longest example of the data",
        )
    return model_cfg


def _run_metrics(
    model: Transformer,
    tokens: int,
    suite,
    cfg: ExperimentConfig,
    trainer: L.Trainer,
    throughput: Throughput,
    seq_len: int,
) -> dict:
    """The metrics a trained checkpoint records: its evaluation, parameter counts and
    what training took (steps, `tokens`, FLOPs, throughput)."""
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
        # what ended training: max_steps, or max_seconds (fewer steps: the learning rate
        # and weight sparsity's schedules stop where they were), or an interruption
        "stopped": "max_steps"
        if trainer.global_step >= cfg.trainer.max_steps
        else "max_seconds"
        if cfg.trainer.max_seconds
        else "interrupted",
        "tokens": tokens,  # non-padding tokens, all processes
        "flops": model.flops_per_token(seq_len) * tokens,
        # tokens_per_second, flops_per_second, mfu, peak_flops, peak_source
        **throughput.summary(),
    }
    return metrics


def _train(cfg: ExperimentConfig) -> Path:
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    out = Path(cfg.run.out_dir)
    cfg = _clamp_warmup(cfg)
    check_run_dir(out)
    resume = _resume_path(cfg, out / "checkpoints")

    dm = SuiteDataModule(
        cfg.data, seed=cfg.run.seed, accumulate_grad_batches=cfg.trainer.accumulate_grad_batches
    )
    dm.setup()
    suite = dm.suite
    assert suite is not None
    longest = _longest(suite)
    model_cfg = _fit_model_config(cfg, suite, longest)
    _check_pack_length(cfg, suite)
    cfg = dataclasses.replace(cfg, model=model_cfg)

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

    # Checked: from here on the run directory is written.
    out.mkdir(parents=True, exist_ok=True)
    AtomicCheckpointIO.clean(out / "checkpoints")
    clean_interrupted_writes(out / "checkpoint")
    (out / CONFIG).write_text(OmegaConf.to_yaml(to_dict(cfg)))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume)
    except SIGTERMException:  # Lightning's is a SystemExit with no code: exit status 0
        raise GlassboxError(
            f"stopped by SIGTERM at step {trainer.global_step} of "
            f"{cfg.trainer.max_steps}, nothing exported (run.resume=last goes on from the "
            f"last .ckpt in {out / 'checkpoints'}, if one was saved)"
        ) from None

    model = getattr(module.model, "_orig_mod", module.model)  # unwrap torch.compile for export
    tokens = int(module.tokens_trained)
    metrics = _run_metrics(model, tokens, suite, cfg, trainer, throughput, seq_len)
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
        if cfg.data.source == "code":  # which packages, versions and splits it read
            (export / CODE_MANIFEST).write_text(json.dumps(code_manifest(cfg.data), indent=1))
    return export
