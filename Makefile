# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   create .venv, install (Python packages, the browser page's onnxruntime-web),
#               train on offline MNIST digits, export, sample with onnxruntime
#   make test   the same install plus Debian's chromium for the browser tests, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/mnist-8k
RUN ?= saved_models/demo

WEB := export/web

.PHONY: install browser demo test test-fast lint bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

# onnxruntime-web for the browser page, from the npm registry, exactly as the lockfile pins it.
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(WEB)/node_modules/.package-lock.json

# Debian's chromium drives the browser tests (Playwright points at /usr/bin/chromium;
# nothing downloads a browser of its own).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: the browser tests will skip and say why"; \
	  else echo "chromium is missing (sudo apt-get install chromium): browser tests will skip"; fi; }

demo: install
	$(PY) -m keras_vae.demo --data $(DATA) --out $(RUN) --overwrite

test: install browser
	$(PY) -m pytest tests

# The inner loop: everything but the subprocess-heavy, real-data and benchmark runs.
test-fast: install
	$(PY) -m pytest tests -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
