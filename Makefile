# stockraft: the two commands of a fresh machine are `make run` and `make test`.
# Both install what the build needs first (libclang for RocksDB's bindings, a
# C++ compiler); protoc is vendored by the build itself.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: run test deps build release check fmt lint unit bench clean help

help:
	@echo "make run    build and start a one-node server on 127.0.0.1:50051 (data in ./stockraft-data)"
	@echo "make test   formatting, lints and every test"
	@echo "make bench  criterion benchmarks"

# Debian packages the build needs, installed only when missing.
deps:
	@if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
	    || ! command -v c++ >/dev/null 2>&1; then \
	  echo "installing libclang-dev and g++ (needed to build RocksDB)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libclang-dev g++ >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }

release: deps
	$(CARGO) build --release --bin stockraft

run: release
	$(CARGO) run --release --bin stockraft -- serve

build: deps
	$(CARGO) build --all-targets

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings

test: lint
	$(CARGO) test --all-targets --all-features

bench: deps
	$(CARGO) bench

clean:
	$(CARGO) clean
