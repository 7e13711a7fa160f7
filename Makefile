# Two commands for a newcomer: `make run` (the product on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint test-only bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/skyrun dev --example examples/mock-training

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bot worker tests bench

test-only: $(STAMP)
	$(BIN)/pytest

test: lint test-only

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/bot_startup.py

clean:
	rm -rf $(VENV) .skyrun .mypy_cache .pytest_cache .ruff_cache
