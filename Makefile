# privkit: the two commands of the README, each creating .venv on first use.
#   make demo   - the main job (encrypted apnea detection on built-in synthetic ECG)
#   make test   - the test suite (what CI runs)
#   make docs   - the API reference (MkDocs + mkdocstrings), warnings are errors
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test test-all docs bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: in this project's package index torch==2.13.0 resolves to the CPU-only
	# wheel; other versions (and an unpinned torch) pull the CUDA build and several GB of CUDA
	# libraries. Elsewhere use e.g. --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q torch==2.13.0
	# test: pytest/hypothesis; ecg: the WFDB/EDF readers the data tests use; plots: the demo
	# figure; serve (fastapi, uvicorn, httpx: a few MB) and distributed (ray: ~240 MB) so that
	# the deploy tests run (without them those tests are skipped with a reason)
	$(PY) -m pip install -q -e '.[test,ecg,plots,serve,distributed]'
	touch $@

$(VENV)/.docs: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/privkit apnea demo --png out/apnea_demo.png

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m 'slow or not slow'

docs: $(VENV)/.docs
	$(VENV)/bin/mkdocs build --strict --site-dir out/site

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis out site
