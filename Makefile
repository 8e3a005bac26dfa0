# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench

$(BIN)/dmrelay: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/dmrelay
	$(BIN)/dmrelay up

test: $(BIN)/dmrelay
	$(BIN)/pytest -q

bench: $(BIN)/dmrelay
	$(BIN)/python -m bench
