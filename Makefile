# Quick start on a fresh machine with Python 3.11+ and pip:
#   make demo    # creates .venv, installs jconvt, runs the end-to-end demonstration
#   make test    # creates .venv, installs jconvt[test], runs the whole default suite
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-floor test-slow explore bench golden clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed-test
	$(BIN)/python examples/demo.py

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

# The default suite on the oldest dependencies pyproject.toml allows
# (.ci/floor-constraints.txt), in a venv of its own.
FLOOR_VENV := .venv-floor
$(FLOOR_VENV)/.installed-test: pyproject.toml .ci/floor-constraints.txt
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install -q -c .ci/floor-constraints.txt -e '.[test]'
	touch $@

test-floor: $(FLOOR_VENV)/.installed-test
	$(FLOOR_VENV)/bin/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 -m slow $(PYTEST_ARGS)

# The property tests with fresh random examples, 10x as many as `make test`
# replays (about 15 minutes on 2 cores).
explore: $(VENV)/.installed-test
	JCONVT_HYPOTHESIS=explore $(BIN)/python -m pytest -n 2 tests/test_properties.py $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Regenerates the golden fixtures with real TF (the `tf` extra) and, when
# installed, PyTorch.
golden: $(VENV)/.installed-bench
	TF_USE_LEGACY_KERAS=1 $(BIN)/python tests/golden/make_golden.py
	TF_USE_LEGACY_KERAS=1 $(BIN)/python tests/golden/make_tf_layers.py
	$(BIN)/python tests/golden/make_tf_nn.py
	if $(BIN)/python -c "import torch" 2>/dev/null; then $(BIN)/python tests/golden/make_torch_golden.py; fi

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache .hypothesis
