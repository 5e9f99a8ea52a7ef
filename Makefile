# Two commands set everything up on a fresh machine:
#   make demo   create .venv (first use), install, build the extension, run a short PGD-AT fit
#   make test   the same set-up, then the whole test suite
# VENV may point elsewhere (CI keys one on the requirements hash).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REQUIREMENTS := requirements/base.txt requirements/dev.txt requirements/detection.txt requirements/reference.txt
REQ_HASH := $(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)
INSTALLED := $(VENV)/.installed-$(REQ_HASH)
PYTEST_ARGS ?=
# The CUDA kernels are compiled whenever an nvcc matching torch's CUDA version exists,
# with or without a GPU, so they cannot rot; TORCH_CUDA_ARCH_LIST picks the target GPUs.
TORCH_CUDA_ARCH_LIST ?= 9.0
CUDA_HOME ?= /usr/local/cuda
export TORCH_CUDA_ARCH_LIST CUDA_HOME
# mmcv's ops are built for CPU (CI has no GPU); MMCV_FORCE_CUDA=1 builds its CUDA ops too (slow).
MMCV_FORCE_CUDA ?= 0

.PHONY: install build lint test test-fast demo benchmark clean

install: $(INSTALLED)

$(INSTALLED): $(REQUIREMENTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements/base.txt -r requirements/dev.txt
	$(BIN)/python -m pip install --no-deps -r requirements/reference.txt
	@# mmdet stack (KGAT), in the order it needs: mmengine, mmcv built from source, mmdet.
	$(BIN)/python -m pip install -c requirements/detection.txt mmengine
	MMCV_WITH_OPS=1 FORCE_CUDA=$(MMCV_FORCE_CUDA) MAX_JOBS=$${MAX_JOBS:-2} \
		$(BIN)/python -m pip install --no-build-isolation -c requirements/detection.txt mmcv
	$(BIN)/python -m pip install -c requirements/detection.txt mmdet
	rm -f $(VENV)/.installed-*
	touch $@

# Builds robust_lightning._C (CPU kernels always; CUDA kernels when nvcc matches torch's CUDA)
# and installs the package in editable mode with its console script.
build: install
	@source tools/cuda_env.sh $(BIN)/python; \
	MAX_JOBS=$${MAX_JOBS:-2} $(BIN)/python -m pip install --quiet -e . --no-build-isolation --no-deps

# ruff (pyflakes, isort, pyupgrade, bugbear, pydocstyle) and mypy, configured in pyproject.toml.
lint: install
	$(BIN)/ruff check robust_lightning tests benchmarks tools setup.py
	$(BIN)/mypy

test: build lint
	@source tools/cuda_env.sh $(BIN)/python; \
	ROBUST_LIGHTNING_REQUIRE_NATIVE=1 $(BIN)/python -m pytest -n 2 -ra --durations=15 $(PYTEST_ARGS) tests

# Everything but the slow end-to-end tests, for quick iterations.
test-fast: build
	ROBUST_LIGHTNING_REQUIRE_NATIVE=1 $(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS) tests

demo: build
	$(BIN)/robust-lightning fit --config configs/classifier/digits_pgd_at.yaml

benchmark: build
	$(BIN)/python benchmarks/attack_step.py

clean:
	rm -rf build robust_lightning/*.so robust_lightning.egg-info
