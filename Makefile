# ggfmt - every target sets up .venv/ first if it is missing.
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.ggfmt-installed
TESTSTAMP := $(VENV)/.ggfmt-test-installed
DEMO_IN  := fixtures/genuine/ggcp-v0-adam.bin
DEMO_OUT := out/ggcp-v0-adam.gguf

.PHONY: install install-test demo test lint unit bench fuzz clean schema-docs

# ggfmt and its runtime dependencies (no torch). pip byte-compiles what it installs but not an
# editable source tree: compiled here, or Python would compile ggfmt on every start wherever
# PYTHONDONTWRITEBYTECODE is set (as in many container images).
install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	$(BIN)/python -m compileall -q src
	touch $(STAMP)

# Plus the test tools, and torch (CPU build), peft and transformers, which the tests use, and
# llama-cpp-python, a current llama.cpp that runs what ggfmt writes (built once, then cached by pip),
# and Kaitai Struct's compiler (npm), which must accept what `fmt schema export-ksy` writes.
install-test: $(TESTSTAMP)

$(TESTSTAMP): $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) \
	    $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	npm install --silent --no-audit --no-fund --prefix $(VENV)/ksc kaitai-struct-compiler@0.11.0
	touch $(TESTSTAMP)

# The main job on a bundled checkpoint: what is inside the 2023 file, the conversion, what is
# inside the GGUF.
demo: install
	@mkdir -p out
	$(BIN)/fmt parse $(DEMO_IN)
	$(BIN)/fmt to-gguf $(DEMO_IN) -o $(DEMO_OUT) --force
	$(BIN)/gguf-dump $(DEMO_OUT) 2>/dev/null

test: lint unit

lint: install-test
	$(BIN)/ruff check src tests benchmarks fuzz
	$(BIN)/mypy

unit: install-test
	$(BIN)/pytest

# Compiled first: start-up is part of what is measured, and with PYTHONDONTWRITEBYTECODE set Python
# would compile ggfmt's sources again on every run.
bench: install-test
	$(BIN)/python -m compileall -q src
	$(BIN)/python benchmarks/run.py

# Coverage-guided fuzzing for long runs (FUZZ_SECONDS, default 300); findings are saved as crash-*.
FUZZ_SECONDS ?= 300
fuzz: install-test
	$(BIN)/python -m pip install --quiet --disable-pip-version-check atheris
	$(BIN)/python fuzz/seed_corpus.py fuzz/corpus
	$(BIN)/python fuzz/fuzz_parse.py fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache

# docs/schemas/*.md: `fmt schema show` of every shipped schema (a test fails when they are stale)
schema-docs: install
	@rm -f docs/schemas/*.md
	@mkdir -p docs/schemas
	@for f in schemas/*.yaml; do n=$$(basename $$f .yaml); GGFMT_SCHEMA_PATH= $(BIN)/fmt schema show $$n > docs/schemas/$$n.md; done
