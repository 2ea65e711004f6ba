#!/usr/bin/env bash
# The size ladder's L rung on one GPU in at most 9 minutes of wall time, no network
# (issue 27): builds the code corpus there, from the corpus snapshot carried in .whl/
# (the documents and tokenizer the CPU rungs read, so every rung reads the same tokens;
# `glassbox ladder --rungs L --prepare --snapshot .whl/code_corpus.json.xz` writes it,
# 15 MB) or, without one, from that machine's own Python (its packages and versions in
# ladder/L.corpus.json, its own BPE), trains every kind of configs/ladder/L.yaml
# (d_model 256 x 8 layers, matched active parameters; bf16, packed rows of 256 tokens,
# torch.compile) for as many steps as fit the time left, equal for every kind, prints
# tokens/s and MFU per kind, scores them (glassbox ladder: the rung's report and the
# ladder summary) if time is left, and packs checkpoints and logs into one archive.
# The sibling of gpu_check.sh; the setup is theirs (benchmarks/gpu_env.sh).
#
#   bash benchmarks/scale_gpu.sh                  # from the repository root (or anywhere)
#   OUT=/somewhere bash benchmarks/scale_gpu.sh   # where the summary and the archive go
#
# Out: $OUT/scale_gpu_summary.txt, $OUT/scale_gpu.tar.gz (bf16/<kind>/: each kind's
# checkpoint with bf16 weights; ladder/L/: each run's checkpoint/ less its fp32
# weights, logs/metrics.csv, train.log; L.corpus.json; report.* and ladder.* if scored;
# logs/), or its parts scale_gpu.tar.gz.part-aa, -ab, ... with PART_MB (join them with
# cat). The scratch folder (its path in the summary) keeps everything, fp32 included.
#
# Knobs (environment):
#   BUDGET_S (540)  the whole script's wall-clock seconds: no step starts past it
#   MFU (0.1)       the model FLOPs utilisation assumed to turn the training seconds left
#                   into steps (`glassbox ladder --fit`); the summary prints what was measured
#   STEPS ()        a fixed step count instead
#   OVERHEAD_S (60) seconds each kind spends outside its training steps (start-up,
#                   compilation, evaluation, export), set aside before the steps are fitted
#   SCORE_S (120)   seconds left after training needed to start scoring
#   CKPT (bf16)     the archive's weights: bf16 (`glassbox export --to bf16`: half the
#                   bytes), fp32 (as trained), or 0 (none: the logs and metrics only)
#   CKPT_KINDS ()   the kinds whose weights go in (dense,weight_sparse); empty: all. At L
#                   the four in bf16 are about 122 MB (moe 57, weight_sparse 23 packed);
#                   every kind's bf16 copy stays in the scratch folder (bf16/<kind>)
#   PART_MB (0)     split the archive into parts of this many MB (0: one file)
#   SNAPSHOT (.whl/code_corpus.json.xz, read if it is there)  the corpus snapshot
#   ACCEL (gpu), SMALL=1 (the tiny rung, configs/ladder/tiny/) only to try the script
#   itself on a CPU: ACCEL=cpu SMALL=1 STEPS=3 bash benchmarks/scale_gpu.sh
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
MFU=${MFU:-0.1}
STEPS=${STEPS:-}
OVERHEAD_S=${OVERHEAD_S:-60}
SCORE_S=${SCORE_S:-120}
CKPT=${CKPT:-bf16}
CKPT_KINDS=${CKPT_KINDS:-}
PART_MB=${PART_MB:-0}
ACCEL=${ACCEL:-gpu}
SMALL=${SMALL:-0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/glassbox-scale-gpu.XXXXXX")
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT" "$WORK/logs"
SUMMARY="$OUT/scale_gpu_summary.txt"
: > "$SUMMARY"
START=$(date +%s)
cd "$ROOT" || exit 1

# say, left, glassbox; datasets/omegaconf from .whl/; glassbox without an install
# shellcheck source=benchmarks/gpu_env.sh
source "$ROOT/benchmarks/gpu_env.sh"

if [ "$SMALL" = 1 ]; then LADDER=(--config configs/ladder/tiny/ladder.yaml --rungs T); RUNG=T
else LADDER=(--config configs/ladder/ladder.yaml --rungs L); RUNG=L; fi
DEVICE=$([ "$ACCEL" = cpu ] && echo cpu || echo gpu)
LADDER+=(--device "$DEVICE" --out "$WORK/ladder")
# every call names the same runs: the rung's YAML, the device's overrides, these
COMMON=("data.cache_dir=$WORK/data" "trainer.limit_val_batches=10" "run.eval_max_batches=20")
if [ -z "${SNAPSHOT:-}" ] && [ "$SMALL" != 1 ] && [ -f "$ROOT/.whl/code_corpus.json.xz" ]; then
  SNAPSHOT=$ROOT/.whl/code_corpus.json.xz  # L's own; the tiny rung takes one only if named
fi
[ -n "${SNAPSHOT:-}" ] && COMMON+=("data.code.snapshot=$SNAPSHOT")

say "glassbox scale check (ladder rung $RUNG), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import platform, torch
from glassbox.training.flops import device_peak_flops
print(f"python {platform.python_version()}, torch {torch.__version__}")
if torch.cuda.is_available():
    d = torch.device("cuda")
    peak, source = device_peak_flops(d, "bf16-mixed")
    print(f"device: {torch.cuda.get_device_name(d)}; bf16 peak for MFU {peak / 1e12:.1f} TFLOP/s ({source})")
else:
    print("no CUDA device visible")
EOF
glassbox ladder "${LADDER[@]}" --params "${COMMON[@]}" 2>&1 | tee -a "$SUMMARY"

# --- the corpus, built here from this machine's Python (Rust BPE on every core) -------
say ""
t0=$(date +%s)
TOKENIZERS_PARALLELISM=true timeout "$(left)" bash -c "$(declare -f glassbox); export PY=$PY; glassbox ladder \"\$@\"" _ \
  "${LADDER[@]}" --prepare "${COMMON[@]}" < /dev/null > "$WORK/logs/prepare.log" 2>&1 \
  || { say "data: FAILED (logs/prepare.log)"; tail -5 "$WORK/logs/prepare.log" | tee -a "$SUMMARY"; }
"$PY" - "$WORK/ladder/$RUNG.corpus.json" "$(($(date +%s) - t0))" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except OSError:
    raise SystemExit("data: no manifest")
m = d.get("manifest", {})
src = f"snapshot {m['snapshot']['sha256'][:16]}" if "snapshot" in m else "this machine's files"
print(f"data: {sys.argv[2]} s from {src}; Python {m.get('python')}, {len(m.get('packages', {}))} packages; "
      f"rows {d['rows']}, tokens {d['tokens_at_most']}; files left out {m.get('skipped')}")
EOF

# --- steps: equal for every kind, as many as fit the time left -------------------------
ARCHS=(dense moe transcoder weight_sparse)
RESERVE=$((OVERHEAD_S * ${#ARCHS[@]} + 30))  # per-kind overhead, then packing
TRAIN_S=$(($(left) - RESERVE))
glassbox ladder "${LADDER[@]}" --fit "$((TRAIN_S > 1 ? TRAIN_S : 1))" --mfu "$MFU" "${COMMON[@]}" \
  > "$WORK/fit.txt" 2> "$WORK/logs/fit.log" || { say "fit: FAILED"; cat "$WORK/logs/fit.log"; exit 1; }
FIT_STEPS=$(awk 'NR == 1 {print $3}' "$WORK/fit.txt")
STEPS=${STEPS:-$FIT_STEPS}
TOKENS=$(awk 'NR == 1 {print $5}' "$WORK/fit.txt")
say ""
say "training: $STEPS steps x $TOKENS tokens = $((STEPS * TOKENS)) tokens per kind (fitted: $FIT_STEPS steps in ${TRAIN_S} s at MFU $MFU)"
COMMON+=("trainer.max_steps=$STEPS" "trainer.val_every_n_steps=$STEPS" "trainer.checkpoint_every_n_steps=$STEPS"
         "optim.warmup_steps=$((STEPS / 20 > 0 ? STEPS / 20 : 1))")

report() {  # one run's numbers: metrics.json's (the whole run, compilation included) and
  # the median of its 20-step windows after the first (logs/metrics.csv: the steady state)
  "$PY" - "$1" "$2" "$3" <<'EOF' | tee -a "$SUMMARY"
import csv, json, statistics, sys
name, run, seconds = sys.argv[1:]
try:
    m = json.load(open(f"{run}/checkpoint/metrics.json"))
except OSError:
    print(f"{name:<15} FAILED or out of time (its log is in the archive)")
    raise SystemExit
t = m["train"]
try:
    rows = [r for r in csv.DictReader(open(f"{run}/logs/metrics.csv")) if r.get("train/mfu")]
except OSError:
    rows = []
steady = rows[1:] or rows
med = {k: statistics.median(float(r[k]) for r in steady) if steady else float("nan")
       for k in ("train/tokens_per_second", "train/mfu")}
print(f"{name:<15} steady {med['train/tokens_per_second']:>12,.0f} tok/s  MFU {med['train/mfu']:6.1%}"
      f"  | whole run {t['tokens_per_second']:>12,.0f} tok/s  MFU {t['mfu']:6.1%}"
      f"  | val_loss {m['val_loss']:.3f}  {t['steps']} steps ({t.get('stopped', '?')})  {seconds} s wall")
EOF
}

for arch in "${ARCHS[@]}"; do
  # its share of the fitted seconds, twice over, plus its overhead; never past the budget
  share=$(awk -v a="$arch" '$2 == a {print $4}' "$WORK/fit.txt")
  slice=$((2 * ${share:-0} + OVERHEAD_S))
  rest=$(($(left) - 30))
  [ "$slice" -gt "$rest" ] && slice=$rest
  if [ "$slice" -le 10 ]; then say "$arch: skipped, out of time"; continue; fi
  # training stops on the clock 30 s before the hard limit, so a slower pace than
  # fitted still ends validated and exported (metrics.json: train.stopped)
  max_s=$((slice > 60 ? slice - 30 : slice / 2))
  t0=$(date +%s)
  timeout "$slice" bash -c "$(declare -f glassbox); export PY=$PY; glassbox ladder \"\$@\"" _ \
    "${LADDER[@]}" --train-only --arch "$arch" "${COMMON[@]}" "trainer.max_seconds=$max_s" \
    < /dev/null > "$WORK/logs/train_$arch.log" 2>&1
  report "$arch" "$WORK/ladder/$RUNG/runs/$arch-seed0" "$(($(date +%s) - t0))"
done

# --- scores, if time is left: the same runs, now current, are scored, not trained -----
say ""
if [ "$(left)" -gt "$SCORE_S" ]; then
  t0=$(date +%s)
  # a time limit here too, so that runs stopped on the clock count as trained (runs.py)
  if timeout "$(($(left) - 30))" bash -c "$(declare -f glassbox); export PY=$PY; glassbox ladder \"\$@\"" _ \
    "${LADDER[@]}" "${COMMON[@]}" "trainer.max_seconds=$(left)" < /dev/null > "$WORK/logs/score.log" 2>&1; then
    say "scored in $(($(date +%s) - t0)) s: ladder/$RUNG/report.md, ladder/ladder.md"
  else
    say "scoring: not finished in the time left (logs/score.log)"
  fi
else
  say "scoring: skipped, $(left) s left (SCORE_S=$SCORE_S)"
fi

# --- one archive: the weights CKPT names, logs, metrics, manifest, reports -------------
say ""
say "total $(($(date +%s) - START)) s"
say "scratch: $WORK"
EXCLUDE=(--exclude='*.ckpt')
PARTS=(logs fit.txt ladder)
wanted() { [ -z "$CKPT_KINDS" ] || [[ ",$CKPT_KINDS," == *",$1,"* ]]; }
if [ "$CKPT" = bf16 ]; then
  EXCLUDE+=(--exclude='ladder/*/runs/*/checkpoint/model.safetensors')
  for arch in "${ARCHS[@]}"; do  # every kind's in the scratch folder, CKPT_KINDS' in the archive
    ckpt="$WORK/ladder/$RUNG/runs/$arch-seed0/checkpoint"
    [ -f "$ckpt/model.safetensors" ] || continue
    glassbox export "$ckpt" --to bf16 "$WORK/bf16/$arch" > /dev/null 2>> "$WORK/logs/export.log" \
      || say "$arch: bf16 export FAILED (logs/export.log)"
    wanted "$arch" || EXCLUDE+=(--exclude="bf16/$arch")
  done
  [ -d "$WORK/bf16" ] && PARTS+=(bf16)
elif [ "$CKPT" = fp32 ]; then
  for arch in "${ARCHS[@]}"; do
    wanted "$arch" || EXCLUDE+=(--exclude="ladder/*/runs/$arch-seed0/checkpoint/model.safetensors")
  done
else
  EXCLUDE+=(--exclude='model.safetensors')
fi
cp "$SUMMARY" "$WORK/logs/"
tar -czf "$OUT/scale_gpu.tar.gz" -C "$WORK" "${EXCLUDE[@]}" "${PARTS[@]}"
if [ "$PART_MB" -gt 0 ]; then
  split -b "${PART_MB}M" "$OUT/scale_gpu.tar.gz" "$OUT/scale_gpu.tar.gz.part-" && rm "$OUT/scale_gpu.tar.gz"
fi
echo "summary: $SUMMARY; archive: $(ls "$OUT"/scale_gpu.tar.gz* | tr '\n' ' ')"
