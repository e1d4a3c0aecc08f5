# The two set-up commands of the README: `make demo` (main job) and `make test` (test suite).
# Each creates .venv if missing and installs what it needs first: the demo the package alone,
# the tests the package with its `dev` and `torch` extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install install-demo lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install-demo: $(PY)
	$(PY) -m pip install --quiet -e . -c requirements/ci-constraints.txt

install: $(PY)
	$(PY) -m pip install --quiet -e ".[dev,torch]" -c requirements/ci-constraints.txt

demo: install-demo
	$(PY) -m apps.demo

test: install
	$(PY) -m pytest -n 2 --dist worksteal -q tests

lint: install
	$(PY) -m ruff check .
