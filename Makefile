# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: demo test test-deps test-fast lint typecheck bench clean

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

demo: $(VENV)/.installed
	$(PY) -m corral demo

# Programs the tests run for real (tests/test_services.py: redis-server; tests/test_html_report.py:
# chromium; tests/test_dask_slurm.py:
# a single-node SLURM, scripts/slurm-local.sh, with Debian's slurm-wlm and munge): installed
# when missing. Without root they cannot be: outside CI those tests then skip with the reason;
# under CI (CI=true) this step fails, as the tests would.
TEST_PROGRAMS := redis-server:redis-server chromium:chromium slurmctld:slurm-wlm munged:munge
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

test: $(VENV)/.installed-test test-deps
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed-test
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src

typecheck: $(VENV)/.installed-test
	$(PY) -m mypy

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/run.py

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
