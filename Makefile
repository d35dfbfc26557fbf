# Two commands on a fresh machine: `make train` and `make test`.
# The virtual environment is created on first use and reinstalled when the pins change.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install train lint test bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Quick start: train a small DRAEM on the built-in synthetic HDMAP-like dataset (CPU, offline).
train: install
	$(PY) -m hdmap_train experiment=quickstart

## Lint (ruff: pycodestyle, pyflakes, import order, Google-style docstrings; config in pyproject.toml).
lint: install
	$(PY) -m ruff check hdmap_train tests bench

## The linter, then the test suite (CPU only, about 15 minutes on 2 cores).
test: lint
	$(PY) -m pytest

## Every benchmark (each prints its ratio last; figures in BENCHMARKS.md). About 35 minutes on 2 cores.
bench: install
	$(PY) bench/startup.py
	$(PY) bench/overhead.py
	$(PY) bench/data_throughput.py
	$(PY) bench/patchcore_fit.py
	$(PY) bench/sweep.py
	$(PY) bench/resize.py

clean:
	rm -rf $(VENV) outputs multirun/*/
