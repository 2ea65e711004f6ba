"""The feed-forward slot: a registry from `FFNConfig.kind` to a module class.

Every FFN kind is an `nn.Module` mapping (batch, pos, d_model) -> (batch, pos, d_model).
It may set `self.aux_losses` during a forward pass: a dict name -> (weight, loss) of
auxiliary training losses (load balancing, AuxK, ...), which the model sums and the
training loop adds to the language-model loss and logs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import Tensor, nn

from glassbox.archs.config import FFNConfig

FFN_REGISTRY: dict[str, Callable[[int, FFNConfig], nn.Module]] = {}


def register_ffn(kind: str):
    """Class decorator: make `kind` buildable from a config."""

    def deco(cls):
        FFN_REGISTRY[kind] = cls
        return cls

    return deco


def build_ffn(d_model: int, cfg: FFNConfig) -> nn.Module:
    # Each kind lives in archs/<kind>.py; importing it registers the class.
    if cfg.kind not in FFN_REGISTRY:
        try:
            importlib.import_module(f"glassbox.archs.{cfg.kind}")
        except ModuleNotFoundError as e:
            if (
                e.name != f"glassbox.archs.{cfg.kind}"
            ):  # the kind exists but needs something missing
                raise
    if cfg.kind not in FFN_REGISTRY:
        raise ValueError(f"config error: ffn.kind={cfg.kind!r}: one of {', '.join(FFN_REGISTRY)}")
    return FFN_REGISTRY[cfg.kind](d_model, cfg)


AuxLosses = dict[str, tuple[float, Tensor]]
