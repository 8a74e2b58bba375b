# stockraft: the two commands of a fresh machine are `make run` and `make test`.
# Both install what the build needs first (libclang for RocksDB's bindings, a
# C++ compiler); protoc is vendored by the build itself.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: run test deps build release check fmt lint unit bench clean help fuzz-deps fuzz-build fuzz-smoke fuzz \
	proto-check proto-baseline

help:
	@echo "make run    build and start a one-node server on 127.0.0.1:50051 (data in ./stockraft-data)"
	@echo "make test   formatting, lints and every test"
	@echo "make bench  criterion benchmarks (bench/compare.sh: the table in BENCHMARKS.md)"
	@echo "make fuzz   every fuzz target for FUZZ_SECONDS (600) each; see fuzz/README.md"

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

# buf, from the npm registry at the version tools/package-lock.json pins,
# into tools/node_modules (the Makefile installs it; nothing global).
BUF := tools/node_modules/.bin/buf
BUF_BASELINE := baseline/stockraft-v1.json

$(BUF): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing nodejs and npm (for buf)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $@

# The protobuf contracts: buf's lint rules (exceptions and their reasons
# in proto/buf.yaml) and no breaking change against the released contract.
# The check is shown able to fail: a copy of the contract with one field
# renamed must be refused (a baseline that lost its contents would let
# everything through).
proto-check: $(BUF)
	cd proto && ../$(BUF) lint
	cd proto && ../$(BUF) breaking --against $(BUF_BASELINE)
	@scratch=$$(mktemp -d) && cp -r proto/. $$scratch && \
	  sed -i 's/  int64 qty = 3;/  int64 quantity = 3;/' $$scratch/stockraft/v1/inventory.proto && \
	  if (cd $$scratch && $(CURDIR)/$(BUF) breaking --against $(BUF_BASELINE) >/dev/null 2>&1); then \
	    rm -rf $$scratch; echo "proto-check: buf breaking let a renamed field through"; exit 1; fi; \
	  rm -rf $$scratch
	@echo "proto-check: buf lint and buf breaking passed"

# At a release: the contract as it stands becomes the baseline.
proto-baseline: $(BUF)
	cd proto && ../$(BUF) build --exclude-source-info -o $(BUF_BASELINE)

lint: deps proto-check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	@# Again without the test-only features: the build that ships.
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The clients' suites run against the server binary the tests just built.
test: lint
	$(CARGO) test --all-targets --all-features
	$(MAKE) clients-test
	$(MAKE) fuzz-smoke

bench: deps
	$(CARGO) bench

include clients/clients.mk

clean:
	$(CARGO) clean

# Fuzzing (fuzz/README.md). cargo-fuzz on the stable toolchain: its
# sanitizer and coverage flags include -Z ones, which RUSTC_BOOTSTRAP=1
# lets stable rustc take (the stable rust-std ships the ASan runtime). The
# fuzz crate has a target dir of its own (its flags differ from the main
# build's, so sharing one would rebuild both each time), under CI's cache
# when CARGO_TARGET_DIR points there.
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ_ROOT := $(or $(CARGO_HOME),$(HOME)/.cargo)
CARGO_FUZZ := $(CARGO_FUZZ_ROOT)/bin/cargo-fuzz fuzz
FUZZ_TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR)/fuzz,$(CURDIR)/fuzz/target)
FUZZ_TARGETS := log_batch raft_wire peer_admission peer_batch snapshot_part snapshot_image storage_records public_request
FUZZ_SANITIZER ?= address
# The bounded run of `make test`: seconds per target, from the committed
# seed corpus (what it finds is not written back into fuzz/corpus).
FUZZ_SMOKE_SECONDS ?= 10
# The long run of `make fuzz`: seconds per target, from the seeds and what
# earlier runs kept in fuzz/work/<target>/ (not committed).
FUZZ_SECONDS ?= 600
FUZZ_ENV := RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR)
FUZZ_FLAGS := -s $(FUZZ_SANITIZER) --fuzz-dir fuzz
# Inputs past 64 KiB only slow the search; a single allocation past 1 GiB
# from an input that small is a finding (an unbounded allocation), and so
# is an input that takes 20 s.
FUZZ_ARGS := -max_len=65536 -rss_limit_mb=4096 -malloc_limit_mb=1024 -timeout=20

fuzz-deps: deps
	@if [ "$$($(CARGO_FUZZ) --version 2>/dev/null)" != "cargo-fuzz $(CARGO_FUZZ_VERSION)" ]; then \
	  echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) into $(CARGO_FUZZ_ROOT)/bin"; \
	  $(CARGO) install --locked --force cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root $(CARGO_FUZZ_ROOT); \
	fi

fuzz-build: fuzz-deps
	$(FUZZ_ENV) $(CARGO_FUZZ) build $(FUZZ_FLAGS)

fuzz-smoke: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  scratch=$$(mktemp -d); \
	  $(FUZZ_ENV) $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t $$scratch fuzz/corpus/$$t -- \
	    $(FUZZ_ARGS) -max_total_time=$(FUZZ_SMOKE_SECONDS) -print_final_stats=1 >$$scratch.log 2>&1; \
	  status=$$?; \
	  echo "fuzz-smoke: $$t: $$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' $$scratch.log | tr '\n' ' ')"; \
	  rm -rf $$scratch; \
	  if [ $$status != 0 ]; then tail -n 60 $$scratch.log; rm -f $$scratch.log; \
	    echo "fuzz-smoke: $$t failed (exit $$status); fuzz/README.md says how to reproduce it"; exit 1; fi; \
	  rm -f $$scratch.log; \
	done

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  mkdir -p fuzz/work/$$t; \
	  $(FUZZ_ENV) $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t fuzz/work/$$t fuzz/corpus/$$t -- \
	    $(FUZZ_ARGS) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done
