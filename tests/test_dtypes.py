"""Every FFN kind and every MoE dispatch path, forward and backward, under the mixed
dtypes a GPU run makes, on a CPU-only machine.

Under CUDA autocast (`trainer.precision=bf16-mixed`) the matmuls return bf16 while
the residual stream stays fp32; CPU autocast does the same, so these tests reproduce
that situation here. Each result is compared with the same module in fp32 (bf16
keeps 8 bits of mantissa: a few per cent of relative error), and every gradient must
reach every parameter, finite, in the parameter's dtype.

bf16 rounding flips some discrete choices (which experts, which latents), more often
where the choice is a threshold over a whole batch or a ReLU gate near zero: those
kinds get a looser bound, and gradients are compared as one vector over all weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import glassbox.archs.experts as experts_mod
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, TranscoderConfig, Transformer
from glassbox.archs.ffn import build_ffn
from glassbox.training.train import train
from tests.test_training import fast_cfg

D_MODEL = 32
BF16 = torch.bfloat16


def _moe(**kw) -> FFNConfig:
    return FFNConfig(kind="moe", moe=MoEConfig(**kw))


def _tc(**kw) -> FFNConfig:
    return FFNConfig(kind="transcoder", transcoder=TranscoderConfig(**kw))


# Every kind, and within the MoE every shape of the expert code: narrow SwiGLU experts
# (gate and input in one fused grouped matmul), wide ones (two matmuls), GELU experts
# with a shared expert, the ReLU router with ReLU experts. Transcoders: every
# activation and the skip.
KINDS = {
    "dense_swiglu": FFNConfig(kind="dense", d_ff=64),
    "dense_gelu": FFNConfig(kind="dense", activation="gelu", d_ff=64),
    "moe_narrow": _moe(n_experts=4, k=2, d_expert=16),
    "moe_wide": _moe(n_experts=4, k=2, d_expert=32),
    "moe_shared_gelu": _moe(
        n_experts=4, k=2, d_expert=16, expert_activation="gelu", n_shared_experts=1
    ),
    "moe_relu": _moe(
        n_experts=8,
        k=2,
        d_expert=16,
        router="relu",
        expert_activation="relu",
        normalize_weights=False,
        sparsity_weight=1e-3,
    ),
    "transcoder_topk": _tc(d_latent=128, k=8),
    "transcoder_batchtopk": _tc(d_latent=128, k=8, activation="batchtopk"),
    "transcoder_jumprelu": _tc(d_latent=128, activation="jumprelu", l0_weight=1e-3),
    "transcoder_skip": _tc(d_latent=128, k=8, skip=True),
}
MOE_KINDS = [k for k in KINDS if k.startswith("moe")]
# Choices that bf16 rounding flips often at this size (measured: up to 0.10 relative).
FLIPPY = ("moe_relu", "transcoder_batchtopk")
# JumpReLU's threshold gradient comes from pre-activations within
# jumprelu_bandwidth (0.001) of the threshold, finer than bf16 rounds them.
NOT_COMPARED = ("log_threshold",)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach(), want.detach()
    return float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12))


def _cases(kinds=tuple(KINDS), ablations=(None,)) -> list:
    """(kind, dispatch path, ablation): both paths and every ablation for the MoE."""
    out = []
    for kind in kinds:
        moe = kind.startswith("moe")
        for path in ("grouped", "padded") if moe else ("grouped",):
            for ablation in ablations if moe else (None,):
                name = "-".join(str(v) for v in (kind, moe and path, ablation) if v)
                out.append(pytest.param(kind, path, ablation, id=name))
    return out


@pytest.fixture
def dispatch(request, monkeypatch):
    """Pin the MoE's dispatch path: the grouped_mm kernel, or the padded-bmm fallback
    (which CUDA takes for fp32 inputs, where the dtype bug lived). Yields the list of
    paths the layer actually took, to check that the pinned one ran."""
    taken: list[bool] = []
    applies = experts_mod._grouped_mm_applies

    def spy(x, w):
        ok = applies(x, w) if request.param == "grouped" else False
        taken.append(ok)
        return ok

    monkeypatch.setattr(experts_mod, "_grouped_mm_applies", spy)
    yield request.param, taken


def _check_dispatch(dispatch, kind: str) -> None:
    path, taken = dispatch
    if kind.startswith("moe"):
        assert taken, "the experts never ran"
        assert all(taken) if path == "grouped" else not any(taken), (path, taken)


def _check_grads(module: torch.nn.Module, ref: torch.nn.Module, tol: float) -> None:
    """Every parameter got a finite gradient of its own dtype, non-zero where fp32's
    is; all of them together close to fp32's."""
    got, want = [], []
    for (name, p), (_, q) in zip(module.named_parameters(), ref.named_parameters()):
        assert p.grad is not None, f"{name}: no gradient"
        assert p.grad.dtype == p.dtype, name
        assert torch.isfinite(p.grad).all(), name
        if not name.endswith(NOT_COMPARED):
            if q.grad.norm() > 0:
                assert p.grad.norm() > 0, f"{name}: zero gradient"
            got.append(p.grad.float().flatten())
            want.append(q.grad.flatten())
    assert _rel_err(torch.cat(got), torch.cat(want)) < tol


def _ffn_pair(kind: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    ffn = build_ffn(D_MODEL, KINDS[kind]).train()
    return ffn, copy.deepcopy(ffn)


def _set_ablation(ffn, ablation: str | None) -> None:
    if ablation == "zero":
        ffn.ablation = {0: None, 2: None}
    elif ablation == "mean":
        ffn.ablation = {1: torch.randn(D_MODEL), 3: torch.randn(D_MODEL)}


def _run(ffn, x: torch.Tensor, g: torch.Tensor, autocast: bool = False) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        y = ffn(x)
        aux = sum(w * loss for w, loss in ffn.aux_losses.values())
    ((y.float() * g).sum() + aux).backward()
    return y, x.grad


@pytest.mark.parametrize(
    "kind, dispatch, ablation", _cases(ablations=(None, "zero", "mean")), indirect=["dispatch"]
)
def test_ffn_under_autocast_matches_fp32(kind, dispatch, ablation):
    """The CUDA bf16-mixed situation: fp32 weights and residual, bf16 matmuls. The
    output matches fp32 to bf16 precision (the MoE's is fp32: its k expert outputs are
    summed in the residual's dtype); every parameter gets a gradient close to fp32's."""
    ffn, ref = _ffn_pair(kind)
    torch.manual_seed(1)
    _set_ablation(ffn, ablation)
    torch.manual_seed(1)
    _set_ablation(ref, ablation)
    x, g = torch.randn(4, 16, D_MODEL), torch.randn(4, 16, D_MODEL)
    y_ref, gx_ref = _run(ref, x, g)
    dispatch[1].clear()
    y, gx = _run(ffn, x, g, autocast=True)
    _check_dispatch(dispatch, kind)
    assert gx.dtype == torch.float32
    if kind.startswith("moe"):  # the k expert outputs are summed in the residual's dtype
        assert y.dtype == torch.float32
    tol = 0.15 if kind in FLIPPY else 0.03
    assert _rel_err(y, y_ref) < tol
    assert _rel_err(gx, gx_ref) < 2 * tol
    _check_grads(ffn, ref, tol=2 * tol)


@pytest.mark.parametrize("kind, dispatch, ablation", _cases(MOE_KINDS), indirect=["dispatch"])
def test_moe_bf16_experts_fp32_residual(kind, dispatch, ablation):
    """Expert weights held in bf16 while the router and the residual are fp32: the
    experts compute in bf16 and their outputs are summed in fp32. Against the fp32
    layer with the same (bf16-rounded) expert weights."""
    ffn, ref = _ffn_pair(kind)
    experts = [ffn.W_in, ffn.W_out, getattr(ffn, "W_gate", None), ffn.shared]
    for m in filter(None, experts):
        m.to(BF16)
    with torch.no_grad():  # the reference holds the same rounded values in fp32
        for p, q in zip(ffn.parameters(), ref.parameters()):
            q.copy_(p.float())
    x, g = torch.randn(4, 16, D_MODEL), torch.randn(4, 16, D_MODEL)
    y_ref, gx_ref = _run(ref, x, g)
    dispatch[1].clear()
    y, gx = _run(ffn, x, g)
    _check_dispatch(dispatch, kind)
    assert y.dtype == torch.float32
    tol = 0.15 if kind in FLIPPY else 0.03
    assert _rel_err(y, y_ref) < tol
    assert _rel_err(gx, gx_ref) < 2 * tol
    _check_grads(ffn, ref, tol=2 * tol)
    assert ffn.W_in.weight.grad.dtype == BF16 and ffn.W_router.weight.grad.dtype == torch.float32


def _model_pair(kind: str) -> tuple[Transformer, Transformer]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=50, d_model=D_MODEL, n_layers=2, n_heads=4, max_seq_len=32, ffn=KINDS[kind]
    )
    model = Transformer(cfg).train()
    return model, copy.deepcopy(model)


def _lm_step(model: Transformer, tokens: torch.Tensor, autocast: bool = False) -> torch.Tensor:
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        logits = model(tokens[:, :-1])
        aux = model.aux_losses()
    loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    (loss + sum(aux.values())).backward()
    return logits


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
@pytest.mark.parametrize("kind, dispatch, ablation", _cases(), indirect=["dispatch"])
def test_whole_model_in_bf16(kind, dispatch, ablation, precision):
    """The whole model under autocast (bf16-mixed) or cast to bf16 (bf16-true):
    logits match the fp32 model to bf16 precision and every weight is trained."""
    model, ref = _model_pair(kind)
    if precision == "bf16-true":
        model.to(BF16)
    tokens = torch.randint(0, 50, (4, 17), generator=torch.Generator().manual_seed(2))
    want = _lm_step(ref, tokens)
    dispatch[1].clear()
    got = _lm_step(model, tokens, autocast=precision == "bf16-mixed")
    _check_dispatch(dispatch, kind)
    assert got.dtype == BF16
    # Every layer rounds, and a flipped choice in layer 0 moves all that follows:
    # TopK transcoders too at this size (measured: up to 0.09 relative).
    assert _rel_err(got, want) < 0.15
    _check_grads(model, ref, tol=0.3)


@pytest.mark.parametrize("kind", ["moe", "moe_relu"])
def test_train_bf16_mixed_moe(tmp_path, monkeypatch, kind):
    """The command of the bug report, on the CPU and on the padded path that CUDA
    takes for fp32 inputs: `glassbox train configs/moe.yaml trainer.precision=bf16-mixed`
    runs its steps and exports."""
    monkeypatch.setattr(experts_mod, "_grouped_mm_applies", lambda x, w: False)
    moe = [
        "model.ffn.kind=moe",
        "model.ffn.moe.n_experts=4",
        "model.ffn.moe.k=2",
        "model.ffn.moe.d_expert=32",
    ]
    if kind == "moe_relu":
        moe += ["model.ffn.moe.router=relu", "model.ffn.moe.expert_activation=relu"]
    cfg = fast_cfg(
        tmp_path,
        *moe,
        "trainer.precision=bf16-mixed",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "trainer.val_every_n_steps=3",
        "optim.warmup_steps=1",
    )
    export = train(cfg)
    assert (export / "model.safetensors").is_file()
