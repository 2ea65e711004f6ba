"""glassbox: `import glassbox` gives the same objects as the top-level packages
(archs for models, training for runs, analysis for metrics)."""

from archs import (
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
