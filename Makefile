# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   create .venv, install, train on offline MNIST digits, export, sample with onnxruntime
#   make test   create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/mnist-8k
RUN ?= saved_models/demo

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m keras_vae.demo --data $(DATA) --out $(RUN)

test: install
	$(PY) -m pytest tests

# The inner loop: everything but the subprocess-heavy, real-data and benchmark runs.
test-fast: install
	$(PY) -m pytest tests -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
