#!/usr/bin/env bash
# Makes sure every upstream image deploy/Dockerfile and docker-compose.yml name is in the local
# Docker engine, building a stand-in for each one that is missing, since no image registry is
# reachable here (as at any air-gapped site). A stand-in is built from Debian's packages
# (debootstrap, then `docker import`) and from the Go-built tools scripts/install-tools.sh makes,
# tagged with the exact upstream name and tag, and labelled `stack.stand-in=RECIPE-HASH`:
#   rust:1.95-bookworm                      Debian 12 + build tools + this machine's Rust 1.95 toolchain
#                                           and its local trust anchors
#   gcr.io/distroless/cc-debian12:nonroot   glibc, libgcc, libstdc++, libssl, CA certificates, tzdata
#                                           from Debian 12; uid 65532, no shell, no package manager
#   postgres:17-trixie                      Debian 13's postgresql-17 + an entrypoint honouring
#                                           POSTGRES_PASSWORD/USER/DB and /docker-entrypoint-initdb.d
#   hashicorp/consul:1.22.0                 the Consul the tests build (install-tools.sh)
#   jaegertracing/jaeger:2.13.0             the Jaeger v2 the tests build (install-tools.sh)
#   prom/prometheus:v3.10.0                 Prometheus built from the same Go module as promtool
# Each recipe is scripts/stand-ins/NAME/ (a Dockerfile, built FROM the debootstrapped base).
# An image that exists without the label (the real one, mirrored into the engine) is used as it
# is; a stand-in whose recipe changed is rebuilt; everything else is skipped, so re-running is
# cheap. Grafana (grafana/grafana) has no stand-in: it cannot be built offline.
# Needs a running dockerd (scripts/with-docker.sh) and scripts/install-tools.sh's tools.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=$PWD/.tools
RECIPES=scripts/stand-ins

# The Debian mirror this machine's apt uses (override: DEBIAN_MIRROR).
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "stand-in-images: no Debian mirror in apt's sources; set DEBIAN_MIRROR" >&2; exit 1; }

# recipe_hash NAME IDENTITY: what a stand-in is made of (its recipe folder, and IDENTITY: the
# versions of what it is built from); a change rebuilds it.
recipe_hash() {
  { tar -C "$RECIPES" -c --sort=name --mtime=@0 --owner=0 --group=0 "$1"; echo "$2"; } | sha256sum | cut -c1-16
}

# needed IMAGE HASH: whether IMAGE must be (re)built: missing, or a stand-in of another recipe.
needed() {
  local label
  label=$(docker image inspect --format '{{ index .Config.Labels "stack.stand-in" }}' "$1" 2>/dev/null) || return 0
  case "$label" in
    "") echo "stand-in-images: $1 is present and is not a stand-in: used as it is"; return 1 ;;
    "$2") return 1 ;;
    *) return 0 ;;
  esac
}

# base SUITE: a minimal Debian SUITE root filesystem as the image stand-in/debian:SUITE.
base() {
  local suite=$1 image=stand-in/debian:$1
  local hash
  hash=$(echo "debootstrap minbase $suite $mirror" | sha256sum | cut -c1-16)
  needed "$image" "$hash" || return 0
  echo "stand-in-images: Debian $suite root filesystem (debootstrap --variant=minbase, about 3 minutes)"
  local root
  root=$(mktemp -d /tmp/stand-in-rootfs-XXXXXX)
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
  # apt inside builds: no recommends, no caches kept in layers.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90stand-in"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import --change "LABEL stack.stand-in=$hash" --change 'CMD ["bash"]' - "$image" >/dev/null
  rm -rf "$root" "$root.log"
}

# stand_in IMAGE RECIPE IDENTITY [CONTEXT-FILE...]: builds scripts/stand-ins/RECIPE/Dockerfile as
# IMAGE, with the recipe folder and the given files or folders (copied under their base names) as
# the context.
stand_in() {
  local image=$1 recipe=$2 identity=$3; shift 3
  local hash
  hash=$(recipe_hash "$recipe" "$identity")
  needed "$image" "$hash" || return 0
  echo "stand-in-images: $image (stand-in, scripts/stand-ins/$recipe)"
  local context
  context=$(mktemp -d /tmp/stand-in-context-XXXXXX)
  cp -r "$RECIPES/$recipe/." "$context/"
  for f in "$@"; do
    [ -e "$f" ] || { echo "stand-in-images: $f missing: run scripts/install-tools.sh" >&2; exit 1; }
    cp -rL "$f" "$context/"
  done
  docker build --quiet --label "stack.stand-in=$hash" -t "$image" "$context" >/dev/null
  rm -rf "$context"
}

base bookworm
base trixie

# The Rust builder: this machine's toolchain, which must be the Dockerfile's RUST_VERSION.
rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' deploy/Dockerfile)
case "$(rustc --version)" in
  "rustc $rust_version".*) ;;
  *) echo "stand-in-images: deploy/Dockerfile wants Rust $rust_version, this machine has $(rustc --version)" >&2; exit 1 ;;
esac
rustc_identity=$(rustc -vV | sed -n 's/^release: //p')
toolchain=$TOOLS/stand-in-rust-$rustc_identity/toolchain.tar
if [ ! -s "$toolchain" ]; then
  # bin, lib, libexec and the licences: no documentation (800 MB).
  mkdir -p "$(dirname "$toolchain")"
  tar -C "$(rustc --print sysroot)" -cf "$toolchain.partial" --exclude=share/doc --exclude=share/man bin lib libexec share
  mv "$toolchain.partial" "$toolchain"
fi
# The machine's own trust anchors (/usr/local/share/ca-certificates): a site whose registries are
# reached through a TLS-inspecting proxy gives its build images the proxy's CA, or cargo inside the
# build cannot fetch crates. None on most machines.
local_ca=$(mktemp -d /tmp/stand-in-ca-XXXXXX)/local-ca
mkdir -p "$local_ca"
cp /usr/local/share/ca-certificates/*.crt "$local_ca/" 2>/dev/null || true
ca_identity=$(cat "$local_ca"/* 2>/dev/null | sha256sum | cut -c1-16)
stand_in "rust:$rust_version-bookworm" rust "rustc $rustc_identity, local CAs $ca_identity" "$toolchain" "$local_ca"
rm -rf "$(dirname "$local_ca")"
distroless=$(sed -n 's/^FROM \(gcr.io\/distroless\/[^ ]*\).*/\1/p' deploy/Dockerfile)
stand_in "$distroless" distroless-cc "bookworm"

# tool NAME: the path of a tool install-tools.sh builds, which must be there.
tool() {
  [ -x "$TOOLS/bin/$1" ] || { echo "stand-in-images: $TOOLS/bin/$1 missing: run scripts/install-tools.sh" >&2; exit 1; }
  echo "$TOOLS/bin/$1"
}
# tool_stand_in IMAGE RECIPE NAME [VERSION-ARGS...]: a stand-in carrying the tool NAME, made from
# the version install-tools.sh pins (.tools/NAME-VERSION). With VERSION-ARGS, the tool's version
# line (`NAME VERSION-ARGS`) must name IMAGE's tag: the pin and docker-compose.yml are one release.
tool_stand_in() {
  local image=$1 recipe=$2 path pinned version tag
  path=$(tool "$3")
  pinned=$(basename "$(dirname "$(readlink -f "$path")")")
  shift 3
  if [ $# -gt 0 ]; then
    version=$("$path" "$@" 2>&1 | head -n 1)
    tag=${image##*:}
    case "$version" in
      *"${tag#v}"*) ;;
      *) echo "stand-in-images: $image, but $path says \"$version\": pin the same release in both" >&2; exit 1 ;;
    esac
  fi
  stand_in "$image" "$recipe" "$pinned" "$path"
}

# Every image docker-compose.yml names, as it names it.
for image in $(sed -n 's/^ *image: *\([^ ]*\).*/\1/p' docker-compose.yml | sort -u); do
  case "$image" in
    stack/*) ;; # ours: built from deploy/Dockerfile
    postgres:*-trixie) stand_in "$image" postgres "trixie postgresql-${image#postgres:}" ;;
    hashicorp/consul:*) tool_stand_in "$image" consul consul version ;;
    # Jaeger's binary carries no version when built from its module (install-tools.sh pins
    # module v1.76.0, which is release 2.13.0, beside JAEGER_VERSION).
    jaegertracing/jaeger:*) tool_stand_in "$image" jaeger jaeger ;;
    prom/prometheus:*) tool_stand_in "$image" prometheus prometheus --version ;;
    *) docker image inspect "$image" >/dev/null 2>&1 ||
      echo "stand-in-images: no stand-in for $image (it cannot be built offline here): services that use it cannot start" ;;
  esac
done
