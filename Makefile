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

# Plus the test tools; torch (CPU build), peft and transformers, which the tests use to make and read
# adapters; llama-cpp-python, a current llama.cpp that runs what ggfmt writes (compiled from source
# the first time, then taken from pip's cache); and Kaitai Struct's compiler (npm), which must accept
# what `fmt schema export-ksy` writes. Each step says what it does and how long it takes.
#
# PyTorch: PyPI's Linux wheels of torch carry several GB of CUDA libraries. Its CPU build comes from
# PyTorch's own index (TORCH_INDEX); where that index cannot be reached, pip takes torch from the
# indexes it is configured with (a local wheel if it has one; on plain PyPI, the CUDA build: it works,
# it is only larger). TORCH_INDEX= skips the CPU index.
TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu
# the versions pyproject.toml's test extra pins
TORCH_VERSION := $(shell sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' pyproject.toml | head -n 1)
LLAMA_CPP_PYTHON := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -n 1)
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
STEP = @echo "==> $(1)"; start=$$(date +%s);
DONE = echo "    done in $$(( $$(date +%s) - start )) s"

install-test: $(TESTSTAMP)

$(TESTSTAMP): $(STAMP)
	$(call STEP,PyTorch $(TORCH_VERSION)$(comma) CPU build (about 200 MB download; a minute the first time)) \
	if $(BIN)/python -c "import importlib.metadata as m, sys; \
	    sys.exit(m.version('torch').split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
	    echo "    already installed"; \
	elif [ -n "$(TORCH_INDEX)" ] && $(PIP) --timeout 20 --retries 1 --index-url $(TORCH_INDEX) \
	    torch==$(TORCH_VERSION) 2>/dev/null; then :; \
	else echo "    PyTorch's CPU index could not be reached: installing torch from the configured indexes"; \
	    $(PIP) torch==$(TORCH_VERSION); fi && $(DONE)
	$(call STEP,$(LLAMA_CPP_PYTHON) (llama.cpp compiled from source: about 7 minutes on 2 CPUs the first time$(comma) \
	    then seconds from pip's cache; needs a C/C++ compiler and CMake)) \
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) $(PIP) $(LLAMA_CPP_PYTHON) && $(DONE)
	$(call STEP,the test tools$(comma) peft and transformers (a minute the first time)) \
	$(PIP) -e '.[test]' && $(DONE)
	$(call STEP,Kaitai Struct compiler (npm$(comma) about 30 s the first time)) \
	npm install --silent --no-audit --no-fund --prefix $(VENV)/ksc kaitai-struct-compiler@0.11.0 && $(DONE)
	touch $(TESTSTAMP)

comma := ,

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
	@cp src/ggfmt/schema/language.json docs/ggfmt-schema.json
	@$(BIN)/python -m ggfmt.workbench.reference bundle > docs/bundle-language.md
