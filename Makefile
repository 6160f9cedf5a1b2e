# The two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= demo-out

.PHONY: demo test bench setup clean

# An older python3 (Ubuntu 22.04's 3.10) is refused before anything is built: `make demo PY=python3.11`. --clear, so a
# venv left by a failed first try with another Python is built again, not reused.
$(BIN)/reconcile: pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "$(PY) is $$($(PY) -V 2>&1 || echo missing); reconcile needs Python 3.11 or later:" \
	    "run make $(MAKECMDGOALS) PY=python3.11" >&2; \
	  exit 1; }
	$(PY) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[demo,test]'
	touch $(BIN)/reconcile

setup: $(BIN)/reconcile

# The demo day has losses by design: exit 2 (loss) or 1 (pending) is the expected answer, not a failure.
demo: setup
	@$(BIN)/reconcile demo --out $(OUT); rc=$$?; \
	if [ $$rc -le 2 ]; then echo "demo finished (exit code $$rc: 2 is 'losses found', 1 'pending', as the simulated" \
	  "day is built to have; see the report above; the command is $(BIN)/reconcile, e.g. $(BIN)/reconcile trace ID)"; \
	else exit $$rc; fi

test: setup
	$(BIN)/pytest -q -n 2

bench: setup
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(OUT)
