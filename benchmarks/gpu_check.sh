#!/usr/bin/env bash
# One GPU check, at most 8 minutes on one GPU, no network: trains every architecture
# of configs/compare_gpu.yaml for a few hundred steps at the GPU compare size (packed
# rows, bf16), prints tokens/s and MFU of each, trains dense once more compiled, and
# runs the dense and MoE benchmarks on cuda. Record what it prints in
# benchmarks/README.md with the date and the chip.
#
#   bash benchmarks/gpu_check.sh                  # from the repository root (or anywhere)
#   OUT=/somewhere bash benchmarks/gpu_check.sh   # where the summary and the log tarball go
#
# It runs from a plain copy of the tree (benchmarks/gpu_env.sh: glassbox through a
# folder of links, no install). It needs torch (CUDA), lightning, transformers,
# tokenizers, torchmetrics, safetensors and matplotlib in the Python it finds ($PYTHON,
# else python3); datasets and omegaconf, if missing, are installed from wheels in .whl/
# (benchmarks/gpu_wheels.sh fills it). Its sibling scale_gpu.sh trains the size
# ladder's L rung on code (benchmarks/README.md).
#
# Knobs (environment): STEPS (300) training steps per architecture; ACCEL (gpu) and
# SMALL=1 (a tiny model, CPU benchmarks) only to try the script itself on a CPU.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
STEPS=${STEPS:-300}
ACCEL=${ACCEL:-gpu}
SMALL=${SMALL:-0}
BUDGET_S=${BUDGET_S:-450}  # stop starting new steps after this many seconds
WORK=$(mktemp -d "${TMPDIR:-/tmp}/glassbox-gpu-check.XXXXXX")
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT" "$WORK/logs"
SUMMARY="$OUT/gpu_check_summary.txt"
START=$(date +%s)
cd "$ROOT" || exit 1

# say, left, glassbox, script; datasets/omegaconf from .whl/; glassbox without an install
# shellcheck source=benchmarks/gpu_env.sh
source "$ROOT/benchmarks/gpu_env.sh"

say "glassbox GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import platform, torch
from glassbox.training.flops import device_peak_flops
print(f"python {platform.python_version()}, torch {torch.__version__}")
if torch.cuda.is_available():
    d = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(d)}, {torch.cuda.device_count()} visible")
    peak, source = device_peak_flops(d, "bf16-mixed")
    print(f"bf16 peak for MFU: {peak / 1e12:.1f} TFLOP/s ({source})")
else:
    print("no CUDA device visible")
EOF

# --- every architecture of compare_gpu.yaml at the GPU size, a few hundred steps ----
"$PY" - "$SMALL" > "$WORK/runs.txt" <<'EOF'
import sys
from omegaconf import OmegaConf
cc = OmegaConf.load("configs/compare_gpu.yaml")
arch_over = cc.get("arch_overrides", {}) or {}
for arch, path in cc.architectures.items():
    over = [*cc.overrides, *arch_over.get(arch, [])]
    if sys.argv[1] == "1":  # trying the script on a CPU: a tiny model
        over = [o for o in over if not o.startswith(("model.", "trainer.precision", "trainer.accelerator"))]
        over += ["model.d_model=64", "model.n_heads=4", "model.n_layers=2", "data.batch_size=2"]
    print(arch, path, " ".join(over))
EOF
COMMON=(
  "trainer.max_steps=$STEPS" "trainer.val_every_n_steps=$STEPS" "trainer.limit_val_batches=5"
  "trainer.checkpoint_every_n_steps=100000" "trainer.loggers=[csv]" "trainer.progress_bar=false"
  "optim.warmup_steps=$((STEPS / 10))" "run.eval_max_batches=5" "data.n_train=50000"
  "data.n_val=500" "data.n_test=500" "data.n_ood=500" "data.cache_dir=$WORK/data"
)
[ "$ACCEL" = cpu ] && COMMON+=("trainer.accelerator=cpu" "trainer.precision=32-true" "data.num_workers=0")

report() {  # the numbers of one run, from its metrics.json
  "$PY" - "$1" "$2" "$3" <<'EOF' | tee -a "$SUMMARY"
import json, sys
name, export, seconds = sys.argv[1:]
try:
    m = json.load(open(f"{export}/metrics.json"))
except OSError:
    print(f"{name:<22} FAILED (see its log in the tarball)")
    raise SystemExit
t = m["train"]
print(f"{name:<22} {t['tokens_per_second']:>12,.0f} tok/s  {t['flops_per_second'] / 1e12:7.1f} TFLOP/s  "
      f"MFU {t['mfu']:6.1%}  val_loss {m['val_loss']:.3f}  {t['steps']} steps  {seconds} s wall")
EOF
}

say ""
say "training: $STEPS steps each, packed rows, at compare_gpu.yaml's size and batch"
run_arch() {  # name, config, overrides...
  local name=$1 config=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$(left)" bash -c "$(declare -f glassbox); export PY=$PY; glassbox train \"\$@\"" _ \
    "$config" "$@" "${COMMON[@]}" "run.out_dir=$WORK/runs/$name" \
    < /dev/null > "$WORK/logs/train_$name.log" 2>&1
  report "$name" "$WORK/runs/$name/checkpoint" "$(($(date +%s) - t0))"
}
while read -r arch path over; do
  if [ "$(left)" -le 30 ]; then say "$arch: skipped, out of time"; continue; fi
  # shellcheck disable=SC2086  # the overrides are space-separated key=value words
  run_arch "$arch" "$path" $over
done < "$WORK/runs.txt"

# --- benchmarks on the device: ours against HF at the large size, MoE layer --------
say ""
if [ "$SMALL" = 1 ]; then
  DEV=(--device cpu --dtype float32); DENSE=(--sizes tiny --reps 3); MOE=(--shapes 16x128k4 --tokens 1024 --reps 3)
else
  DEV=(--device cuda --dtype bfloat16); DENSE=(--sizes large --reps 20)
  MOE=(--d-model 512 --shapes 16x512k4,32x384k8 --tokens 16384 --reps 20)
fi
if [ "$(left)" -gt 60 ]; then
  say "bench_dense.py ${DEV[*]} ${DENSE[*]}"
  timeout "$(left)" bash -c "$(declare -f script); export PY=$PY; script benchmarks/bench_dense.py \"\$@\"" _ \
    "${DEV[@]}" "${DENSE[@]}" 2>&1 | tee "$WORK/logs/bench_dense.log" | grep -v "^ *$" | tail -6 | tee -a "$SUMMARY"
fi
if [ "$(left)" -gt 45 ]; then
  say "bench_moe.py ${DEV[*]} ${MOE[*]}"
  timeout "$(left)" bash -c "$(declare -f script); export PY=$PY; script benchmarks/bench_moe.py \"\$@\"" _ \
    "${DEV[@]}" "${MOE[@]}" 2>&1 | tee "$WORK/logs/bench_moe.log" | grep -v "^ *$" | tail -12 | tee -a "$SUMMARY"
fi

# --- dense once more under torch.compile, in the time left -------------------------
say ""
if [ "$(left)" -gt 90 ]; then
  read -r arch path over < <(grep '^dense ' "$WORK/runs.txt")
  # shellcheck disable=SC2086
  run_arch dense+compile "$path" $over trainer.compile=true
else
  say "dense+compile: skipped, out of time"
fi

say ""
say "total $(($(date +%s) - START)) s"
tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$WORK" logs runs.txt \
  $(cd "$WORK" && ls -d runs/*/logs/metrics.csv runs/*/checkpoint/metrics.json 2>/dev/null)
echo "summary: $SUMMARY; logs: $OUT/gpu_check_logs.tar.gz"
