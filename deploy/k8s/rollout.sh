#!/usr/bin/env bash
# Rolls an overlay out: migrations first, then the services, one pod at a time.
#   deploy/k8s/rollout.sh dev|prod|consul
# 1. everything except the users and orders Deployments (label component=server): namespace,
#    config, secrets, Services, policies, PostgreSQL and Jaeger in dev, the migration Jobs;
# 2. wait for the Jobs: a failed migration stops here, with the old pods still serving;
# 3. the rest: the Deployments roll (maxSurge 1, maxUnavailable 0, each new pod ready
#    before an old one gets SIGTERM and drains);
# 4. wait for both rollouts.
# A Job's pod template cannot change, so last release's finished Jobs are deleted first.
# Roll back: `kubectl -n NAMESPACE rollout undo deployment/users` (and orders): the schema
# stays expanded, which the previous release works with (docs/schema-changes.md).
set -euo pipefail
cd "$(dirname "$0")"
overlay=${1:?usage: rollout.sh dev|prod|consul}
kustomize=${KUSTOMIZE:-../../.tools/bin/kustomize}
manifests=$(mktemp)
trap 'rm -f "$manifests"' EXIT
"$kustomize" build "overlays/$overlay" >"$manifests"
namespace=$(sed -n 's/^namespace: *//p' "overlays/$overlay/kustomization.yaml")

kubectl -n "$namespace" delete job -l app.kubernetes.io/component=migration --ignore-not-found
kubectl apply -f "$manifests" -l 'app.kubernetes.io/component!=server'
kubectl -n "$namespace" wait --for=condition=complete --timeout=10m job -l app.kubernetes.io/component=migration
kubectl apply -f "$manifests"
kubectl -n "$namespace" rollout status deployment/users --timeout=10m
kubectl -n "$namespace" rollout status deployment/orders --timeout=10m
