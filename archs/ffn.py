"""The feed-forward slot: the plug-in contract every FFN kind follows, its config
schema, and the registry from `FFNConfig.kind` to a kind's class.

A kind is one module (archs/dense.py, archs/moe.py, archs/transcoder.py): a subclass
of `FFN` decorated with `register_ffn(name, config=ItsConfig)`. What it provides:

    forward(x)              (batch, pos, d_model) -> (batch, pos, d_model).
    aux_losses              set by forward, in training mode only (`self.training`):
                            {name: (weight, loss)} of auxiliary training losses (load
                            balancing, AuxK, ...), which the backbone weighs and sums
                            (`Transformer.aux_losses()`) and the training loop adds to
                            the language-model loss. Empty in eval mode.
    inactive_params()       parameters one token does not use (MoE: the n - k experts
                            it skips), for the active-parameter count. Default 0.
    after_optimizer_step()  a constraint kept after each optimizer step (transcoder:
                            unit-norm decoder rows). Default nothing.
    unit_name, unit_hooks,  its readable units, for the analysis: what one unit is
    read_units(acts)        called ("neuron", "expert", "latent"), the hook points of
                            the kind (relative to the FFN: "hook_post") whose per-token
                            activations hold them, and how those activations become an
                            (N, n_units) matrix. Default: the one hook's activation.
    readings, read_all(acts)
                            every way the kind's units can be read, for the audited
                            scores (analysis.heldout): {reading name: (N, n) matrix}, the
                            first the kind's headline reading, each read with both signs
                            by the analysis. `reading_hooks` are the hook points they
                            need. Default: the units above, one reading named unit_name.
    groups(acts), routes    the kind's own partition of tokens (MoE: the experts each
                            token is routed to, (N, k) ids, slot 0 the top one), or None;
                            `routes` says it has one. `cluster_units`: the older
                            specialisation scores cluster its units instead (dense).
                            `sparse_units`: its units get the SAE health scores.
    unit_groups(layer)      its readable units as `archs.units.UnitGroup`s, finest
                            first: name, count, parameters per unit, the hooks that
                            mean- (or zero-) ablate them, their write directions into
                            the residual stream. Circuits, dashboards, feature pages
                            and graphs read a kind only through these. Required.
    linearise(x, acts)      the slot at N tokens as an `archs.linearised.LinearFFN`: its
                            output a sum of its active units' writes (activation x
                            direction) plus bias and a linear skip, each activation
                            linear in the input x (N, d_model) with the factors the
                            tokens fix frozen (gates, activation factors); acts: the
                            hooks_to_read() activations at those tokens. What the
                            attribution graphs (analysis.graphs) read. Optional.
    label(cfg), describe(cfg)
                            the slot in a few words (model card: "dense (swiglu)") and
                            in a phrase ("a dense swiglu MLP of width 512"). Default:
                            the kind's name.
    check_config(cfg, key)  raise ConfigError (one line: key, value, what is allowed)
                            for an impossible value of the kind's keys. Default nothing.

Its constructor takes `(d_model, cfg)`, cfg the slot's `FFNConfig`. A kind with keys
of its own passes their dataclass to `register_ffn(..., config=...)`: `FFNConfig` then
has a section named like the kind (YAML `ffn.<kind>.<key>`, `cfg.<kind>.<key>` in
code), checked by omegaconf like every other key. The kinds are the registry
`FFN_KINDS` (archs/registry.py, the idiom routers, skills and metrics use too). A new
kind is thus one file (plus its YAML and its test) and one import line in
archs/config.py, which registers the built-in kinds before any config is read; a kind
defined elsewhere (a test, a user's module) is registered by importing its file.
Nothing outside the kind's file names it: the analysis, the model cards and the hooks'
shorthand read the contract above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from glassbox.archs.errors import ConfigError
from glassbox.archs.registry import Registry
from glassbox.archs.units import UnitGroup

AuxLosses = dict[str, tuple[float, Tensor]]


@dataclass
class FFNConfig:
    """The feed-forward slot of a block: `model.ffn`, `model.ffn_by_layer.<i>`.

    Beside the keys below, every registered kind with a config has its section here,
    named like the kind (`moe:`, `transcoder:`); see `register_ffn`.
    """

    kind: str = "dense"  # one of the registered kinds (ffn_kinds()): dense | moe | transcoder
    activation: str = "swiglu"  # dense MLP: swiglu (Llama) | gelu
    d_ff: int = 512  # dense MLP hidden width
    bias: bool = False  # biases in the dense MLP (Llama has none)


class FFN(nn.Module):
    """Base class of every FFN kind: the contract of the module docstring, with its
    defaults. `kind` is set by `register_ffn`."""

    kind: ClassVar[str] = ""
    unit_name: ClassVar[str] = "unit"  # what one readable unit is called
    unit_hooks: ClassVar[tuple[str, ...]] = ()  # hook points (relative) holding the units
    reading_hooks: ClassVar[tuple[str, ...] | None] = (
        None  # hooks read_all needs (None: unit_hooks)
    )
    routes: ClassVar[bool] = False  # groups() gives the kind's routing of tokens (a MoE)
    # the older specialisation scores (NMI, purity, keep-25%) read this kind through
    # k-means clusters of its units, the routed kinds' comparison point (dense)
    cluster_units: ClassVar[bool] = False
    # its units are meant to be sparse latents: the SAE health scores (L0, dead and
    # dense fractions) are reported for them (a transcoder)
    sparse_units: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.aux_losses: AuxLosses = {}

    @classmethod
    def check_config(cls, cfg: FFNConfig, prefix: str) -> None:
        """Raise ConfigError for an impossible value; prefix is the slot's key
        (`model.ffn`, `model.ffn_by_layer.1`)."""

    def inactive_params(self) -> int:
        """Parameters one token does not use."""
        return 0

    def after_optimizer_step(self) -> None:
        """Called by the training loop right after every optimizer step."""

    def read_units(self, acts: Mapping[str, Tensor]) -> Tensor:
        """The readable units at N tokens, (N, n_units), from `acts`: {name in
        unit_hooks: that hook point's activation at the same N tokens, (N, ...)}."""
        if len(self.unit_hooks) != 1:
            raise TypeError(
                f"{type(self).__name__} reads its units from {len(self.unit_hooks)} hooks: "
                "override read_units"
            )
        return acts[self.unit_hooks[0]]

    def hooks_to_read(self) -> tuple[str, ...]:
        """The hook points (relative) that read_all and groups need."""
        return self.unit_hooks if self.reading_hooks is None else self.reading_hooks

    def read_all(self, acts: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{reading name: (N, n) activations}: every reading of the kind's units, the
        headline one first. acts: {hook in hooks_to_read(): (N, ...)}."""
        return {self.unit_name: self.read_units(acts)}

    def groups(self, acts: Mapping[str, Tensor]) -> Tensor | None:
        """(N, k) group ids of the kind's own routing of each token (slot 0 first), or
        None for a kind that does not route."""
        return None

    def unit_groups(self, layer: int) -> list[UnitGroup]:
        """Its readable units at block `layer`, the finest first (archs.units)."""
        raise NotImplementedError(
            f"FFN kind {self.kind!r} ({type(self).__name__}) does not list its readable "
            "units: define unit_groups(layer) (archs/ffn.py's contract)"
        )

    def linearise(self, x: Tensor, acts: Mapping[str, Tensor]):
        """x (N, d_model), acts {hook in hooks_to_read(): (N, ...)} -> LinearFFN
        (archs/linearised.py): the slot written linearly in x at these tokens."""
        raise NotImplementedError(
            f"FFN kind {self.kind!r} ({type(self).__name__}) cannot be traced: define "
            "linearise(x, acts) (archs/ffn.py's contract)"
        )

    @classmethod
    def label(cls, cfg: FFNConfig) -> str:
        """The slot in a few words, for a model card's first lines."""
        return cls.kind

    @classmethod
    def describe(cls, cfg: FFNConfig) -> str:
        """The slot as a phrase of a sentence ("a dense swiglu MLP of width 512")."""
        return f"a {cls.kind} feed-forward slot"


def _check_kind(kind: str, cls: Any, config: type | None) -> None:
    if not (isinstance(cls, type) and issubclass(cls, FFN)):
        raise TypeError(f"register_ffn({kind!r}): {cls!r} is not a subclass of archs.ffn.FFN")
    if kind in {f.name for f in _OWN_FIELDS}:
        raise ValueError(f"register_ffn({kind!r}): {kind!r} is a key of FFNConfig already")


_OWN_FIELDS = dataclasses.fields(FFNConfig)
# The FFN kinds (archs/registry.py), in registration order; each kind's section is a
# field of FFNConfig named like it (YAML `ffn.<kind>.<key>`).
FFN_KINDS: Registry[type[FFN]] = Registry("FFN kind", check=_check_kind)
FFN_KINDS.hold_sections(FFNConfig)


def register_ffn(kind: str, config: type | None = None):
    """Class decorator: make the FFN subclass buildable as `FFNConfig(kind=kind)`.

    config: the kind's own config dataclass (or None); FFNConfig then gets a section
    `kind` of that type, default-constructed, so YAML `ffn.<kind>.<key>` is checked
    like any other key.
    """

    def deco(cls: type[FFN]) -> type[FFN]:
        FFN_KINDS.register(kind, cls, config=config)
        cls.kind = kind
        return cls

    return deco


def unregister_ffn(kind: str) -> None:
    """Remove a kind and its config section (a kind registered for a test)."""
    FFN_KINDS.unregister(kind)


def ffn_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return FFN_KINDS.names()


def validate_ffn_config(cfg: FFNConfig, prefix: str) -> None:
    """Raise ConfigError for an unknown kind, or the kind's own check's error."""
    if cfg.kind not in FFN_KINDS:
        raise ConfigError(f"{prefix}.kind", cfg.kind, f"one of {', '.join(FFN_KINDS)}")
    FFN_KINDS[cfg.kind].check_config(cfg, prefix)


def build_ffn(d_model: int, cfg: FFNConfig) -> FFN:
    """The FFN module of `cfg.kind`, (batch, pos, d_model) -> (batch, pos, d_model)."""
    if cfg.kind not in FFN_KINDS:
        raise ConfigError("ffn.kind", cfg.kind, f"one of {', '.join(FFN_KINDS)}")
    return FFN_KINDS[cfg.kind](d_model, cfg)
