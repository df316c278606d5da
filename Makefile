# Two commands on a fresh machine: `make demo` (set up + run the main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench accuracy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,s3,dask]'
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/enface models fetch

DEMO_LAKE ?= demo-lake

demo: setup
	ENFACE_DEMO_DIR="$$($(BIN)/enface models demo)" $(BIN)/enface apply configs/example.yaml --lake $(DEMO_LAKE)
	$(BIN)/enface run --lake $(DEMO_LAKE)
	$(BIN)/enface list ls --lake $(DEMO_LAKE)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/detect_throughput.py

accuracy: setup
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
