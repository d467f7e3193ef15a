# Two commands do all the set-up on a fresh machine: `make quickstart` and `make test`.
# Both create .venv when it is missing and install the project into it.

VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
# Every other package at the version that produced the documented figures; CONSTRAINTS= to float.
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv quickstart sweep experiments experiments-small test test-heavy bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: a bare torch requirement with no torch present pulls GBs of CUDA wheels.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/factory pipeline --config configs/quickstart.yaml

# The face-world sweep: 4 m ranges x 2 domain-mixup settings on the quickstart's outputs.
sweep: $(STAMP)
	test -f runs/quickstart/recognizer/quickstart-real/final/metrics.json || $(MAKE) quickstart
	$(VENV)/bin/factory sweep --config configs/sweep/faceworld.yaml
	$(VENV)/bin/factory compare --config configs/sweep/faceworld.yaml --out runs/quickstart/sweeps

# The face-world studies (docs/experiments/): hours on 2 cores, resumable (rerun to continue);
# experiments-small is the same machinery in about 30 minutes (docs/experiments/small/).
experiments: $(STAMP)
	$(VENV)/bin/factory experiments --config configs/experiments/faceworld.yaml

experiments-small: $(STAMP)
	$(VENV)/bin/factory experiments --config configs/experiments/faceworld.yaml --small

# Every test, tests/unit and tests/integration, on two pytest-xdist workers, a module at a time
# to whichever is free (--dist loadfile), in collection order (the integration modules first,
# the quick unit modules filling in after them): a module's Ray cluster, face world, synthesis
# and servers are module fixtures, set up once rather than on each worker that gets one of its
# tests. The Ray tests spend much of their time starting processes, so two streams fit two
# cores (docs/benchmarks.md#the-test-suite has the measured times);
# TEST_WORKERS=0 runs them in this process. The quick check while editing is
# `.venv/bin/pytest tests/unit`: no Ray, no servers (tests/unit/conftest.py fails it otherwise).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The production configs at their real shapes (112 px, r50, the DCFace-scale UNet) for one step
# each, on the local S3 endpoint: about 12 minutes of both cores, so not part of make test.
test-heavy: $(STAMP)
	$(PY) -m pytest -q -m heavy --durations=5

bench: $(STAMP)
	$(PY) bench/faceworld_speed.py
	$(PY) bench/synthesis_speed.py

clean:
	rm -rf runs mlflow.db
