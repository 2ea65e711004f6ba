"""Peak FLOP/s of the device a run trains on, for model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / the device's peak FLOP/s in the dtype its matrix
multiplies run in. The peak comes from our own table of the GPUs people train on
(dense tensor-core numbers from the vendor datasheets, matched by the name
torch.cuda.get_device_name reports), else from a short timed matrix multiply on
the device itself (every CPU; a GPU the table does not know).

    peak, source = device_peak_flops(torch.device("cuda"), "bf16-mixed")
"""

from __future__ import annotations

import re
import time

import torch

# Dense (no structured sparsity) peak FLOP/s per GPU, by the dtype of the multiply.
# Sources, NVIDIA datasheets (the starred numbers there are with sparsity: halved here):
#   H100 SXM / PCIe / NVL: "NVIDIA H100 Tensor Core GPU" datasheet (2023/2024)
#   H200 SXM / NVL:        "NVIDIA H200 Tensor Core GPU" datasheet (2024); GH200 has the H100 SXM GPU
#   A100 40/80 GB:         "NVIDIA A100 Tensor Core GPU" datasheet (SXM and PCIe alike)
#   L4, L40, L40S:         "NVIDIA L4 / L40 / L40S" datasheets
#   A10:                   "NVIDIA A10 Tensor Core GPU" datasheet
#   RTX 4090, RTX 3090:    "NVIDIA Ada / Ampere GA102 GPU architecture" whitepapers
#                          (bf16/fp16 with fp32 accumulate, as torch runs them)
#   V100 SXM2 / PCIe, T4:  "NVIDIA V100" and "NVIDIA T4" datasheets (no bf16 or tf32
#                          tensor cores: those dtypes are measured)
# Patterns are tried in order (the more specific first): "H100 NVL" before "H100".
_T = 1e12
PEAK_FLOPS: list[tuple[str, str, dict[str, float]]] = [
    (r"H100.*NVL", "H100 NVL", {"fp32": 60 * _T, "tf32": 417.5 * _T, "bf16": 835.5 * _T, "fp16": 835.5 * _T}),
    (r"H100.*PCIe", "H100 PCIe", {"fp32": 51.2 * _T, "tf32": 378 * _T, "bf16": 756 * _T, "fp16": 756 * _T}),
    (r"H200.*NVL", "H200 NVL", {"fp32": 60 * _T, "tf32": 417.5 * _T, "bf16": 835.5 * _T, "fp16": 835.5 * _T}),
    (r"GH200|H100|H200", "H100/H200 SXM", {"fp32": 66.9 * _T, "tf32": 494.7 * _T, "bf16": 989.4 * _T, "fp16": 989.4 * _T}),
    (r"A100", "A100", {"fp32": 19.5 * _T, "tf32": 156 * _T, "bf16": 312 * _T, "fp16": 312 * _T}),
    (r"L40S", "L40S", {"fp32": 91.6 * _T, "tf32": 183 * _T, "bf16": 362 * _T, "fp16": 362 * _T}),
    (r"L40\b", "L40", {"fp32": 90.5 * _T, "tf32": 90.5 * _T, "bf16": 181 * _T, "fp16": 181 * _T}),
    (r"\bL4\b", "L4", {"fp32": 30.3 * _T, "tf32": 60 * _T, "bf16": 121 * _T, "fp16": 121 * _T}),
    (r"\bA10\b", "A10", {"fp32": 31.2 * _T, "tf32": 62.5 * _T, "bf16": 125 * _T, "fp16": 125 * _T}),
    (r"RTX 4090", "RTX 4090", {"fp32": 82.6 * _T, "tf32": 82.6 * _T, "bf16": 165.2 * _T, "fp16": 165.2 * _T}),
    (r"RTX 3090", "RTX 3090", {"fp32": 35.6 * _T, "tf32": 35.6 * _T, "bf16": 71 * _T, "fp16": 71 * _T}),
    (r"V100.*PCIE", "V100 PCIe", {"fp32": 14 * _T, "fp16": 112 * _T}),
    (r"V100", "V100 SXM2", {"fp32": 15.7 * _T, "fp16": 125 * _T}),
    (r"\bT4\b", "T4", {"fp32": 8.1 * _T, "fp16": 65 * _T}),
]  # fmt: skip


def matmul_dtype(precision: str, device_type: str) -> str:
    """The dtype the model's matrix multiplies run in under a Lightning precision:
    bf16 | fp16 | tf32 (float32 on CUDA with TF32 allowed) | fp32."""
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if device_type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "fp32"


def table_peak(device_name: str, dtype: str) -> tuple[float, str] | None:
    """(peak FLOP/s, the table row's name) for a GPU name and dtype, or None when the
    table does not know the GPU or has no number for that dtype on it."""
    for pattern, name, peaks in PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return (peaks[dtype], name) if dtype in peaks else None
    return None


_TORCH_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "tf32": torch.float32,
}


def measure_matmul_peak(
    device: torch.device, dtype: str = "fp32", n: int = 0, reps: int = 5
) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) multiply over `reps` timed runs (after one
    warm-up): 2 n^3 / seconds. n defaults to 4096 on a GPU and 512 on a CPU (a few
    milliseconds per multiply on one thread; larger gains little)."""
    n = n or (4096 if device.type == "cuda" else 512)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=_TORCH_DTYPES[dtype])
    b = torch.randn(n, n, generator=g).to(device=device, dtype=_TORCH_DTYPES[dtype])
    best = float("inf")
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        if i:  # the first is a warm-up
            best = min(best, seconds)
    return 2 * n**3 / best


def device_peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for training on `device` under a Lightning
    precision ("bf16-mixed", "32-true", ...): the datasheet table for a known GPU,
    else a measured matmul peak in the same dtype."""
    dtype = matmul_dtype(precision, device.type)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        hit = table_peak(name, dtype)
        if hit is not None:
            return hit[0], f"datasheet {hit[1]} {dtype}"
        label = name
    else:
        label = f"{device.type} ({torch.get_num_threads()} threads)"
    return measure_matmul_peak(device, dtype), f"measured {dtype} matmul on {label}"
