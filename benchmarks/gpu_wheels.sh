#!/usr/bin/env bash
# Fills .whl/ (gitignored) with the wheels that a GPU machine without network needs and
# its image may lack: datasets and omegaconf, and the two of datasets' needs that a
# PyTorch image seldom has (dill, multiprocess). Run it here, where pip reaches PyPI,
# before copying the tree to that machine; gpu_check.sh and scale_gpu.sh install them
# there (benchmarks/gpu_env.sh) when its Python cannot import datasets and omegaconf.
#
#   bash benchmarks/gpu_wheels.sh                 # for the GPU machine's Python 3.12
#   PYV=3.11 bash benchmarks/gpu_wheels.sh        # for another Python version
#
# Each is pinned at the version this checkout's environment has (.venv/, or PYTHON), so
# the GPU machine runs what the tests here ran. Only these four travel (under 2 MB): the
# rest of datasets' needs (pyarrow, pandas, fsspec, huggingface_hub, xxhash, ...) are
# taken from that machine's image, and gpu_env.sh prints their versions.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PYV=${PYV:-3.12}
PKGS=(datasets omegaconf dill multiprocess)

[ -x "$PY" ] || { echo "gpu_wheels: no Python at $PY (run make setup, or set PYTHON)" >&2; exit 2; }
mapfile -t PINS < <("$PY" - "${PKGS[@]}" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        raise SystemExit(f"gpu_wheels: {name} is not installed in {sys.executable}")
EOF
)
rm -rf "$ROOT/.whl"
mkdir -p "$ROOT/.whl"
# wheels only, for that Python whatever this one is (each of these is pure Python)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$ROOT/.whl" "${PINS[@]}"
echo "gpu_wheels: ${PINS[*]} for Python $PYV in .whl/:"
ls -1 "$ROOT/.whl"
