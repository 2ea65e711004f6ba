"""What every converter shares: the one-line export error, the optional-peer import,
and the check that a model is a plain Llama (dense SwiGLU in every layer)."""

from __future__ import annotations

import importlib
from types import ModuleType

from glassbox.archs.config import ConfigError, FFNConfig, ModelConfig


class ExportError(ConfigError):
    """A model that the target format cannot represent. One line: the target, the
    config key and value at fault, and why.

    A ConfigError, so that the command line reports it the way it reports config
    errors."""

    def __init__(self, target: str, key: str, value, why: str):
        super().__init__(key, value, why)
        self.target = target
        self.args = (f"cannot export to {target}: {key}={value!r}: {why}",)


def require(module: str, target: str) -> ModuleType:
    """Import an optional peer, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        package = module.split(".")[0].replace("_", "-")
        raise ModuleNotFoundError(
            f"export to {target} needs the optional package {package!r}: "
            f"pip install 'glassbox[peers]' (or pip install {package})"
        ) from e


def check_no_residual_topk(cfg: ModelConfig, target: str, peer: str) -> None:
    """ExportError when the model has a TopK on its residual stream (weight-sparse
    models), which no peer architecture holds. `peer` names it: "a Llama"."""
    if cfg.weight_sparsity.residual_topk:
        raise ExportError(
            target,
            "model.weight_sparsity.residual_topk",
            cfg.weight_sparsity.residual_topk,
            f"{peer} has no TopK on its residual stream: only models trained with "
            "residual_topk 0 can be exported (pruned weights export as zeros)",
        )


def llama_ffn(cfg: ModelConfig, target: str) -> FFNConfig:
    """The one dense SwiGLU FFN config every layer uses, or ExportError naming the
    first layer that a Llama cannot hold (Llama has one MLP shape for all layers), or
    the residual TopK of a weight-sparse model, which it cannot hold either."""
    check_no_residual_topk(cfg, target, "a Llama")
    first = cfg.ffn_for_layer(0)
    for i in range(cfg.n_layers):
        ffn = cfg.ffn_for_layer(i)
        key = f"model.ffn_by_layer.{i}" if str(i) in cfg.ffn_by_layer else "model.ffn"
        if ffn.kind != "dense":
            raise ExportError(
                target,
                f"{key}.kind",
                ffn.kind,
                "only 'dense' FFNs can be exported: a Llama has one dense SwiGLU MLP per "
                "layer and no experts or transcoders (save it as a glassbox checkpoint instead)",
            )
        if ffn.activation != "swiglu":
            raise ExportError(
                target,
                f"{key}.activation",
                ffn.activation,
                "only 'swiglu' can be exported: a Llama MLP is silu(gate) * up, with no "
                "ungated GELU form",
            )
        if ffn.d_ff != first.d_ff:
            raise ExportError(
                target,
                f"{key}.d_ff",
                ffn.d_ff,
                f"every layer must have the same d_ff (layer 0 has {first.d_ff}): "
                "a Llama has one intermediate_size",
            )
        if ffn.bias != first.bias:
            raise ExportError(
                target,
                f"{key}.bias",
                ffn.bias,
                f"every layer must agree on MLP biases (layer 0 has bias={first.bias}): "
                "a Llama has one mlp_bias flag",
            )
    return first
