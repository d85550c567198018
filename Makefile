# da-embed: the two commands of the README (`make demo`, `make test`) and a few more.
# Every target installs what it needs into .venv first, so a fresh clone needs
# only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
VPY    := $(VENV)/bin/python
# torch is pinned first: pip takes the local CPU wheel of 2.13.0; any open range
# would pull a multi-gigabyte CUDA build.  The package itself accepts torch>=2.3.
TORCH  := torch==2.13.0
# Every install takes the tested versions of requirements/constraints.txt (a lock of all
# direct and transitive dependencies), so a fresh clone gets what the suite passed with.
PIP    := $(VPY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt

.PHONY: demo demo-filters test test-lower test-all bench docs lock clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)

$(VENV)/.stamp-base: pyproject.toml requirements/constraints.txt | $(VPY)
	$(PIP) -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml requirements/constraints.txt | $(VPY)
	$(PIP) -e ".[test]"
	touch $@

$(VENV)/.stamp-bench: pyproject.toml requirements/constraints.txt | $(VPY)
	$(PIP) -e ".[test,bench]"
	touch $@

$(VENV)/.stamp-docs: pyproject.toml requirements/constraints.txt | $(VPY)
	$(PIP) -e ".[test,docs]"
	touch $@

# The main job: the reference model (trained once, ~2.5 min, then cached) adapted online
# to a domain shift by frozen / dyneval / EKF / 4D-Var / EnKF / UKF; outputs in runs/demo.
demo: $(VENV)/.stamp-base
	$(VPY) -m da_embed.demo --out runs/demo

# The filters alone: every filter on Lorenz-96 (sakov2008).
demo-filters: $(VENV)/.stamp-base
	$(VPY) -m filters.demo --out runs/demo-filters

test: $(VENV)/.stamp-test
	$(VPY) -m pytest -m "not slow" -q

# The suite again with every direct dependency at the lower bound of its range in pyproject.toml
# (requirements/lower-bounds.txt), in its own venv; CI runs it after `make test`.
LOWER := .venv-lower
$(LOWER)/.stamp: pyproject.toml requirements/lower-bounds.txt
	rm -rf $(LOWER) && $(PYTHON) -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(LOWER)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/lower-bounds.txt -e ".[test]"
	touch $@

test-lower: $(LOWER)/.stamp
	$(LOWER)/bin/python -m pytest -m "not slow" -q -p no:cacheprovider

test-all: $(VENV)/.stamp-test
	$(VPY) -m pytest -q

bench: $(VENV)/.stamp-bench
	$(VPY) tests/benchmarks/run_benchmarks.py
	$(VPY) tests/benchmarks/bench_compiled.py
	$(VPY) tests/benchmarks/bench_variational.py
	$(VPY) tests/benchmarks/bench_lm.py
	$(VPY) tests/benchmarks/bench_generate_cost.py
	$(VPY) tests/benchmarks/bench_sweep.py

# The HTML lands in docs/_build/html (index.html); warnings are errors.
docs: $(VENV)/.stamp-docs
	$(VPY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Re-resolve the lock from pyproject.toml's open ranges in a scratch venv (then run make test).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,docs,bench]"
	{ sed -n '1,4p' requirements/constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements/constraints.new
	mv requirements/constraints.new requirements/constraints.txt && rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(LOWER) runs .pytest_cache docs/_build docs/auto_examples docs/api/generated \
		docs/sg_execution_times.rst
