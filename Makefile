# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install rdask into it (editable).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.rdask-installed

.PHONY: demo test test-fast docs lint bench bench-quick sysdeps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

# GDAL's own command-line tools (gdaldem, gdalinfo) are the independent
# references some tests compare against; install them if missing.
sysdeps:
	@command -v gdaldem >/dev/null 2>&1 || { \
	  echo "installing gdal-bin (GDAL's command-line tools, used as test references)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gdal-bin >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/rdask demo

# The import layering (pyproject.toml's [tool.importlinter]) is part of the test.
# Two pytest workers, each taking whole modules (a module's fixtures, its
# cluster and its namespaces stay in one process): about half the time.
test: $(STAMP) sysdeps
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# The documentation site (Sphinx, pydata-sphinx-theme, MyST), warnings as
# errors; it is also built, and its code blocks run, by `make test`.
docs: $(STAMP)
	rm -rf docs/generated
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check rdask tests benchmarks
	$(VENV)/bin/lint-imports

# The benchmark's own venv: rdask and the contenders' packages, none of the
# test tools (boto3, moto...), which rasterio and numba import when present.
BVENV  = benchmarks/.venv
BSTAMP = $(BVENV)/.rdask-installed

$(BSTAMP): pyproject.toml benchmarks/requirements.txt
	@test -x $(BVENV)/bin/python || $(PYTHON) -m venv $(BVENV)
	$(BVENV)/bin/python -m pip install -q --upgrade pip
	$(BVENV)/bin/python -m pip install -q -e . -r benchmarks/requirements.txt
	@touch $(BSTAMP)

# W7 (scale-out) runs its client, workers and S3 server from the test venv
# (.venv: boto3, moto, obstore), so the benchmarks build it too; W7 needs root.
bench-quick: $(BSTAMP) $(STAMP) sysdeps
	$(BVENV)/bin/python benchmarks/run.py --quick --w7-python $(PY)

bench: $(BSTAMP) $(STAMP) sysdeps
	$(BVENV)/bin/python benchmarks/run.py --w7-python $(PY)

clean:
	rm -rf $(VENV) $(BVENV) build *.egg-info .pytest_cache benchmarks/.work docs/_build docs/generated
