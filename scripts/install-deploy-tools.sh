#!/usr/bin/env bash
# Installs what `make deploy-lint` needs when it is missing, pinned, idempotently:
#   kustomize          built from the Go module proxy, under .tools/kustomize-VERSION
#   kubernetes-validate, check-jsonschema
#                      PyPI, in a venv under .tools/deploy-venv-KEY (KEY names both pins)
# Both validators ship their schemas, so validation runs offline once installed.
# Called by scripts/install-tools.sh; `make deploy-lint` runs it alone (cheap when present).
set -euo pipefail
cd "$(dirname "$0")/.."

KUSTOMIZE_VERSION=v5.7.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
TOOLS=$PWD/.tools
mkdir -p "$TOOLS/bin"

kustomize=$TOOLS/kustomize-$KUSTOMIZE_VERSION/kustomize
if [ ! -x "$kustomize" ]; then
  echo "install-tools: kustomize $KUSTOMIZE_VERSION (go install)"
  GOBIN=$TOOLS/kustomize-$KUSTOMIZE_VERSION GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi
ln -sf "$kustomize" "$TOOLS/bin/kustomize"

# One venv per pair of pins: changing a pin builds a fresh venv beside the old one.
venv=$TOOLS/deploy-venv-kv$KUBERNETES_VALIDATE_VERSION-cj$CHECK_JSONSCHEMA_VERSION
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  echo "install-tools: kubernetes-validate $KUBERNETES_VALIDATE_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION (pip, venv)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
fi
ln -sf "$venv/bin/kubernetes-validate" "$TOOLS/bin/kubernetes-validate"
ln -sf "$venv/bin/check-jsonschema" "$TOOLS/bin/check-jsonschema"
