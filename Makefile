# hybridvision — two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all install clean bench

# Install (once) into .venv with the pinned constraints; re-run when the package metadata changes.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hybridvision demo

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

bench: $(STAMP)
	$(VENV)/bin/hybridvision bench fcos_r50_fpn torchvision:fcos_resnet50_fpn nl_fcos_r50_fpn --runs 7
	$(PY) benchmarks/bench_nonlocal.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
