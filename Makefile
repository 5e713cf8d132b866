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
# The training tests run in their own process: in one process after the runtime tests (OpenVINO and
# ONNX Runtime thread pools loaded) the interpreter has segfaulted near the end of them; see the note
# in tests/test_training.py.
test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/test_training.py; rc=$$?; \
	$(BIN)/python -m pytest -q tests/test_training.py; rc2=$$?; \
	if [ $$rc -eq 5 ] || [ $$rc2 -eq 5 ]; then echo "no tests were collected" >&2; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$rc2

bench: $(STAMP)
	$(BIN)/mfv2 bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
