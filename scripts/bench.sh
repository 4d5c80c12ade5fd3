#!/usr/bin/env bash
# `make bench`: measures the release binaries with ghz against a throwaway PostgreSQL
# (scripts/bench.py does the measuring; see docs/perf.md). Never part of `make test`.
# Installs its one extra tool itself, pinned and cached: ghz, built from the Go module
# proxy under .tools/ghz-VERSION. BENCH_QUICK=1 runs one short round (a harness check).
set -euo pipefail
cd "$(dirname "$0")/.."

GHZ_VERSION=v0.121.0
ghz=$PWD/.tools/ghz-$GHZ_VERSION/ghz
if [ ! -x "$ghz" ]; then
  echo "bench: ghz $GHZ_VERSION (go install)" >&2
  GOBIN=$PWD/.tools/ghz-$GHZ_VERSION GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
fi
command -v pgbench >/dev/null && command -v psql >/dev/null || {
  echo "bench: pgbench and psql are missing: run scripts/install-tools.sh" >&2
  exit 1
}

export GHZ=$ghz
export STACK_BIN_DIR=${STACK_BIN_DIR:-$PWD/target/release}
exec scripts/with-postgres.sh python3 scripts/bench.py
