# Two commands set up and run everything on a fresh machine (see README):
#   make test   create .venv if needed, install requirements, run the test suite
#   make demo   meta-train and meta-test SCCAN on the synthetic benchmark (CPU)
#   make app    the browser app (tools/app.py) on http://127.0.0.1:7860, after installing its
#               optional extras (requirements-app.txt) into .venv
#   make gpu-check   on a GPU machine: the user's path, CUDA tests and benchmarks, one report
#                    (tools/dev/gpu_check.sh; uses .venv when there is one, installs nothing: such
#                    machines may be offline)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test demo venv app app-venv gpu-check

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The linter first (ruff.toml: undefined names, unused imports, lines over 110 characters,
# anywhere in the tree), then the tests in parallel processes, one thread each (tests/conftest.py),
# at most 4.
test: venv
	$(PY) -m ruff check --quiet .
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal tests

demo: venv
	$(PY) tools/demo.py

app-venv: $(VENV)/.installed-app

$(VENV)/.installed-app: $(VENV)/.installed requirements-app.txt
	$(PY) -m pip install --quiet -r requirements-app.txt
	touch $@

app: app-venv
	$(PY) tools/app.py

gpu-check:
	tools/dev/gpu_check.sh
