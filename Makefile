# mailfwd — `make test` is the README's test command and what CI runs.
GO ?= go
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build run test test-fresh unit e2e e2e-leakcheck deps check fmt vet lint clean bench powercut

all: build

build:
	$(GO) build -o bin/mailfwd ./cmd/mailfwd

# The relay on its embedded default (127.0.0.1:2525, seed directory, next hop 127.0.0.1:2526).
run:
	$(GO) run ./cmd/mailfwd serve

# Everything: static checks, unit tests, then the end-to-end suite against real
# 389-DS, Postfix and smtp-sink (installs them with apt-get when missing; needs root),
# then the proof that a failed or interrupted e2e run leaves nothing running.
test: check unit e2e e2e-leakcheck

# The README's two commands in a freshly made Debian bookworm root (debootstrap,
# chroot), so nothing on this machine can make them pass; what .ci/run runs.
test-fresh:
	./.ci/fresh-root.sh

unit:
	$(GO) test -count=1 ./...
	cd third_party/go-smtp && $(GO) test -count=1 ./...

deps:
	./e2e/scripts/install-deps.sh

# Under e2e/reaper, which stops whatever a failed, timed-out or interrupted run
# left (the servers daemonize); -strict: a passing run that leaves anything fails.
e2e: deps bin/reaper
	bin/reaper -strict -- $(GO) test -count=1 -tags e2e -timeout 5m -v ./e2e/internet/ 2>&1 | tee e2e-internet-test.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|reaper:)|_test.go' ; [ $${PIPESTATUS[0]} = 0 ] || exit 1; \
	bin/reaper -strict -- $(GO) test -count=1 -tags e2e -timeout 20m -v ./e2e/ 2>&1 | tee e2e-test.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|reaper:)|_test.go' ; exit $${PIPESTATUS[0]}

# The power-loss test (e2e/powercut_test.go): the relay in a qemu guest whose
# disk drops every write not followed by a flush, 20 power cuts under load,
# then a control relay built without syncs that must lose mail; and a writeback
# error on the data disk only (journal elsewhere) that must reach its own commit. ~10 minutes.
powercut: deps bin/reaper
	bin/reaper -strict -- $(GO) test -count=1 -tags 'e2e powercut' -timeout 40m -run 'TestPowerCut|TestWritebackErrorAttribution' -v ./e2e/ 2>&1 | tee powercut-test.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|reaper:)|_test.go' ; exit $${PIPESTATUS[0]}

e2e-leakcheck: deps
	./e2e/scripts/leakcheck.sh

bin/reaper: e2e/reaper/main.go
	$(GO) build -o $@ ./e2e/reaper

check: fmt vet lint

# mailfwd against Postfix 3.7 + virtual_alias_maps = ldap: + postsrsd on this
# machine (389-DS, smtp-sink, smtp-source; needs root), ~10-15 minutes; writes
# docs/benchmarks.md. BENCH_FLAGS=-quick for a short run printed on stdout.
bench: deps bin/reaper
	bin/reaper -- $(GO) run ./bench $(BENCH_FLAGS)

# staticcheck, pinned, from the Go module proxy.
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags e2e ./e2e/ ./e2e/internet/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags 'e2e powercut' ./e2e/

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/ ./e2e/internet/
	$(GO) vet -tags 'e2e powercut' ./e2e/
	$(GO) vet -tags powercut_nosync ./queue/ ./cmd/...

clean:
	rm -rf bin e2e-test.log _build
