# Two entry points: `make train` (set up, then run the main job) and `make test` (set up, then test).
# Setup creates .venv once and reinstalls only when pyproject.toml or constraints.txt change.
# torch is pinned to the CPU wheel here (constraints.txt); GPU machines bring their CUDA torch, then `pip install -e .`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE_PLUGIN := deploy/examples/agrpo_example_reward
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export PYTHONUNBUFFERED := 1

.PHONY: setup train test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@echo "==> setting up $(VENV) (CPU torch from constraints.txt)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,trackers]'
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e $(EXAMPLE_PLUGIN)
	# setuptools leaves agrpo.egg-info here; it would shadow the installed metadata (entry points) for code run from here.
	rm -rf agrpo.egg-info
	touch $(STAMP)

train: setup
	$(BIN)/agrpo train --config deploy/recipes/tiny.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest -q -ra

bench: setup
	for f in tests/benchmarks/bench_*.py; do echo "==> $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
