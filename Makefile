# Two commands on a fresh machine: `make train` and `make test`.
# The virtual environment is created on first use and reinstalled when the pins change.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install train test test-all bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Quick start: train a small DRAEM on the built-in synthetic HDMAP-like dataset (CPU, offline).
train: install
	$(PY) -m hdmap_train experiment=quickstart

## The test suite (CPU only, a few minutes).
test: install
	$(PY) -m pytest

## Every benchmark (each prints its ratio last; figures in BENCHMARKS.md). About 15 minutes on 2 cores.
bench: install
	$(PY) bench/overhead.py
	$(PY) bench/data_throughput.py
	$(PY) bench/patchcore_fit.py
	$(PY) bench/sweep.py

clean:
	rm -rf $(VENV) outputs multirun/*/
