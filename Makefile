# The two commands a new user needs (see README.md):
#   make run   - install, then run the main job on the embedded defaults
#   make test  - install, then run the test suite
# Installation happens once: the virtual environment is rebuilt only when
# requirements.lock or pyproject.toml change.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# One torch thread per process: on small machines more threads fight each other.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run ui test test-quick bench clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) jobs/main.py --config configs/main.yaml $(ARGS)

# The MLflow UI on ./mlflow.db: mlflow server with one worker, on 127.0.0.1:5000 only.
ui: $(STAMP)
	$(VENV)/bin/resulic ui $(ARGS)

# Two pytest-xdist workers, each module a unit: the modules on the session's Ray on one, the
# multi-node cluster's and the rest on the other (tests/conftest.py; ARGS="-n 0" runs them in order).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --no-loadscope-reorder $(ARGS)

# Everything but the multi-node cluster tests (a two-node Ray and an MLflow server on
# 127.0.0.1, submitted jobs, serve deploy: ≈ 3 minutes on 2 quiet cores; docs/cluster.md).
test-quick: $(STAMP)
	$(PY) -m pytest -q -n 2 --no-loadscope-reorder -m "not cluster" $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_codec.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache outputs
