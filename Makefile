# Set-up is part of every target: the first run creates .venv and installs glassbox
# with a pinned torch (a CPU build on machines without CUDA; unpinned pip would pull
# several GB of CUDA wheels). Override with `make TORCH=torch==X.Y.Z ...`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.glassbox-installed

.PHONY: setup report results notebooks report-long report-smoke matched-loss ship test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[peers,test]"
	# circuit-tracer's graph schema and viewer, for the graph tests (tests/test_graphs.py):
	# without its dependencies, whose transformers<=4.57 pin the peers' 5.x would lose
	$(BIN)/pip install -q --no-deps "circuit-tracer==0.5.0"
	touch $(STAMP)

setup: $(STAMP)

# The main job: the shipped checkpoints (checkpoints/, one per kind, trained by
# report-long at seed 0) scored beside their untrained twins and what the token alone
# predicts; report/report.md, report.json, pareto.png. Nothing is trained.
report: $(STAMP)
	$(BIN)/glassbox compare configs/compare_shipped.yaml

# The report the README quotes, committed: the main job's report/ rewritten into
# docs/results/ (report.md, report.html, report.json, pareto.png, the runs' plots).
results: report
	$(BIN)/python -c "from glassbox.report import Report; Report.read('report/report.json').publish('docs/results')"

# The notebooks executed in place on the shipped checkpoints, so that they are committed
# with their outputs (tests/test_notebooks.py executes them again and checks the numbers).
# Their files go to build/notebooks/ (a relative path, so no output names this machine).
notebooks: $(STAMP)
	GLASSBOX_NOTEBOOK_OUT=build/notebooks $(BIN)/jupyter-execute --inplace --timeout=600 \
		--kernel_name=python3 notebooks/*.ipynb

# Retrain every architecture at the converged budget, two seeds, into report_long/
# (configs/compare_long.yaml states its time); `make ship` then makes them the shipped ones.
report-long: $(STAMP)
	$(BIN)/glassbox compare configs/compare_long.yaml

# Circuit size against pretraining loss along training, dense and weight_sparse at two
# seeds, and their size ratio at matched loss (configs/compare_matched.yaml states its time).
matched-loss: $(STAMP)
	$(BIN)/glassbox matched-loss configs/compare_matched.yaml

# report-long's seed-0 runs into checkpoints/, scored by the main job, their model cards
# written from its report/report.json, and the dashboards of the readable units exported.
ship: $(STAMP)
	$(BIN)/glassbox ship report_long --seed 0 --to checkpoints
	$(BIN)/glassbox compare configs/compare_shipped.yaml
	$(BIN)/glassbox ship report_long --seed 0 --to checkpoints --cards-only --scores report/report.json
	for n in moe moe_relu transcoder; do \
		$(BIN)/glassbox export glassbox/$$n --to features checkpoints/$$n/features || exit 1; \
	done

# The 600-step smoke comparison (every kind trained, two seeds; ~12 min on 2 cores).
report-smoke: $(STAMP)
	$(BIN)/glassbox compare configs/compare.yaml

# The whole test suite; pytest's "no tests collected" (exit 5) fails like any error.
# Every test runs on one thread (tests/conftest.py), so one worker per core (pytest-xdist),
# a test file's tests on one worker (their module fixtures built once), the files with
# slow tests first (tests/conftest.py): about 9 minutes on 2 cores, 20 in one process;
# the 20 slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n auto --dist loadfile --durations=20

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
