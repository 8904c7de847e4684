# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: demo test test-deps test-fast lint typecheck bench clean example-postprocess_files example-climate_normals

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

$(VENV)/.installed-examples: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[examples]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m corral demo

# Programs the tests run for real (tests/test_services.py: redis-server; tests/test_html_report.py:
# chromium; tests/test_dask_slurm.py:
# a single-node SLURM, scripts/slurm-local.sh, with Debian's slurm-wlm and munge;
# tests/test_reliability_journal.py: unshare and nsenter, for a full tmpfs of its own): installed
# when missing. Without root they cannot be: outside CI those tests then skip with the reason;
# under CI (CI=true) this step fails, as the tests would.
TEST_PROGRAMS := redis-server:redis-server chromium:chromium slurmctld:slurm-wlm munged:munge \
  unshare:util-linux nsenter:util-linux
test-deps:
	@for pair in $(TEST_PROGRAMS); do \
	  prog=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$prog >/dev/null 2>&1 && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkg >/dev/null \
	    || { apt-get update -q >/dev/null && \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkg >/dev/null; } \
	    || exit 1; \
	  else \
	    echo "$$prog is missing and cannot be installed here (needs root and apt-get):" \
	         "run: sudo apt-get install $$pkg" >&2; \
	    case "$$CI" in 1|true|TRUE|True|yes) exit 1;; esac; \
	  fi; \
	done

# Test files run two at a time (pytest-xdist; a file's tests stay together in one process, so
# module fixtures such as the Dask cluster are made once): most tests wait on worker
# processes, so two files share 2 cores well. TEST_WORKERS=0 runs them one at a time.
TEST_WORKERS ?= 2

test: $(VENV)/.installed-test test-deps
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed-test
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src

typecheck: $(VENV)/.installed-test
	$(PY) -m mypy

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/run.py

# examples/postprocess_files: 40 result files (3 of them bad), the table, a resumed run, the CLI.
PP := examples/postprocess_files
example-postprocess_files: $(VENV)/.installed-examples
	$(PY) $(PP)/make_results.py $(PP)/work/results --files 40 --samples 36000 --faults
	cp $(PP)/analysis.yml $(PP)/work/analysis.yml
	-$(PY) $(PP)/postprocess.py $(PP)/work/results --config $(PP)/work/analysis.yml \
	  --journal $(PP)/work/postprocess.corral --out $(PP)/work/table.csv
	@echo "--- again, with the journal: only the 3 bad files run again"
	-$(PY) $(PP)/postprocess.py $(PP)/work/results --config $(PP)/work/analysis.yml \
	  --journal $(PP)/work/postprocess.corral --out $(PP)/work/table.csv
	@echo "--- the same reduction from the command line, the good files"
	cd $(PP) && ../../$(PY) -m corral run postprocess:reduce_file 'work/results/run_0*.h5' \
	  --config work/analysis.yml --section parallel_processing --uses orcaflex=1 \
	  --error-dir work/cli-errors --out work/cli.jsonl
	@echo "table: $(PP)/work/table.csv; error reports: $(PP)/work/errors/"

# examples/climate_normals: 4 variables x 65 years of daily NetCDF, 144 30-year normals.
CN := examples/climate_normals
example-climate_normals: $(VENV)/.installed-examples
	$(PY) $(CN)/make_data.py $(CN)/work/data
	$(PY) $(CN)/normals.py $(CN)/work/data $(CN)/work/normals
	$(PY) $(CN)/normals.py $(CN)/work/data $(CN)/work/serial --serial
	$(PY) -c "import sys; sys.path.insert(0, '$(CN)'); import normals, pathlib as p; \
	  same = normals.same_outputs(p.Path('$(CN)/work/normals'), p.Path('$(CN)/work/serial')); \
	  print('normals identical to the serial run:', same); sys.exit(not same)"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# The field examples (issue 16), each with one command; what they print is explained in their
# README. Dependencies: the `examples` extra (pyzmq) and the `share` extra (numpy, pandas).
.PHONY: example-sweep example-search bench-examples
$(VENV)/.installed-examples: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[examples,share]'
	touch $@

example-sweep: $(VENV)/.installed-examples
	cd examples/simulation_sweep && rm -f sweep.corral && \
	  ../../$(PY) sweep.py --runs 500 --journal sweep.corral --trace trace.json --out results.csv && \
	  ../../$(PY) sweep.py --runs 500 --journal sweep.corral --out again.csv && \
	  ../../$(PY) sweep.py --runs 500 --squat --out squatted.csv && \
	  ../../$(PY) sweep.py --runs 500 --exec --out exec.csv && \
	  cmp results.csv again.csv && cmp results.csv squatted.csv && cmp results.csv exec.csv && \
	  echo "the four tables are identical; open trace.json in ui.perfetto.dev"

example-search: $(VENV)/.installed-examples
	$(PY) examples/model_search/model_search.py

bench-examples: $(VENV)/.installed-bench $(VENV)/.installed-examples
	$(PY) benchmarks/examples.py
