"""glassbox: transformer language models that are interpretable by construction.

One namespace: `glassbox.archs` (models, hooks, checkpoints, tools), `glassbox.training`
(data, Lightning module, fitting), `glassbox.analysis` (scoring), and here the top floor:
`glassbox.cli` (the command), `glassbox.compare` (orchestration, with
`glassbox.compare_config`, `glassbox.runs`, `glassbox.scheduling`, `glassbox.scoring`),
`glassbox.results`, `glassbox.metrics` (the metric registry), `glassbox.report` (with
`glassbox.report_tables`, `glassbox.table`, `glassbox.frontier`),
`glassbox.console` and `glassbox.ship`. The model API is re-exported so that
`import glassbox as gb; gb.load_pretrained(...)` works."""

from glassbox.archs import (
    ActivationCache,
    ConfigError,
    FFNConfig,
    HookPoint,
    ModelConfig,
    Transformer,
    load_pretrained,
    save_pretrained,
)

__version__ = "0.1.0"
__all__ = [
    "ActivationCache",
    "ConfigError",
    "FFNConfig",
    "HookPoint",
    "ModelConfig",
    "Transformer",
    "load_pretrained",
    "save_pretrained",
]
