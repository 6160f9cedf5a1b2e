# The two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= demo-out

.PHONY: demo test bench setup clean

$(BIN)/reconcile: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[demo,test]'
	touch $(BIN)/reconcile

setup: $(BIN)/reconcile

demo: setup
	$(BIN)/reconcile demo --out $(OUT)

test: setup
	$(BIN)/pytest -q -n 2

bench: setup
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(OUT)
