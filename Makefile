# make run  - create .venv, install, and serve on 127.0.0.1:8080 (APP_INTERFACE/APP_PORT)
# make test - create .venv, install the test tools too, lint, type-check and run every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench bench-quality train clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(PY) main.py

test: lint
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(VENV)/.dev
	$(PY) -m bench.run_all

bench-quality: $(VENV)/.quality
	$(PY) -m bench.quality

train: $(VENV)/.dev
	$(PY) -m training.train

$(VENV)/.quality: requirements-quality.txt $(VENV)/.dev
	$(PY) -m pip install --quiet -r requirements-quality.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
