# Two commands set everything up from a fresh clone with only Python >= 3.11:
#   make demo   creates .venv if missing, installs, runs the main job
#   make test   creates .venv if missing, installs, runs the tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check modalities tasks scripts tests
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_backbone.py

clean:
	rm -rf $(VENV) runs .pytest_cache
