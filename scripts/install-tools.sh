#!/usr/bin/env bash
# Installs what `make test` needs when it is missing, pinned, idempotently:
#   PostgreSQL server  Debian package `postgresql`; curl (the gRPC-Web system test)
#   buf                npm `@bufbuild/buf`, under .tools/npm
#   grpcurl            built from the Go module proxy, under .tools/grpcurl-VERSION
# Re-running is cheap: each step is skipped when its pinned version is present.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
GRPCURL_VERSION=v1.9.3
TOOLS=$PWD/.tools
mkdir -p "$TOOLS/bin"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-tools: ${missing[*]} (Debian)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

buf=$TOOLS/npm/node_modules/.bin/buf
if [ ! -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
  echo "install-tools: buf $BUF_VERSION (npm)"
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$TOOLS/npm" "@bufbuild/buf@$BUF_VERSION"
fi
ln -sf "$buf" "$TOOLS/bin/buf"

grpcurl=$TOOLS/grpcurl-$GRPCURL_VERSION/grpcurl
if [ ! -x "$grpcurl" ]; then
  echo "install-tools: grpcurl $GRPCURL_VERSION (go install)"
  GOBIN=$TOOLS/grpcurl-$GRPCURL_VERSION GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
ln -sf "$grpcurl" "$TOOLS/bin/grpcurl"
