# One command each on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := bus registry agents ops perf

.PHONY: install bytecode test soak lint format demo perf clean

install: $(STAMP)

# Byte-compile MABEAM's modules (cheap when up to date): where PYTHONDONTWRITEBYTECODE=1 is set,
# every runner process the tests and the demo start would otherwise compile them all (~60 ms).
bytecode: install
	$(BIN)/python -m compileall -q mabeam $(PACKAGES) >/dev/null

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: bytecode
	$(BIN)/python -m pytest -q

# The slow tests: the 30-minute soak and each fault scenario 10 times (`SOAK=tests/faults`: only those).
SOAK ?=
soak: bytecode
	$(BIN)/python -m pytest -m slow -q $(SOAK)

# mypy and lint-imports (the layer contracts in pyproject.toml) cannot follow setuptools' editable
# import hook, so they check a tree of links that lays bus/ registry/ agents/ ops/ perf/ inside
# mabeam/ as they are installed.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf .typecheck && mkdir -p .typecheck/mabeam
	for entry in mabeam/*; do ln -s ../../$$entry .typecheck/mabeam/; done
	for pkg in $(PACKAGES); do ln -s ../../$$pkg .typecheck/mabeam/$$pkg; done
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p mabeam
	cd .typecheck && ../$(BIN)/lint-imports --no-cache --no-logo ../pyproject.toml

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: bytecode
	$(BIN)/mabeam demo

# The full suite with its report: report.md, the PNG plots (matplotlib, the `plot` extra) and
# the JSON results in perf-out/.
perf: install
	$(BIN)/python -m pip install --quiet -e '.[plot]'
	mkdir -p perf-out
	$(BIN)/mabeam perf --report perf-out --json perf-out/out.json

clean:
	rm -rf $(VENV) .typecheck build *.egg-info .pytest_cache .mypy_cache .ruff_cache
