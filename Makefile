# The two commands that matter: `make demo` (the main job) and `make test`.
SHELL := bash
TOOLS := $(CURDIR)/.tools
BUF := $(TOOLS)/bin/buf
export GRPCURL := $(TOOLS)/bin/grpcurl
export CONSUL := $(TOOLS)/bin/consul
export JAEGER := $(TOOLS)/bin/jaeger
export PROMTOOL := $(TOOLS)/bin/promtool
export STACK_BIN_DIR := $(CURDIR)/target/release
KUSTOMIZE := $(TOOLS)/bin/kustomize
KUBERNETES_VALIDATE := $(TOOLS)/bin/kubernetes-validate
CHECK_JSONSCHEMA := $(TOOLS)/bin/check-jsonschema
# The manifests must be valid for the oldest Kubernetes we support (native gRPC probes need
# 1.27) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS := 1.31.0 1.37.0

.PHONY: demo test compose-test tools lint deploy-lint fmt release breaking up down bench k8s-tools k8s-up k8s-down k8s-smoke

## demo: users x2 + orders on the embedded default (SQLite, static endpoints), real traffic, a summary.
demo: release
	$(STACK_BIN_DIR)/demo

## test: install what is missing, lint, then unit, integration (PostgreSQL) and system tests,
## then the compose stack on a real Docker engine.
test: tools lint release
	scripts/with-postgres.sh cargo test --workspace
	$(MAKE) --no-print-directory compose-test

## compose-test: docker-compose.yml and deploy/Dockerfile as shipped, on a real Docker engine
## (installed and started when missing; stand-ins for upstream images no registry serves here):
## the images built, the stack up, traffic, a rolling replacement and outages under load.
compose-test:
	scripts/compose-test.sh

## bench: ghz, vegeta and h2load against the binaries as they ship (Cargo profile `production`) and the Go
## baselines (bench/go) on a throwaway PostgreSQL; writes bench/results/ (BENCH_QUICK=1: one short
## round; about 5 minutes in full). Builds only the binaries it runs, while its tools build, so a
## fresh machine is done in under 15 minutes.
bench:
	STACK_BIN_DIR= scripts/bench.sh

## tools: PostgreSQL, buf, grpcurl, Consul, Jaeger, Prometheus, promtool, connectconformance, Docker
## and Compose v2, pinned, installed only when missing.
tools:
	scripts/install-tools.sh

## lint: rustfmt, clippy (warnings are errors), no module import loops, buf lint, buf breaking
## against main when there is one, deploy-lint.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 scripts/import-cycles.py
	$(BUF) lint
	if git rev-parse --verify -q main >/dev/null; then $(MAKE) --no-print-directory breaking; fi
	$(MAKE) --no-print-directory deploy-lint

## deploy-lint: offline, with pinned tools: docker-compose.yml against the Compose spec, every
## kustomize overlay against the Kubernetes schemas (strict: unknown fields fail), Prometheus' config.
deploy-lint:
	scripts/install-deploy-tools.sh
	deploy/k8s/overlays/dev/dev-secrets.sh
	$(CHECK_JSONSCHEMA) --builtin-schema vendor.compose-spec docker-compose.yml
	set -eo pipefail; for overlay in deploy/k8s/overlays/*/; do \
	  manifests=$$($(KUSTOMIZE) build "$$overlay"); \
	  for version in $(KUBERNETES_VERSIONS); do \
	    echo "deploy-lint: $$overlay on Kubernetes $$version"; \
	    printf '%s\n' "$$manifests" | $(KUBERNETES_VALIDATE) --strict --quiet -k "$$version" -; \
	  done; \
	done
	test -x $(PROMTOOL) || { echo "deploy-lint: $(PROMTOOL) missing: run scripts/install-tools.sh" >&2; exit 1; }
	$(PROMTOOL) check config deploy/prometheus/prometheus.yml

## fmt: format the code.
fmt:
	cargo fmt --all

## release: the optimised binaries the demo and the system tests run.
release:
	cargo build --release --bins

## breaking: check proto changes for wire and source compatibility against main.
breaking:
	$(BUF) breaking --against '.git#branch=main'

## up / down: the docker-compose stack (needs a Docker engine; README, "Deploy"). `down` keeps
## the named volumes (databases, Prometheus, Grafana); `docker compose down -v` drops them.
up:
	docker compose up --build --detach --wait
down:
	docker compose down

## k8s-tools: the local cluster's components, pinned, built once under .tools/kubernetes-VERSION.
## k8s-up / k8s-down: a single-node cluster as local processes (root; deploy/k8s/cluster.sh);
## k8s-smoke: a pod, a Service through CoreDNS and kube-proxy, and Pod Security on it.
k8s-tools:
	scripts/install-k8s.sh
k8s-up: k8s-tools
	deploy/k8s/cluster.sh up
k8s-down:
	deploy/k8s/cluster.sh down
k8s-smoke:
	deploy/k8s/cluster.sh smoke
