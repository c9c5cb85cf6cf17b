# sparsecomp developer Makefile: `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The real model definitions of the zoo test (tests/zoo.py), versions in constraints.txt. --no-deps:
# their other requirements (torch, numpy, pillow) are already installed, and timm's hub/yaml/safetensors
# requirements serve only pretrained weights, which the tests never load.
ZOO_PKGS := torchvision timm

.PHONY: venv demo test test-fast lint clean bench bench-quick zoo

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip -c constraints.txt 2>/dev/null || true
	$(PY) -m pip install -q -c constraints.txt -e '.[test,examples,dev]'
	$(PY) -m pip install -q --no-deps -c constraints.txt $(ZOO_PKGS)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo_digits.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q -rs tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow and not board" tests

lint: $(STAMP)
	$(PY) -m ruff check sparsecomp codegen tests examples benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache

# Benchmarks (benchmarks/run.py): write docs/benchmarks.md, docs/img/*.png and docs/results.json.
# MNIST IDX files are read from ../shared/data/mnist (override: make bench BENCH_ARGS="--data DIR").
BENCH_ARGS ?=

bench: $(STAMP)
	$(PY) benchmarks/run.py --mode full $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --mode quick $(BENCH_ARGS)

# The model zoo report (benchmarks/zoo.py): writes docs/zoo.md.
zoo: $(STAMP)
	$(PY) benchmarks/zoo.py
