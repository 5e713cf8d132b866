# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= all,dev
STAMP := $(VENV)/.installed
# The CPU build of torch that installs without a multi-GB CUDA download: every target keeps it.
TORCH_PIN := $(shell grep -m1 '^torch==' constraints.txt)

.PHONY: install demo test typecheck bench lock test-latest clean

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

# mypy over the package (configured in pyproject.toml); CI runs it before the suite.
typecheck: $(STAMP)
	$(BIN)/python -m mypy mfv2

bench: $(STAMP)
	$(BIN)/mfv2 bench

# Refresh constraints.txt from a fresh resolve of the extras above (newest releases, torch kept on its CPU
# wheel), then run the suite in that environment; constraints.txt changes only if the suite passes.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	echo "$(TORCH_PIN)" > .venv-lock/torch.txt
	.venv-lock/bin/pip install -q -c .venv-lock/torch.txt -e ".[$(EXTRAS)]"
	.venv-lock/bin/python -m pytest -q
	{ echo "# The tested set: 'make lock' wrote it from a fresh resolve of .[$(EXTRAS)] on $$(date -u +%F) and the suite passed."; \
	  echo "# The Makefile installs with these pins; pyproject.toml keeps ranges for users."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^mfv2[= @]' | sed 's/^\(torch==[^+]*\)+cpu$$/\1/'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf .venv-lock

# The suite against the newest releases of every dependency (torch kept on its CPU wheel): drift shows
# here before users meet it. Leaves .venv-latest for a look; `make clean` removes it.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	echo "$(TORCH_PIN)" > .venv-latest/torch.txt
	.venv-latest/bin/pip install -q -c .venv-latest/torch.txt -e ".[$(EXTRAS)]"
	.venv-latest/bin/pip freeze --exclude-editable | sed 's/^\(torch==[^+]*\)+cpu$$/\1/' | diff constraints.txt - | grep '^[<>] [A-Za-z]' || true
	.venv-latest/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-lock .venv-latest build dist *.egg-info .pytest_cache
