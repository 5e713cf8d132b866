# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= all,dev
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mfv2 demo

# pytest exits 5 when it collects nothing; that is a failure of the suite, say so.
test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/mfv2 bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
