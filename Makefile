# Set-up is part of every target: the first run creates .venv and installs glassbox
# with a pinned torch (a CPU build on machines without CUDA; unpinned pip would pull
# several GB of CUDA wheels). Override with `make TORCH=torch==X.Y.Z ...`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.glassbox-installed

.PHONY: setup report report-long test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[peers,test]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: every architecture at a matched budget on the embedded skill suite,
# scored beside their untrained twins, then report/report.md, report.json, pareto.png
# (measured: 12 minutes on 2 idle cores, two runs training at once: compare.yaml's jobs: 2).
report: $(STAMP)
	$(BIN)/glassbox compare configs/compare.yaml

# Retrain every architecture at the converged budget, two seeds (what made the shipped
# checkpoints/, seed 0), into report_long/ (configs/compare_long.yaml states its time).
report-long: $(STAMP)
	$(BIN)/glassbox compare configs/compare_long.yaml

# The whole test suite; pytest's "no tests collected" (exit 5) fails like any error.
test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

# Lint, and the floors contract (.importlinter) on the tree that installs: the folders
# map into one namespace only when installed, so it is built into build/lint first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check archs training analysis tests benchmarks glassbox
	rm -rf build/lint
	$(BIN)/pip install -q --no-deps --target build/lint .
	cd build/lint && PYTHONPATH=. ../../$(BIN)/lint-imports ../../.importlinter

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_dense.py
