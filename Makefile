# Two commands on a fresh machine:  make repro  (install + run the pipeline)   make test  (install + tests)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install repro test benchmark clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test,onnx]'
	touch $@

repro: install
	dvc repro

test: install
	$(PY) -m pytest

benchmark: install
	$(PY) benchmarks/inference.py

clean-venv:
	rm -rf $(VENV)
