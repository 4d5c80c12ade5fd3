#!/usr/bin/env bash
# Installs what `make test` needs when it is missing, pinned, idempotently:
#   PostgreSQL server  Debian package `postgresql`; curl (the gRPC-Web system test)
#   buf                npm `@bufbuild/buf`, under .tools/npm
#   TypeScript client  the npm packages of crates/stack/tests/typescript (`npm ci` from its committed
#                      lock file), under .tools/typescript-LOCKHASH, linked as its node_modules
#   grpcurl            built from the Go module proxy, under .tools/grpcurl-VERSION
#   consul             built from the Go module proxy, under .tools/consul-VERSION
#   jaeger (v2)        built from the Go module proxy, under .tools/jaeger-VERSION
#   promtool           built from the Go module proxy, under .tools/promtool-VERSION
#   prometheus         the server, from the same module, under .tools/prometheus-VERSION (the compose
#                      test's stand-in image for prom/prometheus: scripts/stand-in-images.sh)
#   connectconformance the Connect conformance runner (go install), under .tools/connectconformance-VERSION
#   kustomize, kubernetes-validate, check-jsonschema   `make deploy-lint`: scripts/install-deploy-tools.sh
#   Docker, debootstrap, Compose v2                     `make compose-test`: scripts/install-docker.sh
# Re-running is cheap: each step is skipped when its pinned version is present.
# `--bench`: only what `make bench` needs of these (PostgreSQL with pgbench, buf), and h2load
# (Debian `nghttp2-client`) and Valgrind, which `make test` does not need; the bench
# builds its own Go tools (scripts/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
GRPCURL_VERSION=v1.9.3
CONSUL_VERSION=v1.22.0
# The checksum database answers 404 for some HashiCorp modules Consul requires (its
# proto-public submodule, consul-awsauth pseudo-versions), so those alone are taken
# from the module proxy without that check; every other module is still verified.
CONSUL_GONOSUMDB=github.com/hashicorp
# Jaeger v2 ships as the `cmd/jaeger` package; its Go module keeps v1 tags (v1.76.0 is release v2.13,
# the jaegertracing/jaeger:2.13.0 docker-compose.yml names).
JAEGER_VERSION=v1.76.0
# As for Consul: the checksum database answers 404 for the OpenTelemetry Collector
# modules Jaeger v2 is built from.
JAEGER_GONOSUMDB=go.opentelemetry.io/collector,github.com/open-telemetry/opentelemetry-collector-contrib
# Prometheus tags its Go module v0.MINOR.PATCH for release 3.x (v0.310.0 is 3.10.0; v0.316.0 needs
# module versions the proxy refuses with 403). docker-compose.yml names this release (prom/prometheus:v3.10.0).
PROMETHEUS_VERSION=v0.310.0
# The Connect conformance runner; crates/conformance vendors the protos of the same version.
CONNECTCONFORMANCE_VERSION=v1.0.7
TOOLS=$PWD/.tools
mkdir -p "$TOOLS/bin"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null || missing+=(curl)
# h2load (nghttp2's HTTP/2 load generator): `make bench`'s one-core and instructions cases;
# Valgrind (callgrind): its instructions case.
[ "${1:-}" = --bench ] && { command -v h2load >/dev/null || missing+=(nghttp2-client); }
[ "${1:-}" = --bench ] && { command -v callgrind_control >/dev/null || missing+=(valgrind); }
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
[ "${1:-}" = --bench ] && exit 0

# Keyed by the lock file's hash: a changed lock installs afresh, an unchanged one is skipped.
typescript=crates/stack/tests/typescript
typescript_dir=$TOOLS/typescript-$(sha256sum "$typescript/package-lock.json" | cut -c1-12)
if [ ! -e "$typescript_dir/installed" ]; then
  echo "install-tools: the TypeScript client test's npm packages ($typescript/package-lock.json)"
  rm -rf "$typescript_dir"
  mkdir -p "$typescript_dir"
  cp "$typescript/package.json" "$typescript/package-lock.json" "$typescript_dir/"
  # In the directory itself: `npm ci --prefix` takes the directory's name for the root package.
  (cd "$typescript_dir" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$typescript_dir/installed"
fi
ln -sfn "$typescript_dir/node_modules" "$typescript/node_modules"

grpcurl=$TOOLS/grpcurl-$GRPCURL_VERSION/grpcurl
if [ ! -x "$grpcurl" ]; then
  echo "install-tools: grpcurl $GRPCURL_VERSION (go install)"
  GOBIN=$TOOLS/grpcurl-$GRPCURL_VERSION GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
ln -sf "$grpcurl" "$TOOLS/bin/grpcurl"

connectconformance=$TOOLS/connectconformance-$CONNECTCONFORMANCE_VERSION/connectconformance
if [ ! -x "$connectconformance" ]; then
  echo "install-tools: connectconformance $CONNECTCONFORMANCE_VERSION (go install)"
  GOBIN=$TOOLS/connectconformance-$CONNECTCONFORMANCE_VERSION GOFLAGS=-mod=mod go install "connectrpc.com/conformance/cmd/connectconformance@$CONNECTCONFORMANCE_VERSION"
fi
ln -sf "$connectconformance" "$TOOLS/bin/connectconformance"

# go_build NAME MODULE VERSION PACKAGE [GONOSUMDB]: builds PACKAGE inside a throwaway module that
# requires MODULE@VERSION. `go install M@V` refuses modules whose go.mod has `replace`
# directives (Consul's and Jaeger's do); as a dependency, those directives are ignored.
go_build() {
  local name=$1 module=$2 version=$3 package=$4 nosumdb=${5:-}
  local dir=$TOOLS/$name-$version
  if [ ! -x "$dir/$name" ]; then
    echo "install-tools: $name $version (go build, takes minutes the first time)"
    local work
    work=$(mktemp -d)
    (
      cd "$work"
      go mod init tools.local >/dev/null 2>&1
      GONOSUMDB=$nosumdb GOFLAGS=-mod=mod go get "$module@$version" 2>get.log || { tail -20 get.log >&2; exit 1; }
      GONOSUMDB=$nosumdb GOFLAGS=-mod=mod go build -o "$dir/$name" "$package"
    )
    rm -rf "$work"
  fi
  ln -sf "$dir/$name" "$TOOLS/bin/$name"
}

go_build consul github.com/hashicorp/consul "$CONSUL_VERSION" github.com/hashicorp/consul "$CONSUL_GONOSUMDB"
go_build jaeger github.com/jaegertracing/jaeger "$JAEGER_VERSION" github.com/jaegertracing/jaeger/cmd/jaeger "$JAEGER_GONOSUMDB"
go_build promtool github.com/prometheus/prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool
go_build prometheus github.com/prometheus/prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/prometheus

scripts/install-deploy-tools.sh
scripts/install-docker.sh
