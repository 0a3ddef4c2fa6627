# Everything runs from a virtual environment inside the checkout.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
export DEMAND_MODEL_DIR ?= models

.PHONY: install run train test test-fast lint bench screenshots clean

install: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[train,test]'
	touch $@

# Train the default model if the registry has no champion yet, then serve it.
run: install
	@test -s $(DEMAND_MODEL_DIR)/champion || $(BIN)/demand train
	@$(BIN)/demand models list
	@echo
	@echo "Serving on http://$(HOST):$(PORT) (Ctrl-C to stop). Try, from another terminal:"
	@echo "  curl -s http://$(HOST):$(PORT)/predict -H 'Content-Type: application/json' -d '{\"instances\": [{\"prev_week_sales\": 76440, \"discount_fraction\": 63, \"weeks_to_next_holidays\": 2}]}'"
	@echo
	$(BIN)/demand serve --host $(HOST) --port $(PORT)

train: install
	$(BIN)/demand train

test: install
	@bash deploy/test-tools.sh
	$(BIN)/python -m pytest -q

# The tests that start no process, program or server (the rest are marked slow).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# ruff's lint and its formatter, and mypy on pipeline/ and service/, configured in pyproject.toml.
lint: install
	$(BIN)/ruff check pipeline service tests bench
	$(BIN)/ruff format --check pipeline service tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py --output docs/benchmarks.md

# The planners' page in each view, as the README shows it (the page's browser tests write them).
screenshots: install
	@bash deploy/test-tools.sh
	DEMAND_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/test_page.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
