# Sourced by the GPU scripts (gpu_check.sh, scale_gpu.sh), never run: glassbox from a
# plain copy of the tree, without an install, on a machine with no network.
#
# Expects ROOT (the repository), PY (the Python), WORK (a scratch folder), SUMMARY (the
# summary file), START (the script's start, seconds since the epoch) and BUDGET_S (its
# budget in seconds). Gives say (print and keep in the summary), left (seconds of the
# budget left), glassbox (the CLI) and script (a benchmark script with glassbox
# importable); exits 2 when datasets/omegaconf are missing and .whl/ cannot supply them.
#
# datasets and omegaconf, if missing, are installed from the wheels in .whl/ (gitignored)
# without their needs, which the GPU machine's image has (pyarrow, pandas, fsspec,
# huggingface_hub). Fill .whl/ beforehand, where pip reaches PyPI:
#   bash benchmarks/gpu_wheels.sh

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# --- Python packages: datasets and omegaconf from .whl/ when missing --------------
if ! "$PY" -c "import datasets, omegaconf" 2>/dev/null; then
  if ! compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
    say "datasets/omegaconf missing and no wheels in .whl/: fill it with benchmarks/gpu_wheels.sh"
    exit 2
  fi
  # --no-deps: a resolving install refuses an image whose fsspec or huggingface_hub lies
  # outside datasets' pins, though datasets runs with them
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$WORK/site" "$ROOT"/.whl/*.whl \
    || { say "installing the wheels of .whl/ into $WORK/site failed"; exit 2; }
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  if ! err=$("$PY" -c "import datasets, omegaconf" 2>&1); then
    say "datasets/omegaconf from .whl/ do not import: $(echo "$err" | tail -1)"
    exit 2
  fi
fi
# the versions the run relies on, some of them the image's own
"$PY" - <<'EOF' | tee -a "$SUMMARY"
import importlib.metadata as md
names = ("datasets", "omegaconf", "pyarrow", "pandas", "fsspec", "huggingface_hub", "tokenizers", "lightning")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "missing"
print("packages: " + ", ".join(f"{n} {version(n)}" for n in names))
EOF

# --- glassbox without an install: glassbox/ plus archs, training, analysis as its
# subpackages (what pyproject's package-dir maps), linked into one folder ----------
mkdir -p "$WORK/ns/glassbox"
ln -s "$ROOT"/glassbox/*.py "$WORK/ns/glassbox/"
for sub in archs training analysis; do ln -s "$ROOT/$sub" "$WORK/ns/glassbox/$sub"; done
export PYTHONPATH="$WORK/ns${PYTHONPATH:+:$PYTHONPATH}"
# Python >= 3.11: the working directory (the checkout, whose own glassbox/ folder lacks
# archs, training and analysis) is not put before that folder on sys.path
export PYTHONSAFEPATH=1
export PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
# A script run with glassbox imported first (the scripts put the checkout on sys.path).
script() { "$PY" -c 'import glassbox.archs, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")' "$@"; }
glassbox() { "$PY" -c 'import sys; from glassbox.cli import main; raise SystemExit(main(sys.argv[1:]))' "$@"; }
