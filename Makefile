# The two commands a new user needs: `make quickstart` and `make test`.
# Both run `make setup` first, which is idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tiny-model work on 2 CPU cores collapses when threads oversubscribe: pin them.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup quickstart quickstart-rlvr rag-demo cache-verifier test test-all lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls gigabytes of CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/python scripts/quickstart.py $(ARGS)

# GRPO judged by exact match: SFT to a partial two-number-addition skill, then GRPO with a verifier (docs/grpo.md)
quickstart-rlvr: setup
	$(BIN)/python scripts/quickstart_rlvr.py $(ARGS)

# RAG over the shipped d2l textbook chapters with a tiny local model, offline (see docs/rag.md)
rag-demo: setup
	$(BIN)/python scripts/rag_demo.py $(ARGS)

# retrain the semantic cache's verifier into the shipped artefact, seeded (about 20 min on one CPU thread)
cache-verifier: setup
	OMP_NUM_THREADS=2 $(BIN)/python scripts/train_cache_verifier.py --out src/alignkit/rag/verifier_model --seed 0 $(ARGS)

test: setup
	$(BIN)/python -m pytest -q tests

# formatting and lint (ruff, configured in pyproject.toml); CI runs this after the tests
lint: setup
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/ruff check src tests scripts benchmarks

format: setup
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/ruff check --fix src tests scripts benchmarks

test-all: setup
	$(BIN)/python -m pytest -q tests --runslow

clean:
	rm -rf $(VENV) runs .pytest_cache
