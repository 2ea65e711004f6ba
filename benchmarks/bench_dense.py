"""Training-step speed of the glassbox dense baseline against HF transformers'
LlamaForCausalLM of the identical configuration and weights.

One step is forward + cross-entropy + backward (no optimizer: the optimizer is the
same code for both). The two models are timed alternately in one run, the order
flipping every repetition, so that drift in the machine's load hits both alike;
the reported ratio is ours / peer (below 1: ours is faster), the median of the
per-repetition ratios, beside the median step times.

    python benchmarks/bench_dense.py                      # CPU, both sizes
    python benchmarks/bench_dense.py --device cuda --dtype bfloat16
    python benchmarks/bench_dense.py --sizes tiny --reps 50 --threads 1

Needs the optional peer: pip install 'glassbox[peers]'.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# Run from a checkout without an install, as `python benchmarks/bench_dense.py`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glassbox.archs import FFNConfig, ModelConfig, Transformer  # noqa: E402
from glassbox.archs.export import to_hf_llama  # noqa: E402


@dataclass
class Size:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    vocab_size: int
    seq_len: int
    batch: int

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            max_seq_len=self.seq_len,
            ffn=FFNConfig(kind="dense", activation="swiglu", d_ff=self.d_ff),
        )


SIZES = {
    # the CPU default model (configs/dense.yaml's size)
    "tiny": Size(
        "tiny", d_model=128, n_layers=2, n_heads=4, d_ff=512, vocab_size=512, seq_len=128, batch=16
    ),
    "large": Size(
        "large",
        d_model=512,
        n_layers=8,
        n_heads=8,
        d_ff=1536,
        vocab_size=4096,
        seq_len=256,
        batch=8,
    ),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_fn(model, peer: bool, x: torch.Tensor, y: torch.Tensor):
    """One forward + loss + backward; returns the loss (detached)."""

    def step() -> torch.Tensor:
        for p in model.parameters():
            p.grad = None
        logits = model(input_ids=x, use_cache=False).logits if peer else model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        return loss.detach()

    return step


def timed(step, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def bench(size: Size, device: torch.device, dtype: torch.dtype, reps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    ours = Transformer(size.model_config()).to(device=device, dtype=dtype).train()
    peer = to_hf_llama(ours, attn_implementation="sdpa").train()
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, size.vocab_size, (size.batch, size.seq_len + 1), generator=g).to(device)
    x, y = data[:, :-1], data[:, 1:]
    steps = {"ours": step_fn(ours, False, x, y), "peer": step_fn(peer, True, x, y)}

    # Same weights, same batch: the losses must agree, or the timing compares two models.
    l_ours, l_peer = steps["ours"](), steps["peer"]()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    if abs(float(l_ours) - float(l_peer)) > tol:
        raise SystemExit(
            f"{size.name}: losses differ: ours {float(l_ours)} vs peer {float(l_peer)}"
        )

    for _ in range(warmup):
        for name in steps:
            timed(steps[name], device)
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for r in range(reps):
        order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
        for name in order:
            times[name].append(timed(steps[name], device))
    ratios = [a / b for a, b in zip(times["ours"], times["peer"])]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    result = {
        "size": size,
        "params": ours.num_params(),
        "ours_ms": 1e3 * statistics.median(times["ours"]),
        "peer_ms": 1e3 * statistics.median(times["peer"]),
        "ratio": statistics.median(ratios),
        "ratio_q1": q[0],
        "ratio_q3": q[2],
        "peer_attn": peer.config._attn_implementation,
    }
    del ours, peer, steps
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--sizes", default="tiny,large", help=f"comma-separated: {', '.join(SIZES)}")
    ap.add_argument("--reps", type=int, default=20, help="timed steps per model and size")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model and size")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, then fixed)",
    )
    args = ap.parse_args(argv)

    import transformers

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    sizes = [SIZES[s] for s in args.sizes.split(",")]

    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    print(
        f"glassbox dense vs transformers {transformers.__version__} LlamaForCausalLM "
        f"(attn_implementation='sdpa'), torch {torch.__version__}"
    )
    print(
        f"device {device} ({where}), dtype {args.dtype}, torch threads {torch.get_num_threads()} "
        f"of {os.cpu_count()} cpus, {args.warmup} warm-up + {args.reps} interleaved steps each"
    )
    print("step = forward + cross-entropy + backward, identical config, weights and batch\n")
    header = f"{'size':<6} {'params':>9} {'shape (B x T)':>13} {'ours ms':>9} {'peer ms':>9} {'ours/peer':>9} {'IQR':>13}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        r = bench(size, device, dtype, args.reps, args.warmup)
        shape = f"{size.batch} x {size.seq_len}"
        print(
            f"{size.name:<6} {r['params'] / 1e6:>8.2f}M {shape:>13} {r['ours_ms']:>9.2f} "
            f"{r['peer_ms']:>9.2f} {r['ratio']:>9.3f} {r['ratio_q1']:>6.3f}-{r['ratio_q3']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
