# The two commands that matter: `make demo` (the main job) and `make test`.
SHELL := bash
TOOLS := $(CURDIR)/.tools
BUF := $(TOOLS)/bin/buf
export GRPCURL := $(TOOLS)/bin/grpcurl
export CONSUL := $(TOOLS)/bin/consul
export JAEGER := $(TOOLS)/bin/jaeger
export PROMTOOL := $(TOOLS)/bin/promtool
export STACK_BIN_DIR := $(CURDIR)/target/release

.PHONY: demo test tools lint fmt release breaking up down bench

## demo: users x2 + orders on the embedded default (SQLite, static endpoints), real traffic, a summary.
demo: release
	$(STACK_BIN_DIR)/demo

## test: install what is missing, lint, then unit, integration (PostgreSQL) and system tests.
test: tools lint release
	scripts/with-postgres.sh cargo test --workspace

## bench: ghz against the release binaries on a throwaway PostgreSQL; writes bench/results/ (BENCH_QUICK=1: one short round).
bench: release
	scripts/bench.sh

## tools: PostgreSQL, buf, grpcurl, Consul, Jaeger and promtool, pinned, installed only when missing.
tools:
	scripts/install-tools.sh

## lint: rustfmt, clippy (warnings are errors), buf lint, and buf breaking against main when there is one.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	if git rev-parse --verify -q main >/dev/null; then $(MAKE) --no-print-directory breaking; fi

## fmt: format the code.
fmt:
	cargo fmt --all

## release: the optimised binaries the demo and the system tests run.
release:
	cargo build --release --bins

## breaking: check proto changes for wire and source compatibility against main.
breaking:
	$(BUF) breaking --against '.git#branch=main'

## up / down: the docker-compose stack (needs a Docker engine).
up:
	docker compose up --build -d
down:
	docker compose down -v
