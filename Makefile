# Set-up: `make test` (unit suite, installs what it needs), `make build` (dist/aivm), `make e2e` (real VM, opt-in).
SHELL := /bin/bash
BUN := node_modules/.bin/bun
SOURCES := $(shell find bin lib templates -type f) package.json

.PHONY: all install test build e2e bench clean

all: build

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

install: node_modules/.installed

# Unit and oracle tests. Prints bun's report, then one plain line: N passed, N failed, N skipped.
test: install
	@mkdir -p .cache; set -o pipefail; \
	$(BUN) test --isolate --timeout 30000 2>&1 | tee .cache/test.log; rc=$$?; \
	bash .ci/summary .cache/test.log > .cache/test.counts; cat .cache/test.counts; exit $$rc

build: dist/aivm

dist/aivm: node_modules/.installed $(SOURCES)
	$(BUN) run build

# Real libvirtd, real guest, inside a private network namespace. Skips (exit 0) when the host cannot run it.
e2e: build
	@mkdir -p .cache; set -o pipefail; \
	AIVM_E2E=1 $(BUN) test --isolate --timeout 3600000 ./e2e 2>&1 | tee .cache/e2e.log; rc=$$?; \
	bash .ci/summary .cache/e2e.log > .cache/e2e.counts; cat .cache/e2e.counts; exit $$rc

bench: build
	$(BUN) bench/run.ts

clean:
	rm -rf dist .cache
