# mailfwd — `make test` is the README's test command and what CI runs.
GO ?= go
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build run test unit e2e deps check fmt vet lint clean bench

all: build

build:
	$(GO) build -o bin/mailfwd ./cmd/mailfwd

# The relay on its embedded default (127.0.0.1:2525, seed directory, next hop 127.0.0.1:2526).
run:
	$(GO) run ./cmd/mailfwd serve

# Everything: static checks, unit tests, then the end-to-end suite against real
# 389-DS, Postfix and smtp-sink (installs them with apt-get when missing; needs root).
test: check unit e2e

unit:
	$(GO) test -count=1 ./...
	cd third_party/go-smtp && $(GO) test -count=1 ./...

deps:
	./e2e/scripts/install-deps.sh

e2e: deps
	$(GO) test -count=1 -tags e2e -timeout 20m -v ./e2e/ 2>&1 | tee e2e-test.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}

check: fmt vet lint

# mailfwd against Postfix 3.7 + virtual_alias_maps = ldap: + postsrsd on this
# machine (389-DS, smtp-sink, smtp-source; needs root), ~10-15 minutes; writes
# docs/benchmarks.md. BENCH_FLAGS=-quick for a short run printed on stdout.
bench: deps
	$(GO) run ./bench $(BENCH_FLAGS)

# staticcheck, pinned, from the Go module proxy.
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags e2e ./e2e/

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/

clean:
	rm -rf bin e2e-test.log
