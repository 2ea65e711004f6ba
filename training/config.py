"""Run configuration: model, data, optimiser, trainer and run sections, each a typed
dataclass checked by omegaconf.

A run config is a YAML file. It may compose parts from configs/<group>/<name>.yaml
with a `defaults:` list (Hydra's spelling), then set keys of its own; `key=value`
overrides on the command line come last:

    defaults:
      - model: dense        # configs/model/dense.yaml -> the model: section
      - data: skills
    trainer:
      max_steps: 2000

A part may itself start from other parts of its group, with a `defaults:` list of
their names (Hydra's spelling); they are merged first, in order, then the part's own
keys. Every configs/model/*.yaml starts from configs/model/base.yaml, the backbone:

    defaults:
      - base                # configs/model/base.yaml: d_model, n_layers, heads, ...
    ffn:
      kind: moe

Any unknown key, wrong type or impossible combination raises `ConfigError` with one
line naming the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from glassbox.archs.config import ConfigError, ModelConfig, validate_model_config
from glassbox.archs.errors import check_fraction, check_non_negative, check_positive, one_line
from glassbox.archs.tools.config import ToolsConfig, validate_tools_config
from glassbox.training.data import DataConfig, validate_data_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class OptimConfig:
    lr: float = 3e-3  # peak learning rate (AdamW); on resume the config's value applies
    weight_decay: float = 0.1  # decoupled weight decay on >=2-D weights (not norms, not biases)
    beta1: float = 0.9  # in [0, 1)
    beta2: float = 0.95  # in [0, 1)
    eps: float = 1e-8  # > 0
    # linear warm-up from 0 to lr; one as long as the run or longer is clamped to
    # trainer.max_steps - 1 with a notice
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at trainer.max_steps


@dataclass
class TrainerConfig:
    max_steps: int = 2000  # optimizer steps
    val_every_n_steps: int = 250  # validation (and per-skill metrics) interval
    limit_val_batches: int = 20  # validation batches per split per check (0: no validation)
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps | tpu
    devices: str = "auto"  # auto, a count ("2"; "-1": all) or a list of indices ("0,1")
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed... (Lightning's strategies)
    precision: str = "auto"  # auto: bf16-mixed on a GPU that has it, else 32-true
    gradient_clip_val: float = 1.0  # clip the global gradient norm (0 disables)
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 500  # resumable Lightning checkpoints (last + periodic)
    # periodic checkpoints kept besides last.ckpt; -1 keeps every one (a run read along
    # its training: glassbox matched-loss)
    keep_checkpoints: int = 2
    progress_bar: bool = True
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])  # csv | tensorboard
    cpu_threads: int = 0  # torch CPU threads (0: torch's default); small models are fastest on 1
    compile: bool = False  # torch.compile the model
    # stop training after this many seconds (0: no limit); the run then ends as at
    # max_steps (validated, exported), and metrics.json's train.stopped says which came first
    max_seconds: float = 0.0
    deterministic: bool = False  # torch deterministic algorithms


@dataclass
class RunConfig:
    name: str = "dense"  # label for logs, the model card and the report
    out_dir: str = "runs/dense"  # run directory: logs/, checkpoints/, checkpoint/ (exported)
    seed: int = 0  # seeds model init and data order (0 .. 2**32 - 1)
    # "" start fresh | "last" (out_dir/checkpoints/last.ckpt) | a .ckpt path. The optim
    # settings of this config apply to the resumed run (not the checkpoint's).
    resume: str = ""
    eval_max_batches: int = 50  # batches per split in the final evaluation (0 = all)


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)


SECTIONS = ("model", "data", "optim", "trainer", "run", "tools")  # ExperimentConfig's
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "64-true")
LOGGERS = ("csv", "tensorboard")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range


def _describe(e: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(e, "full_key", None) or "?"
    if isinstance(e, ConfigKeyError):
        parent, _, leaf = key.rpartition(".")
        schema = OmegaConf.structured(ExperimentConfig)
        try:
            node = OmegaConf.select(schema, parent) if parent else schema
            allowed = ", ".join(node.keys()) if isinstance(node, DictConfig) else "?"
        except OmegaConfBaseException:
            allowed = "?"
        return ConfigError(key, leaf, f"unknown key (in {source}); keys here: {allowed}")
    if isinstance(e, ValidationError):
        value = getattr(e, "value", None)
        msg = str(e).splitlines()[0]
        return ConfigError(key, value, f"{msg} (in {source})")
    return ConfigError(key, None, f"{str(e).splitlines()[0]} (in {source})")


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _describe(e, source) from None


def load_yaml_file(path: Path) -> DictConfig:
    """A config file as a non-empty YAML mapping; ConfigError (one line: the file, the
    line and what is wrong) for a missing file, bad YAML, a duplicate key, a list."""
    if not path.is_file():
        raise ConfigError("config", str(path), "no such file")
    try:
        cfg = OmegaConf.load(path)
    except yaml.MarkedYAMLError as e:  # syntax, a duplicate key
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            "config", str(path), f"not valid YAML: {e.problem or one_line(str(e))}{where}"
        ) from None
    except Exception as e:  # another YAML error, bytes that are not text
        raise ConfigError(
            "config", str(path), f"not valid YAML: {one_line(str(e))[:200]}"
        ) from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError("config", str(path), "must be a YAML mapping of sections")
    if len(cfg) == 0:
        raise ConfigError(
            "config",
            str(path),
            "is empty (or only comments): a run config sets at least one section, "
            "e.g. `defaults: [{model: dense}]`; configs/dense.yaml is a complete one",
        )
    return cfg


def _resolve_defaults(raw: DictConfig, path: Path) -> DictConfig:
    """Expand a `defaults:` list into sections loaded from configs/<group>/<name>.yaml."""
    composed = OmegaConf.create({})
    defaults = raw.pop("defaults", [])
    for entry in defaults:
        if not isinstance(entry, DictConfig) or len(entry) != 1:
            raise ConfigError("defaults", entry, f"entries are `- group: name` (in {path})")
        group, name = next(iter(entry.items()))
        if group not in SECTIONS:
            raise ConfigError(
                f"defaults.{group}",
                name,
                f"unknown group {group!r}: a group is a section ({', '.join(SECTIONS)})",
            )
        composed = OmegaConf.merge(composed, {group: _load_part(str(group), name, path)})
    return OmegaConf.merge(composed, raw)  # type: ignore[return-value]


def _load_part(group: str, name: Any, path: Path, chain: tuple[str, ...] = ()) -> DictConfig:
    """configs/<group>/<name>.yaml (beside the run config `path` first, then the
    package's), on top of the parts its own `defaults:` list names (same group)."""
    if name in chain:
        cycle = " -> ".join([*chain, str(name)])
        raise ConfigError(f"defaults.{group}", name, f"a part that includes itself: {cycle}")
    file = None
    for root in (path.parent, CONFIG_DIR):
        if (root / group / f"{name}.yaml").is_file():
            file = root / group / f"{name}.yaml"
            break
    if file is None:
        choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        raise ConfigError(f"defaults.{group}", name, f"one of {', '.join(choices) or '(none)'}")
    part = load_yaml_file(file)
    bases = part.pop("defaults", None) or []
    if not isinstance(bases, (list, ListConfig)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            "defaults", bases, f"a part's defaults are names of parts of its group (in {file})"
        )
    composed = OmegaConf.create({})
    for base in bases:
        composed = _merge(composed, _load_part(group, base, path, (*chain, str(name))), str(file))
    return _merge(composed, part, str(file))


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Schema defaults <- the YAML file (with its defaults list) <- key=value overrides.

    Returns a checked ExperimentConfig; raises ConfigError (one line) on any problem.
    """
    cfg = OmegaConf.structured(ExperimentConfig)
    if path is not None:
        path = Path(path)
        cfg = _merge(cfg, _resolve_defaults(load_yaml_file(path), path), str(path))
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                "override", item, "overrides are key=value, e.g. trainer.max_steps=200"
            )
        try:
            parsed = OmegaConf.from_dotlist([f"{key}={value}"])
        except Exception as e:  # omegaconf's grammar errors and yaml's
            raise ConfigError(
                key, value, f"cannot parse the value: {one_line(str(e))[:160]}"
            ) from None
        if key.strip() in SECTIONS and not value.strip().startswith("{"):
            raise ConfigError(
                key,
                value,
                f"is a section: set its keys ({key}.<key>=value), or pick a part in the "
                f"config's defaults list (- {key}: {value})",
            )
        cfg = _merge(cfg, parsed, "command line")
    try:
        exp: ExperimentConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise _describe(e, "config") from None
    validate(exp)
    return exp


# The longest packed train row: its block-diagonal attention mask is (pack_length, pack_length).
MAX_PACK_LENGTH = 16384


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError (one line: key, value, what is allowed) for any value that
    cannot work. A warm-up as long as the run is not refused: train() clamps it."""
    validate_model_config(cfg.model, "model")
    validate_data_config(cfg.data, "data")
    if cfg.data.pack_length > MAX_PACK_LENGTH:
        raise ConfigError(
            "data.pack_length",
            cfg.data.pack_length,
            f"must be <= {MAX_PACK_LENGTH}: a packed row's attention mask holds pack_length² "
            "entries (each example in it keeps its own positions, so a row may be longer "
            "than model.max_seq_len)",
        )
    validate_tools_config(cfg.tools, "tools")
    o, t, r = cfg.optim, cfg.trainer, cfg.run
    check_positive("optim.lr", o.lr)
    check_non_negative("optim.weight_decay", o.weight_decay)
    check_fraction("optim.beta1", o.beta1)
    check_fraction("optim.beta2", o.beta2)
    check_positive("optim.eps", o.eps)
    check_fraction("optim.min_lr_ratio", o.min_lr_ratio, closed_high=True)
    if o.warmup_steps < 0:
        raise ConfigError("optim.warmup_steps", o.warmup_steps, "must be >= 0 (0: no warm-up)")
    for key in (
        "max_steps",
        "val_every_n_steps",
        "checkpoint_every_n_steps",
        "log_every_n_steps",
        "accumulate_grad_batches",
        "num_nodes",
    ):
        if getattr(t, key) <= 0:
            raise ConfigError(f"trainer.{key}", getattr(t, key), "must be a positive integer")
    if t.limit_val_batches < 0:
        raise ConfigError("trainer.limit_val_batches", t.limit_val_batches, "must be >= 0")
    if t.keep_checkpoints < -1:
        raise ConfigError("trainer.keep_checkpoints", t.keep_checkpoints, ">= 0, or -1: all")
    check_non_negative("trainer.gradient_clip_val", t.gradient_clip_val, " (0 disables)")
    check_non_negative("trainer.max_seconds", t.max_seconds, " (0: no limit)")
    if t.precision not in PRECISIONS:
        raise ConfigError("trainer.precision", t.precision, f"one of {', '.join(PRECISIONS)}")
    if t.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", t.accelerator, f"one of {', '.join(ACCELERATORS)}")
    parse_devices(t.devices)
    if not t.strategy.strip():
        raise ConfigError("trainer.strategy", t.strategy, "auto, or a Lightning strategy name")
    if t.cpu_threads < 0:
        raise ConfigError(
            "trainer.cpu_threads", t.cpu_threads, "0 (torch's default) or a positive count"
        )
    for lg in t.loggers:
        if lg not in LOGGERS:
            raise ConfigError("trainer.loggers", lg, f"each one of {', '.join(LOGGERS)}")
    if not 0 <= r.seed <= MAX_SEED:
        raise ConfigError("run.seed", r.seed, f"must be in 0..{MAX_SEED}")
    if not r.out_dir.strip():
        raise ConfigError("run.out_dir", r.out_dir, "a directory path, e.g. runs/dense")
    if r.eval_max_batches < 0:
        raise ConfigError("run.eval_max_batches", r.eval_max_batches, "must be >= 0 (0 = all)")
    if r.resume not in ("", "last") and not r.resume.endswith(".ckpt"):
        raise ConfigError("run.resume", r.resume, '"" (fresh), "last", or a path to a .ckpt file')


def parse_devices(spec: str) -> Any:
    """trainer.devices as Lightning takes it: "auto", a count (-1: all), or a list
    of device indices; ConfigError for anything else (0 devices included)."""
    allowed = 'auto, a count >= 1 ("2"; "-1" for all) or a list of indices ("0,1")'
    spec = str(spec).strip()
    if spec == "auto":
        return "auto"
    try:
        if "," in spec:
            ids = [int(d) for d in spec.split(",") if d.strip()]
            if ids and all(i >= 0 for i in ids) and len(set(ids)) == len(ids):
                return ids
        elif int(spec) >= 1 or int(spec) == -1:
            return int(spec)
    except ValueError:
        pass
    raise ConfigError("trainer.devices", spec, allowed)


def to_dict(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
