# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create the environment in .venv/ first (only the package registries are needed).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# `make demo ARCHIVE=path/to/oregon-wildlife.zip` uses the real Kaggle archive.
ARCHIVE ?=
DEMO_DIR ?= runs/demo
PER_CLASS ?= 12

.PHONY: demo test lint format bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	@PY=$(PY) ARCHIVE=$(ARCHIVE) DEMO_DIR=$(DEMO_DIR) PER_CLASS=$(PER_CLASS) bash scripts/demo.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two workers, each taking whole files (module fixtures are built once per file).
test: lint
	$(PY) -m pytest -n 2 --dist loadfile

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)  # CPU benchmarks; benchmarks.gpu_throughput needs a GPU.
	$(PY) -m benchmarks.build_and_input
	$(PY) -m benchmarks.near_duplicates
	$(PY) -m benchmarks.input_pipeline
	$(PY) -m benchmarks.train_throughput

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
