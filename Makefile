# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
# Always through the venv's interpreter, never a script's shebang.
PY := $(VENV)/bin/python

.PHONY: run test check bench

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/installed
	$(PY) -m app.cli up

test: $(VENV)/installed
	$(PY) -m pytest -q

# Types (mypy strict, configured in pyproject.toml) and lint: what CI checks besides the tests.
check: $(VENV)/installed
	$(PY) -m ruff check app tests bench migrations
	$(PY) -m ruff format --check app tests bench migrations
	$(PY) -m mypy

bench: $(VENV)/installed
	$(PY) -m bench
