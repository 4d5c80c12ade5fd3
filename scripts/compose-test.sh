#!/usr/bin/env bash
# `make compose-test`: the compose stack as shipped, on a real Docker engine. Installs the engine
# and Compose v2 (scripts/install-docker.sh), starts dockerd unless one runs (scripts/with-docker.sh),
# makes sure every upstream image is present (scripts/stand-in-images.sh builds stand-ins for the
# missing ones), builds both service images from deploy/Dockerfile as shipped through
# `docker compose build` (timed; the images' sizes are printed), then runs
# crates/stack/tests/compose.rs against `docker compose up`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-docker.sh
exec scripts/with-docker.sh bash -euo pipefail -c '
  scripts/stand-in-images.sh
  start=$(date +%s)
  # users-migrate and orders-migrate share the replicas images: one build each.
  docker compose build users-1 orders-1
  echo "compose-test: images built in $(( $(date +%s) - start )) s"
  for image in stack/users:dev stack/orders:dev; do
    size=$(docker image inspect --format "{{.Size}}" "$image")
    compressed=$(docker save "$image" | gzip -6 | wc -c)
    echo "compose-test: $image $(( size / 1000000 )) MB, $(( compressed / 1000000 )) MB compressed (docker save | gzip)"
  done
  # --workspace, not -p stack: the same features as `cargo test --workspace`, so its build is reused.
  cargo test --workspace --test compose -- --ignored --nocapture
'
