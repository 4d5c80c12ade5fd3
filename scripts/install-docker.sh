#!/usr/bin/env bash
# Installs the container engine `make compose-test` runs the stack on, pinned, idempotently:
#   Docker Engine   Debian's `docker.io` (dockerd, containerd, runc), unless a dockerd is installed
#   debootstrap     Debian's, for the stand-in base images (scripts/stand-in-images.sh)
#   Compose v2      the `docker compose` CLI plugin, built from the Go module proxy under
#                   .tools/docker-compose-VERSION and linked into ~/.docker/cli-plugins, unless
#                   `docker compose` already answers with a v2 or later
# Re-running is cheap: each step is skipped when present. It does not start dockerd:
# scripts/with-docker.sh does, for the length of one command.
set -euo pipefail
cd "$(dirname "$0")/.."

# `go install` refuses the module (its go.mod has `exclude` directives), so it is built from a
# throwaway module; v5.6.0 is the newest that builds with Go 1.26 (later v5.x want Go 1.27).
COMPOSE_VERSION=v5.6.0
TOOLS=$PWD/.tools
mkdir -p "$TOOLS/bin"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-docker: ${missing[*]} (Debian)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

compose_major=$(docker compose version --short 2>/dev/null | sed -E 's/^v?([0-9]+).*/\1/' || true)
if [ -z "$compose_major" ] || [ "$compose_major" -lt 2 ]; then
  compose=$TOOLS/docker-compose-$COMPOSE_VERSION/docker-compose
  if [ ! -x "$compose" ]; then
    echo "install-docker: Compose $COMPOSE_VERSION (go build, about a minute once downloaded)"
    work=$(mktemp -d)
    (
      cd "$work"
      go mod init tools.local >/dev/null 2>&1
      GOFLAGS=-mod=mod go get "github.com/docker/compose/v5@$COMPOSE_VERSION" 2>get.log || { tail -20 get.log >&2; exit 1; }
      # The version the plugin reports (`docker compose version`), as upstream's release build stamps it.
      GOFLAGS=-mod=mod nice -n 10 go build -ldflags="-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
        -o "$compose" github.com/docker/compose/v5/cmd
    )
    rm -rf "$work"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$compose" "$HOME/.docker/cli-plugins/docker-compose"
  ln -sf "$compose" "$TOOLS/bin/docker-compose"
fi
docker compose version >/dev/null
