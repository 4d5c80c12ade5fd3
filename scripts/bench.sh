#!/usr/bin/env bash
# `make bench`: measures the binaries as they ship (Cargo profile `production`) with ghz against a throwaway PostgreSQL
# (scripts/bench.py does the measuring; see docs/perf.md). Never part of `make test`.
# Installs its extra tools itself: h2load (Debian `nghttp2-client`) and Valgrind, through install-tools.sh,
# and, pinned and cached under .tools/TOOL-VERSION, built from the Go module proxy: ghz
# (gRPC load), vegeta (HTTP load for Connect JSON), and the protoc plugins for the Go
# baselines. Generates their Go code from proto/ into bench/go/gen (not
# committed) and builds the Go programs of bench/go into target/bench: users-go (the
# grpc-go and connect-go baselines) and watch-fanout (the WatchOrder fan-out client).
# BENCH_QUICK=1 runs one short round (a harness check). STACK_BIN_DIR=DIR measures the
# binaries in DIR instead of building target/production's.
set -euo pipefail
cd "$(dirname "$0")/.."

GHZ_VERSION=v0.121.0
VEGETA_VERSION=v12.13.0
# The plugins' versions are those of the runtime libraries in bench/go/go.mod.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
PROTOC_GEN_CONNECT_GO_VERSION=v1.21.1

# go_tool NAME PACKAGE VERSION: `go install PACKAGE@VERSION` into .tools/NAME-VERSION once;
# prints the directory.
go_tool() {
  local dir=$PWD/.tools/$1-$3
  if [ ! -x "$dir/$1" ]; then
    echo "bench: $1 $3 (go install)" >&2
    GOBIN=$dir GOFLAGS=-mod=mod $GO_LOW install -ldflags="-s -w" "$2@$3" >&2
  fi
  echo "$dir"
}
# Our three binaries build in the background while the tools do (skipped when STACK_BIN_DIR
# names other binaries). The production build is the longer path: about 9 minutes alone on
# 2 cores, the last 3 of them one single-threaded fat-LTO link per binary. So the Go builds
# run at the lowest priority and take the time a core would idle, without symbol tables
# (`-s -w`: less to link, nothing here reads them); and cargo runs three jobs, so the three
# links start together (with two, orders', the longest at about 3 minutes, waited for a
# slot and ran last, alone). docs/perf.md, section 18.
GO_LOW="nice -n 19 go"
build=
if [ -z "${STACK_BIN_DIR:-}" ]; then
  cargo build --profile production --jobs 3 --bin users --bin orders --bin bare_users &
  build=$!
fi
# PostgreSQL (with pgbench), h2load and buf, when missing: a fresh machine needs no `make test` first.
scripts/install-tools.sh --bench
ghz=$(go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION")/ghz
vegeta=$(go_tool vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION")/vegeta
plugins=$(go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION")
plugins+=:$(go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION")
plugins+=:$(go_tool protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go "$PROTOC_GEN_CONNECT_GO_VERSION")

# The Go baselines: code generated from proto/ each run (cheap), then the server.
rm -rf bench/go/gen
PATH=$plugins:$PATH .tools/bin/buf generate --template bench/go/buf.gen.yaml
echo "bench: building bench/go" >&2
mkdir -p target/bench
(cd bench/go && $GO_LOW build -trimpath -ldflags="-s -w" -o ../../target/bench/ ./cmd/...)

if [ -n "$build" ]; then
  wait "$build" || { echo "bench: cargo build --profile production failed" >&2; exit 1; }
fi
export GHZ=$ghz VEGETA=$vegeta H2LOAD=$(command -v h2load) GO_BASELINE=$PWD/target/bench/users-go WATCH_FANOUT=$PWD/target/bench/watch-fanout
export STACK_BIN_DIR=${STACK_BIN_DIR:-$PWD/target/production}
exec scripts/with-postgres.sh python3 scripts/bench.py
