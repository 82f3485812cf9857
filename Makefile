# peftbench — `make demo` and `make test` work on a fresh machine: each creates .venv when missing.
PYTHON ?= python3
# The CPU wheel on this machine; on a GPU machine use e.g. TORCH="torch" to get a CUDA build.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.peftbench-installed
# The AdapterHub reference venv (tests/reference; defined here because `test:` below names its stamp).
ADAPTERS_VENV := .venv-adapters
ADAPTERS_STAMP := $(ADAPTERS_VENV)/.adapters-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# pytest-xdist workers for `make test` and `make test-fast` (auto: one per CPU core; 0 runs in this process).
# --dist loadgroup keeps each xdist_group (a module sharing one expensive fixture, a contract pair) on one worker;
# the workers take the tests in collection order, which tests/conftest.py starts with the longest (FIRST).
WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: setup demo test test-fast lint bench clean configs

# configs/ (the user-facing copy) -> src/peftbench/configs/ (the package data peftbench reads, shipped in the wheel):
# every folder of configs/; its top-level files are `peftbench train` examples and stay in the checkout.
# tests/launch/test_shipped_configs.py fails while the two differ.
configs:
	rm -rf src/peftbench/configs
	mkdir -p src/peftbench/configs
	cp -R $(patsubst %/,%,$(wildcard configs/*/)) src/peftbench/configs/

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/peftbench demo

test: $(STAMP) $(ADAPTERS_STAMP)
	scripts/ensure-slurm.sh
	scripts/ensure-chromium.sh
	$(BIN)/ruff check src tests
	$(PYTEST)

# The edit-test loop: everything but the tests marked slow (the full demo, end-to-end runs, Slurm, DDP, ...).
test-fast: $(STAMP)
	$(BIN)/ruff check src tests
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf runs .pytest_cache .ruff_cache

# The AdapterHub reference tier (tests/reference): `adapters` pins transformers 4.57, so it gets its own venv
# ($(ADAPTERS_VENV)). `make test` creates it too; tests/reference skips, naming `make reference-venv`, without it.
.PHONY: reference-venv test-reference

$(ADAPTERS_STAMP): constraints-adapters.txt
	test -x $(ADAPTERS_VENV)/bin/python || $(PYTHON) -m venv $(ADAPTERS_VENV)
	$(ADAPTERS_VENV)/bin/python -m pip install -q -c constraints-adapters.txt "$(TORCH)"
	$(ADAPTERS_VENV)/bin/python -m pip install -q -c constraints-adapters.txt adapters
	touch $(ADAPTERS_STAMP)

reference-venv: $(ADAPTERS_STAMP)

# peftbench's adapter methods against AdapterHub's (logits equal, or a pinned difference).
test-reference: $(STAMP) $(ADAPTERS_STAMP)
	$(PYTEST) tests/reference
