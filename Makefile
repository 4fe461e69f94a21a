# tfaural — the two commands of the quick start are `make demo` and `make test`.
# Both create .venv (if needed), install the package and the Debian packages it needs, then run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfaural-installed
DEMO_DIR ?= demo
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: install system-deps test lint demo clean benchmarks

# The packages go in with uv, or with pip if uv cannot be had or fails: uv downloads and installs in parallel,
# faster than pip on a fresh machine, and resolves the same versions.
$(STAMP): setup.py pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check 'uv>=0.5' || true
	$(call pip_install,--upgrade pip setuptools wheel)
	$(call pip_install,-e '.[test]')
	$(call pip_install,--no-deps musicnn==0.1.0)  # pretrained taggers' weights (its numpy<1.17 pin is obsolete)
	touch $(STAMP)

# A package index set for pip in the environment is uv's too (uv reads no pip.conf: where PyPI cannot be
# reached, pip and its configuration take over).
ifdef PIP_INDEX_URL
export UV_INDEX_URL ?= $(PIP_INDEX_URL)
endif
ifdef PIP_EXTRA_INDEX_URL
export UV_EXTRA_INDEX_URL ?= $(PIP_EXTRA_INDEX_URL)
endif

# $(call pip_install,ARGS): uv pip install ARGS into the venv, else pip install ARGS. Both compile the packages'
# bytecode as they install them (uv when asked): a process that may not write it (PYTHONDONTWRITEBYTECODE, as
# many containers set, or a read-only venv) would otherwise compile TensorFlow's and Beam's modules at every start.
pip_install = { test -x $(VENV)/bin/uv && $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) $(1); } \
	|| $(PY) -m pip install -q $(1)

install: $(STAMP) system-deps

system-deps:
	bash scripts/install_system_deps.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Two workers, one module each at a time, the long modules first (tests/conftest.py): on 2 cores most of a
# long module is single-threaded start-up, so two overlap well. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

demo: install
	$(PY) -m quickstart --output $(DEMO_DIR)

benchmarks: install
	$(PY) -m benchmarks --output benchmarks/results.json

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
