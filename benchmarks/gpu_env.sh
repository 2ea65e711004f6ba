# Sourced by the GPU scripts (gpu_check.sh, scale_gpu.sh), never run: glassbox from a
# plain copy of the tree, without an install, on a machine with no network.
#
# Expects ROOT (the repository), PY (the Python), WORK (a scratch folder), SUMMARY (the
# summary file), START (the script's start, seconds since the epoch) and BUDGET_S (its
# budget in seconds). Gives say (print and keep in the summary), left (seconds of the
# budget left), glassbox (the CLI) and script (a benchmark script with glassbox
# importable); exits 2 when datasets/omegaconf are missing and .whl/ cannot supply them.
#
# datasets and omegaconf, if missing, are installed from wheels in .whl/ (gitignored).
# Fill .whl/ beforehand on a networked Linux x86_64 machine with the GPU machine's
# Python version (3.12 here):
#   python3.12 -m pip download -d .whl datasets omegaconf
#   python3.12 -m pip wheel -w .whl --no-deps .whl/*.tar.gz && rm .whl/*.tar.gz
# (antlr4-python3-runtime, needed by omegaconf, ships only as a source archive; the
# second line turns it into a wheel so that nothing is built on the GPU machine).

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# --- Python packages: datasets and omegaconf from .whl/ when missing --------------
if ! "$PY" -c "import datasets, omegaconf" 2>/dev/null; then
  if [ ! -d "$ROOT/.whl" ]; then
    say "datasets/omegaconf missing and no .whl/ folder: fill it as benchmarks/gpu_env.sh says"
    exit 2
  fi
  "$PY" -m pip install -q --no-index --find-links "$ROOT/.whl" datasets omegaconf \
    || "$PY" -m pip install -q --no-index --find-links "$ROOT/.whl" --target "$WORK/site" \
      datasets omegaconf \
    || { say "installing datasets/omegaconf from .whl/ failed"; exit 2; }
  [ -d "$WORK/site" ] && export PYTHONPATH="$WORK/site"
fi

# --- glassbox without an install: glassbox/ plus archs, training, analysis as its
# subpackages (what pyproject's package-dir maps), linked into one folder ----------
mkdir -p "$WORK/ns/glassbox"
ln -s "$ROOT"/glassbox/*.py "$WORK/ns/glassbox/"
for sub in archs training analysis; do ln -s "$ROOT/$sub" "$WORK/ns/glassbox/$sub"; done
export PYTHONPATH="$WORK/ns${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
# A script run with glassbox imported first (the scripts put the checkout on sys.path).
script() { "$PY" -c 'import glassbox.archs, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")' "$@"; }
glassbox() { "$PY" -c 'import sys; from glassbox.cli import main; raise SystemExit(main(sys.argv[1:]))' "$@"; }
