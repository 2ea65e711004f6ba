"""The transcoder: a wide sparse bottleneck in the feed-forward slot.

    latents_pre = x @ W_enc + b_enc                           # (B, T, d_latent)
    latents     = activation(latents_pre)                     # a few nonzero per token
    out         = latents @ W_dec + b_dec  (+ x @ W_skip)     # (B, T, d_model)

Each latent i reads the direction W_enc[:, i] and writes the direction W_dec[i]; with
`normalize_decoder` every W_dec[i] has unit norm, so the latent's value is how much
of that direction it writes. Names and shapes follow SAELens / TransformerLens
(W_enc (d_in, d_latent), W_dec (d_latent, d_out)).

Activations (`TranscoderConfig.activation`):

- topk: keep the k largest pre-activations of each token, ReLU them (Gao et al. 2024).
- batchtopk: in training keep the k*N largest over a batch of N tokens, so k is a
  mean (Bussmann et al. 2024); a running average of the smallest kept value is the
  threshold used at eval, a JumpReLU with one shared threshold. The threshold is a
  persistent buffer, so checkpoints carry it.
- jumprelu: latents_pre * 1[latents_pre > exp(log_threshold)], with learned
  per-latent thresholds trained through straight-through pseudo-gradients with a
  rectangle kernel of width `jumprelu_bandwidth`, and an L0 penalty
  (Rajamanoharan et al. 2024).

Training aids:

- Unit-norm decoder: the gradient of W_dec has its component parallel to each row
  removed in the backward pass (SAELens, OpenAI), and `normalize_decoder()`, called
  after every optimizer step (`after_optimizer_step()`, the FFN contract's hook,
  which training.module calls right after each step through the model's
  `after_optimizer_step`), puts the rows back on the sphere.
- Dead latents: `tokens_since_fired` counts, in training forward passes, the tokens
  since each latent was last nonzero; past `dead_after_tokens` a latent is dead.
- AuxK (Gao et al. 2024): the top-aux_k dead latents model the residual error. When
  fitting to a target (`forward(x, target)`, the post-hoc route) that is the loss
  ||e - aux_out||^2 / Var(e) with e = target - out, in `aux_losses["auxk"]`. Built
  into a language model there is no target; the dead latents' output is then added
  and subtracted (`out + w * (aux_out - aux_out.detach())`): the forward value is
  unchanged and the dead latents receive, scaled by w, the language-model gradient
  they would have had if they had fired.

Auxiliary losses (`aux_losses`, in training mode only): `l0` (jumprelu) and `auxk`
(when fitting to a target).

Hook points: `hook_latents_pre`, `hook_latents` (B, T, d_latent). A hook returning a
tensor replaces the activation, e.g. to ablate or patch latents. The readable units
are the latents of `hook_latents`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassbox.archs.errors import ConfigError, check_non_negative, check_positive
from glassbox.archs.ffn import FFN, FFNConfig, register_ffn
from glassbox.archs.hooks import HookPoint
from glassbox.archs.linearised import LinearFFN
from glassbox.archs.units import HookUnits, UnitGroup

ACTIVATIONS = ("topk", "batchtopk", "jumprelu")


@dataclass
class TranscoderConfig:
    """The `ffn.transcoder` section (also the config of a post-hoc transcoder)."""

    d_latent: int = 1024  # width of the sparse bottleneck
    activation: str = "topk"  # topk | batchtopk | jumprelu
    k: int = 16  # active latents per token (topk; batchtopk: the mean over a batch)
    skip: bool = False  # add a linear skip W_skip (skip transcoder)
    normalize_decoder: bool = True  # keep W_dec rows at unit norm (call normalize_decoder())
    batchtopk_threshold_lr: float = 0.01  # batchtopk: rate of the running-average eval threshold
    jumprelu_init_threshold: float = 0.001  # initial JumpReLU threshold
    jumprelu_bandwidth: float = 0.001  # width of JumpReLU's straight-through rectangle kernel
    l0_weight: float = 0.0  # JumpReLU L0 penalty weight (needs > 0 to become sparse)
    aux_k: int = 256  # AuxK: dead latents used to model the residual error
    aux_k_weight: float = 1 / 32  # AuxK loss weight (0 disables)
    dead_after_tokens: int = 10_000_000  # a latent silent this many tokens counts as dead


def check_transcoder_config(t: TranscoderConfig, p: str) -> None:
    """Raise ConfigError for an impossible value of `t`, whose key is `p`."""
    if t.activation not in ACTIVATIONS:
        raise ConfigError(f"{p}.activation", t.activation, f"one of {', '.join(ACTIVATIONS)}")
    if t.d_latent <= 0:
        raise ConfigError(f"{p}.d_latent", t.d_latent, "must be a positive integer")
    if t.activation in ("topk", "batchtopk") and not 1 <= t.k <= t.d_latent:
        raise ConfigError(f"{p}.k", t.k, f"must be between 1 and transcoder.d_latent={t.d_latent}")
    if not 0 < t.batchtopk_threshold_lr <= 1:
        raise ConfigError(
            f"{p}.batchtopk_threshold_lr", t.batchtopk_threshold_lr, "must be in (0, 1]"
        )
    for key in ("jumprelu_init_threshold", "jumprelu_bandwidth"):
        check_positive(f"{p}.{key}", getattr(t, key))
    for key in ("l0_weight", "aux_k", "aux_k_weight"):
        check_non_negative(f"{p}.{key}", getattr(t, key), " (0 disables)")
    if t.dead_after_tokens <= 0:
        raise ConfigError(
            f"{p}.dead_after_tokens", t.dead_after_tokens, "must be a positive integer"
        )


class _TangentGrad(torch.autograd.Function):
    """Identity on W_dec (d_latent, d_out). Backward removes from each row's gradient
    its component along that row, so a step moves the row along the unit sphere."""

    @staticmethod
    def forward(ctx, W: Tensor) -> Tensor:
        ctx.save_for_backward(W)
        return W.view_as(W)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (W,) = ctx.saved_tensors
        u = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return grad - (grad * u).sum(-1, keepdim=True) * u


def _rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1[-1/2 < u < 1/2]."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to_threshold(g: Tensor) -> Tensor:
    """Sum a (..., d_latent) gradient over the token dims to the threshold's (d_latent,)."""
    return g.reshape(-1, g.shape[-1]).sum(0)


class _JumpReLU(torch.autograd.Function):
    """z * 1[z > theta]. d/dz = 1[z > theta]; d/dtheta is the pseudo-derivative
    -(theta / eps) K((z - theta) / eps) (Rajamanoharan et al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_z = grad * (z > theta).to(grad.dtype)
        grad_theta = -(theta / eps) * _rectangle((z - theta) / eps) * grad
        return grad_z, _sum_to_threshold(grad_theta), None


class _Step(torch.autograd.Function):
    """1[z > theta], for the L0 penalty. No gradient to z; d/dtheta is the
    pseudo-derivative -(1 / eps) K((z - theta) / eps) (eq. 12)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_theta = -(1.0 / eps) * _rectangle((z - theta) / eps) * grad
        return None, _sum_to_threshold(grad_theta), None


def normalized_mse(pred: Tensor, target: Tensor) -> Tensor:
    """sum ||target - pred||^2 / sum ||target - mean(target)||^2 over the tokens of
    (..., d) tensors: the fraction of variance unexplained of one batch."""
    t = target.reshape(-1, target.shape[-1]).float()
    p = pred.reshape(-1, pred.shape[-1]).float()
    var = (t - t.mean(0)).pow(2).sum()
    return (t - p).pow(2).sum() / var.clamp_min(1e-12)


@register_ffn("transcoder", config=TranscoderConfig)
class Transcoder(FFN):
    """Sparse bottleneck MLP, (..., d_model) -> (..., d_model).

    Build it from an `FFNConfig` (the model's FFN slot) or, standalone for post-hoc
    fitting, from a `TranscoderConfig`. `forward(x, target=None)`; `encode(x)` gives
    the latents and `decode(latents)` the output, without hooks or training state.
    """

    unit_name = "latent"
    unit_hooks = ("hook_latents",)
    sparse_units = True

    def __init__(self, d_model: int, cfg: FFNConfig | TranscoderConfig):
        super().__init__()
        t = cfg.transcoder if isinstance(cfg, FFNConfig) else cfg
        self.cfg: TranscoderConfig = t
        self.d_model, self.d_latent = d_model, t.d_latent
        self.W_enc = nn.Parameter(torch.empty(d_model, t.d_latent))
        self.b_enc = nn.Parameter(torch.zeros(t.d_latent))
        self.W_dec = nn.Parameter(torch.empty(t.d_latent, d_model))
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        if t.skip:
            self.W_skip = nn.Parameter(torch.zeros(d_model, d_model))
        else:
            self.register_parameter("W_skip", None)
        if t.activation == "jumprelu":
            self.log_threshold = nn.Parameter(torch.empty(t.d_latent))
        if t.activation == "batchtopk":
            # Inference threshold; < 0 means not estimated yet (see _activate).
            self.register_buffer("threshold", torch.tensor(-1.0))
        self.register_buffer("tokens_since_fired", torch.zeros(t.d_latent, dtype=torch.long))
        self.hook_latents_pre = HookPoint()  # (B, T, d_latent)
        self.hook_latents = HookPoint()  # (B, T, d_latent)
        self.reset_parameters()

    @classmethod
    def check_config(cls, cfg: FFNConfig, prefix: str) -> None:
        check_transcoder_config(cfg.transcoder, f"{prefix}.transcoder")

    def unit_groups(self, layer: int) -> list[UnitGroup]:
        """The latents of hook_latents: each reads its W_enc column and bias (and its
        JumpReLU threshold) and writes its W_dec row."""
        extra = 1 if self.cfg.activation == "jumprelu" else 0
        return [
            HookUnits(
                name=f"blocks.{layer}.mlp.latents",
                layer=layer,
                kind=self.unit_name,
                n_units=self.d_latent,
                params_per_unit=2 * self.d_model + 1 + extra,
                hook=f"blocks.{layer}.mlp.hook_latents",
                write=lambda: self.W_dec,
                weights=lambda: [self.W_enc.T, self.W_dec, self.b_enc[:, None]],
                channels=lambda: ([self.W_enc.T], [self.W_dec]),
            )
        ]

    def linearise(self, x: Tensor, acts=None, target: Tensor | None = None) -> LinearFFN:
        """x (N, d_model) -> its active latents, exactly: a latent that fires equals its
        encoder pre-activation x . W_enc[:, i] + b_enc[i] (topk, batchtopk, jumprelu
        alike); b_dec is the bias and W_skip the skip. acts: {"hook_latents": (N,
        d_latent)} as the model computed them (default: encode(x)). target: the output
        the transcoder replaces (a post-hoc one), whose difference from its output is
        the error."""
        latents = acts["hook_latents"] if acts and "hook_latents" in acts else self.encode(x)
        token, unit = latents.nonzero(as_tuple=True)
        lin = LinearFFN(
            token=token,
            unit=unit,
            act=latents[token, unit],
            write=self.W_dec[unit],
            read=self.W_enc.T[unit],
            read_bias=self.b_enc[unit],
            bias=self.b_dec.expand_as(x),
            skip=self.W_skip,
        )
        if target is not None:
            lin.error = target - lin.output(x)
        return lin

    @classmethod
    def describe(cls, cfg: FFNConfig) -> str:
        t = cfg.transcoder
        skip = ", with a linear skip" if t.skip else ""
        return f"a transcoder of {t.d_latent} latents, {t.activation} with k = {t.k}{skip}"

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit-norm decoder rows, W_enc = W_dec^T, zero biases and skip
        (OpenAI's TopK SAE init); thresholds and dead-latent counts reset."""
        self.W_dec.normal_()
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True))
        self.W_enc.copy_(self.W_dec.T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        if self.W_skip is not None:
            self.W_skip.zero_()
        if self.cfg.activation == "jumprelu":
            self.log_threshold.fill_(math.log(self.cfg.jumprelu_init_threshold))
        if self.cfg.activation == "batchtopk":
            self.threshold.fill_(-1.0)
        self.tokens_since_fired.zero_()

    # ------------------------------------------------------------- the math
    def _activate(self, pre: Tensor) -> Tensor:
        """latents_pre (..., d_latent) -> latents, the same shape."""
        kind, k = self.cfg.activation, self.cfg.k
        if kind == "topk":
            vals, idx = pre.topk(k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        if kind == "batchtopk":
            if self.training or self.threshold < 0:
                # Top k*N over the whole batch. Before a threshold was estimated an
                # eval pass falls back to this (so one token alone gets its top k).
                flat = pre.relu().flatten()
                n_keep = k * (pre.numel() // self.d_latent)
                vals, idx = flat.topk(n_keep)
                return torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))
        theta = self.log_threshold.exp()
        return _JumpReLU.apply(pre, theta, self.cfg.jumprelu_bandwidth)

    def encode(self, x: Tensor) -> Tensor:
        """x (..., d_model) -> latents (..., d_latent). No hooks, no training state."""
        return self._activate(x @ self.W_enc + self.b_enc)

    def decode(self, latents: Tensor, x: Tensor | None = None) -> Tensor:
        """latents (..., d_latent) -> (..., d_model); x is needed for the skip."""
        out = latents @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("decode: this transcoder has a skip (W_skip); pass x")
            out = out + x @ self.W_skip
        return out

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """x (..., d_model) -> (..., d_model). `target`, when fitting post-hoc, is
        what the output should match; it only feeds the AuxK loss."""
        W_dec = self.W_dec
        if self.cfg.normalize_decoder and W_dec.requires_grad and torch.is_grad_enabled():
            W_dec = _TangentGrad.apply(W_dec)
        pre = self.hook_latents_pre(x @ self.W_enc + self.b_enc)  # (..., d_latent)
        latents = self.hook_latents(self._activate(pre))  # (..., d_latent)
        out = latents @ W_dec + self.b_dec  # (..., d_model)
        if self.W_skip is not None:
            out = out + x @ self.W_skip

        self.aux_losses = {}
        if self.training:
            if self.cfg.activation == "jumprelu":
                theta = self.log_threshold.exp()
                l0 = _Step.apply(pre, theta, self.cfg.jumprelu_bandwidth).sum(-1).mean()
                self.aux_losses["l0"] = (self.cfg.l0_weight, l0)
            self._update_stats(pre.detach(), latents.detach())
            if self.cfg.aux_k > 0 and self.cfg.aux_k_weight > 0:
                out = self._auxk(pre, out, W_dec, target)
        return out

    # ------------------------------------------------------ training state
    @torch.no_grad()
    def _update_stats(self, pre: Tensor, latents: Tensor) -> None:
        flat = latents.reshape(-1, self.d_latent)
        self.tokens_since_fired += flat.shape[0]
        self.tokens_since_fired[(flat != 0).any(0)] = 0
        if self.cfg.activation == "batchtopk":
            kept = flat[flat > 0]
            if kept.numel():
                m = kept.min().float()
                lr = self.cfg.batchtopk_threshold_lr
                new = m if self.threshold < 0 else (1 - lr) * self.threshold + lr * m
                self.threshold.copy_(new)

    def dead_mask(self) -> Tensor:
        """(d_latent,) bool: latents silent for at least `dead_after_tokens` tokens."""
        return self.tokens_since_fired >= self.cfg.dead_after_tokens

    def _auxk(self, pre: Tensor, out: Tensor, W_dec: Tensor, target: Tensor | None) -> Tensor:
        dead = self.dead_mask()
        if torch.compiler.is_compiling():  # no branch on the data: one graph
            n_aux = min(self.cfg.aux_k, self.d_latent)  # live latents' -inf read as 0
        elif not bool(dead.any()):
            return out
        else:
            n_aux = min(self.cfg.aux_k, int(dead.sum()))
        vals, idx = pre.masked_fill(~dead, float("-inf")).topk(n_aux, dim=-1)
        aux_latents = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        aux_out = aux_latents @ W_dec  # (..., d_model): no bias, it models an error
        if target is None:
            return out + self.cfg.aux_k_weight * (aux_out - aux_out.detach())
        residual = (target - out).detach()
        self.aux_losses["auxk"] = (self.cfg.aux_k_weight, normalized_mse(aux_out, residual))
        return out

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row W_dec[i] to unit norm (no-op unless
        `normalize_decoder`). Call after each optimizer step."""
        if self.cfg.normalize_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def after_optimizer_step(self) -> None:
        """The training loop calls this right after each optimizer step."""
        self.normalize_decoder()

    def inactive_params(self) -> int:
        """Parameters a token does not use: the decoder rows of latents that are zero
        (all but k for topk and batchtopk, k on average). JumpReLU's count varies per
        token, so it counts as fully active."""
        if self.cfg.activation in ("topk", "batchtopk"):
            return (self.d_latent - self.cfg.k) * self.d_model
        return 0

    def extra_repr(self) -> str:
        t = self.cfg
        s = f"d_model={self.d_model}, d_latent={self.d_latent}, activation={t.activation}"
        if t.activation != "jumprelu":
            s += f", k={t.k}"
        return s + (", skip=True" if t.skip else "")
