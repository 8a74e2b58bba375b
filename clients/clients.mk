# The Python and TypeScript clients (clients/README.md). Included from the
# top-level Makefile:
#
#   make clients-deps       the venv (pip install -r requirements.txt) and npm ci
#   make clients-generate   code from proto/stockraft/v1 for both clients
#   make clients-test       both suites against a real server, $(STOCKRAFT_BIN)
#
# Nothing is installed globally: Python packages go to clients/python/.venv,
# npm packages to clients/typescript/node_modules. Each step is skipped when
# its inputs have not changed since it last ran (stamp files).

CLIENTS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CLIENTS_PY := $(CLIENTS_DIR)/python
CLIENTS_TS := $(CLIENTS_DIR)/typescript
CLIENTS_PROTO := $(wildcard $(CLIENTS_DIR)/../proto/stockraft/v1/*.proto)
CLIENTS_PYTHON ?= python3
# The server the suites start: the debug build unless told otherwise.
STOCKRAFT_BIN ?= $(or $(CARGO_TARGET_DIR),target)/debug/stockraft

CLIENTS_PY_DEPS := $(CLIENTS_PY)/.venv/.stamp-requirements
CLIENTS_TS_DEPS := $(CLIENTS_TS)/node_modules/.stamp-lock
CLIENTS_PY_GEN := $(CLIENTS_PY)/src/stockraft/_proto/.stamp-generated
CLIENTS_TS_GEN := $(CLIENTS_TS)/src/gen/.stamp-generated

.PHONY: clients-deps clients-generate clients-test clients-test-python clients-test-typescript

clients-deps: $(CLIENTS_PY_DEPS) $(CLIENTS_TS_DEPS)

# Debian's own Python keeps venv in a package of its own: installed when
# missing, as the top-level Makefile installs what the build needs.
CLIENTS_SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

$(CLIENTS_PY_DEPS): $(CLIENTS_PY)/requirements.txt
	@command -v $(CLIENTS_PYTHON) >/dev/null || { echo "clients: $(CLIENTS_PYTHON) is missing (Python 3.11 with venv)"; exit 1; }
	@$(CLIENTS_PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "clients: installing python3-venv"; \
	  $(CLIENTS_SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(CLIENTS_SUDO) apt-get install -y -qq python3-venv >/dev/null; }
	test -x $(CLIENTS_PY)/.venv/bin/python || $(CLIENTS_PYTHON) -m venv $(CLIENTS_PY)/.venv
	$(CLIENTS_PY)/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(CLIENTS_TS_DEPS): $(CLIENTS_TS)/package-lock.json
	@command -v npm >/dev/null || { \
	  echo "clients: installing nodejs and npm"; \
	  $(CLIENTS_SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(CLIENTS_SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(CLIENTS_TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clients-generate: $(CLIENTS_PY_GEN) $(CLIENTS_TS_GEN)

$(CLIENTS_PY_GEN): $(CLIENTS_PROTO) $(CLIENTS_DIR)/service_config.json $(CLIENTS_PY)/generate.sh $(CLIENTS_PY_DEPS)
	$(CLIENTS_PY)/generate.sh
	touch $@

$(CLIENTS_TS_GEN): $(CLIENTS_PROTO) $(wildcard $(CLIENTS_TS)/proto/*/*/*.proto $(CLIENTS_TS)/proto/*/*/*/*.proto) \
    $(CLIENTS_DIR)/service_config.json $(CLIENTS_TS)/buf.gen.yaml $(CLIENTS_TS)/scripts/generate.js $(CLIENTS_TS_DEPS)
	cd $(CLIENTS_TS) && npm run --silent generate
	touch $@

# Each suite starts its own servers from this binary, on free loopback ports.
CLIENTS_BIN = $(abspath $(STOCKRAFT_BIN))
CLIENTS_TEST_PY = cd $(CLIENTS_PY) && STOCKRAFT_BIN="$(CLIENTS_BIN)" .venv/bin/python -m pytest -q
CLIENTS_TEST_TS = cd $(CLIENTS_TS) && npx --no-install tsc -p . && \
	  STOCKRAFT_BIN="$(CLIENTS_BIN)" node --test --test-concurrency=1 dist/test/*.test.js

# Both suites run even when the first fails; the target fails if either did.
clients-test: clients-check-bin $(CLIENTS_PY_GEN) $(CLIENTS_TS_GEN)
	@status=0; \
	echo "== clients: Python"; ( $(CLIENTS_TEST_PY) ) || status=1; \
	echo "== clients: TypeScript"; ( $(CLIENTS_TEST_TS) ) || status=1; \
	exit $$status

clients-test-python: clients-check-bin $(CLIENTS_PY_GEN)
	$(CLIENTS_TEST_PY)

clients-test-typescript: clients-check-bin $(CLIENTS_TS_GEN)
	$(CLIENTS_TEST_TS)

clients-check-bin:
	@test -x "$(STOCKRAFT_BIN)" || { echo "clients-test: no server binary at $(STOCKRAFT_BIN);" \
	  "build it with 'cargo build --bin stockraft' or set STOCKRAFT_BIN"; exit 1; }

.PHONY: clients-check-bin
