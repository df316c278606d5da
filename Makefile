# Two commands on a fresh machine: `make demo` (set up + run the main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench accuracy clean chromium train-attributes gallery-shots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,s3,dask,api]'
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/enface models fetch

DEMO_LAKE ?= demo-lake

demo: setup
	ENFACE_DEMO_DIR="$$($(BIN)/enface models demo)" $(BIN)/enface apply configs/example.yaml --lake $(DEMO_LAKE)
	$(BIN)/enface run --lake $(DEMO_LAKE)
	$(BIN)/enface list ls --lake $(DEMO_LAKE)

# The endpoint's browser test drives Debian's chromium (never a downloaded browser); installed here when
# missing, as root or with passwordless sudo. Without it that one test skips, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ) && \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	} || echo "chromium could not be installed: the browser test will be skipped"

test: setup chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Refresh the README's screenshots of the page (reports/gallery/*.png); the tests themselves write elsewhere.
gallery-shots: setup chromium
	ENFACE_GALLERY_SHOTS=reports/gallery $(BIN)/python -m pytest -q tests/test_api.py -k headless_chromium

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/detect_throughput.py

accuracy: setup
	$(BIN)/python bench/accuracy.py

# Retrain the attribute network from ../shared/data/fairface (train + train_extra) with fixed seeds and write
# enface_batch/data/attribute_net.onnx: about an hour on 2 CPU cores (features are cached after the first run).
train-attributes: setup
	$(BIN)/pip install -q -e '.[train]'
	$(BIN)/python -m enface_batch.train.network

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
