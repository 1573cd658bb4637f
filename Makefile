# The README's commands.  Each target creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: report test fuzz bench screenshot explore explorer-screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall when pyproject.toml changes.
$(VENV)/.lab-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[lab]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

report: $(VENV)/.lab-installed  ## run the lab and write crossent-report/index.html
	$(BIN)/crossent report $(ARGS)

test: $(VENV)/.dev-installed  ## lint, then the whole test suite, doctests included
	@if [ -f package-lock.json ] && [ ! -d node_modules/playwright-core ] && command -v npm >/dev/null; then \
		npm ci --no-audit --no-fund; fi  # the explorer's browser tests (playwright-core)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

fuzz: $(VENV)/.dev-installed  ## property tests with fresh random examples, 2000 per test (minutes)
	$(BIN)/python -m pytest tests -k "not screenshot" -p no:cacheprovider --hypothesis-profile=explore $(ARGS)

bench: $(VENV)/.dev-installed  ## side-by-side benchmark (several minutes; keep the machine quiet)
	$(BIN)/python benchmarks/bench.py $(ARGS)

screenshot: $(VENV)/.lab-installed  ## headless-Chromium screenshot of the report (needs Debian's chromium)
	$(BIN)/python scripts/screenshot_report.py $(ARGS)

explore: $(VENV)/.lab-installed  ## write the explorer (one live HTML page) to crossent-explorer/ and open it
	$(BIN)/crossent explore --open $(ARGS)

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

explorer-screenshots: $(VENV)/.lab-installed node_modules/.package-lock.json  ## the README's two explorer screenshots (needs chromium)
	EXPLORER_SCREENSHOTS=docs/figures PYTHON=$(BIN)/python node --test tests/browser/

clean:
	rm -rf $(VENV) crossent-report crossent-explorer .pytest_cache
