# The two set-up commands of the README: `make demo` (main job) and `make test` (test suite).
# Each creates .venv if missing and installs the package with its dependencies first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[dev,torch]" -c requirements/ci-constraints.txt

demo: install
	$(PY) -m apps.demo

test: install
	$(PY) -m pytest -n 2 -q tests

lint: install
	$(PY) -m ruff check .
