#!/bin/sh
# Builds the static mailfwd binary: the one build command of the Dockerfile
# and of the end-to-end suite (e2e/e2e_test.go), so CI tests what the image
# ships.  Usage: deploy/build-static.sh OUTPUT [go build flags]
# (the power-loss test builds its control relay with -tags powercut_nosync).
set -eu
out=$1
shift
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' "$@" -o "$out" ./cmd/mailfwd
