"""MoE layer speed: forward + backward against HF Mixtral's sparse block and an
equal-active dense FFN, as ratios measured alternately in one run.

    .venv/bin/python benchmarks/bench_moe.py                 # the CPU default sizes
    .venv/bin/python benchmarks/bench_moe.py --threads 1 --shapes 16x128k4
    python benchmarks/bench_moe.py --device cuda --dtype bfloat16 --d-model 512 \
        --shapes 16x512k4 --tokens 16384                      # the GPU compare size

Contenders, all on the same (tokens, d_model) input, same expert weights:
  glassbox   archs.moe.MoE (softmax top-k, swiglu experts, aux losses computed)
  hf-<impl>  transformers' MixtralSparseMoeBlock with experts_implementation
             eager (its loop over experts) and grouped_mm (HF's default for models);
             batched_mm is left out: it copies an expert's weights per token-slot
             (2 GB at 4096 tokens, k=4), a decoding path, not a training one
  dense      archs.dense.DenseMLP, swiglu, d_ff = k * d_expert (equal active params)

Each round runs every contender once, in a rotated order; the report gives the
median over rounds and ratios glassbox / other (below 1: glassbox faster).
Targets: glassbox faster than the HF block; at most 1.5x the dense FFN.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from glassbox.archs.config import FFNConfig, MoEConfig
from glassbox.archs.dense import DenseMLP
from glassbox.archs.export.mixtral import mixtral_experts
from glassbox.archs.moe import MoE


def build(d_model: int, n_experts: int, k: int, d_expert: int):
    torch.manual_seed(0)
    ours = MoE(
        d_model, FFNConfig(kind="moe", moe=MoEConfig(n_experts=n_experts, k=k, d_expert=d_expert))
    )
    dense = DenseMLP(d_model, FFNConfig(kind="dense", activation="swiglu", d_ff=k * d_expert))
    contenders = {"glassbox": ours, "dense": dense}
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    except ImportError:
        print("transformers not installed: HF contenders skipped")
        return contenders, ours
    for impl in ("eager", "grouped_mm"):
        cfg = MixtralConfig(
            hidden_size=d_model,
            intermediate_size=d_expert,
            num_local_experts=n_experts,
            num_experts_per_tok=k,
        )
        cfg._experts_implementation = impl
        hf = MixtralSparseMoeBlock(cfg)
        with torch.no_grad():  # same function as ours: HF stores (E, out, in)
            hf.gate.weight.copy_(ours.W_router.weight)
            gate_up, down = mixtral_experts(ours.W_gate.weight, ours.W_in.weight, ours.W_out.weight)
            hf.experts.gate_up_proj.copy_(gate_up)
            hf.experts.down_proj.copy_(down)
        contenders[f"hf-{impl}"] = hf
    return contenders, ours


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    out = module(x)
    if isinstance(module, MoE):  # as in training: the aux losses join the graph
        out = out + 0 * sum(w * loss for w, loss in module.aux_losses.values())
    out.backward(grad)


def check_same_function(contenders: dict, ours: MoE, x: torch.Tensor) -> None:
    """Assert that every HF block computes what ours does on x (the 99th percentile
    of the absolute error under a tolerance of x's dtype)."""
    with torch.no_grad():  # the HF blocks compute the same function
        ref = ours(x)
        # low precision: a near-tie in the router may pick another expert for a token
        tol = 1e-4 if x.dtype == torch.float32 else 0.1 * float(ref.abs().max())
        for name, m in contenders.items():
            if name.startswith("hf-"):
                err = (m(x) - ref).abs().float().quantile(0.99).item()
                assert err < tol, f"{name} differs from glassbox by {err}"


def time_steps(
    contenders: dict, x: torch.Tensor, grad: torch.Tensor, warmup: int, reps: int, device
) -> dict[str, list[float]]:
    """Seconds per forward and backward step of each contender, `reps` times after
    `warmup` untimed steps, the order rotated every repetition."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(warmup):
        for n in names:
            step(contenders[n], x, grad)
    for r in range(reps):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            step(contenders[n], x, grad)
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per batch (16 x 256)")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument(
        "--shapes",
        default="16x128k4,32x64k8,64x32k8",
        help="comma list of EXPERTSxD_EXPERTkK (default: the configs/model/moe*.yaml sizes and a finer one)",
    )
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tokens} tokens, "
        f"d_model {args.d_model}, {device} {args.dtype}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    for shape in args.shapes.split(","):
        experts, rest = shape.split("x")
        d_expert, k = rest.split("k")
        n_experts, d_expert, k = int(experts), int(d_expert), int(k)
        contenders, ours = build(args.d_model, n_experts, k, d_expert)
        for m in contenders.values():
            m.to(device=device, dtype=dtype)
        x = torch.randn(
            1, args.tokens, args.d_model, device=device, dtype=dtype, requires_grad=True
        )
        grad = torch.randn(1, args.tokens, args.d_model, device=device, dtype=dtype)
        check_same_function(contenders, ours, x)
        names = list(contenders)
        times = time_steps(contenders, x, grad, args.warmup, args.reps, device)
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"\n{n_experts} experts x d_expert {d_expert}, k={k}  (dense d_ff {k * d_expert})")
        for n in names:
            print(
                f"  {n:14s} {med[n] * 1e3:8.2f} ms  glassbox/{n} = {med['glassbox'] / med[n]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
