# Two commands on a fresh machine:  make repro  (install + run the pipeline)   make test  (install + tests)
# make test-fast: the quick loop while editing (everything but the end-to-end DVC runs marked `slow`)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install repro test test-fast benchmark clean-venv

PLOTS_TEMPLATE := .dvc/offline_plots.html

install: $(VENV)/.installed $(PLOTS_TEMPLATE)

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test,onnx]'
	$(PY) -m ladeda.tools.offline_plots $(PLOTS_TEMPLATE)
	touch $@

# the offline `dvc plots` template (.dvc/config names it); order-only: remade only when missing
$(PLOTS_TEMPLATE): | $(VENV)/.installed
	$(PY) -m ladeda.tools.offline_plots $@

repro: install
	dvc repro

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m 'not slow'

benchmark: install
	$(PY) benchmarks/inference.py

clean-venv:
	rm -rf $(VENV)
