# privkit: the two commands of the README, each creating .venv on first use.
#   make demo   - the main job (encrypted apnea detection on built-in synthetic ECG)
#   make test   - the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build; an unpinned torch pulls several GB of CUDA
	$(PY) -m pip install -q torch==2.13.0
	# serve (fastapi, uvicorn, httpx: a few MB) and distributed (ray: ~240 MB, ~10 s from a
	# warm cache) so that the deploy tests run; without them those tests are skipped with a reason
	$(PY) -m pip install -q -e '.[test,serve,distributed]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/privkit apnea demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m 'slow or not slow'

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
