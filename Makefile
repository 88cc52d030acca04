# Two commands set everything up from a fresh clone with only Python >= 3.11:
#   make demo   creates .venv if missing, installs, runs the main job
#   make test   creates .venv if missing, installs, runs the tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest worker processes for `make test` (each runs torch on one thread; tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: demo test bench bench-recsys gpu-check install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	# the note renderer (tessera prepare audio-notes); --no-deps: its pyaudio dependency is for
	# playback only and needs PortAudio headers to build
	$(PY) -m pip install --no-deps tinysoundfont==0.3.7
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check modalities tasks scripts tests
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the day a GPU is lent: the gpu-marked tests and the benchmarks on CUDA, one JSON (runs/gpu_check.json)
gpu-check: $(STAMP)
	bash scripts/gpu_check.sh

bench: $(STAMP)
	$(PY) scripts/bench_backbone.py

# the peer for the BERT4Rec benchmark: RecBole 1.2.1 needs old numpy/scipy, so its own venv
RECBOLE := .venv-recbole
$(RECBOLE)/.installed:
	$(PYTHON) -m venv $(RECBOLE)
	$(RECBOLE)/bin/pip install torch==2.13.0
	$(RECBOLE)/bin/pip install recbole==1.2.1
	$(RECBOLE)/bin/pip install numpy==1.23.5 scipy==1.11.4 pandas==2.0.3 'scikit-learn<1.6' 'setuptools>=77.0.3,<81'
	touch $@

bench-recsys: $(STAMP) $(RECBOLE)/.installed
	$(PY) scripts/bench_recsys.py --recbole-python $(RECBOLE)/bin/python

clean:
	rm -rf $(VENV) runs .pytest_cache
