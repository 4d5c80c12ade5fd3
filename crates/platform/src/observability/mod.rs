//! Observability, one file per signal: `logs` (the subscriber: JSON lines with trace
//! ids, installed once), `traces` (the OpenTelemetry tracer provider, OTLP export, W3C
//! propagation, and `TelemetryConfig`), `metrics` (the per-app Prometheus registry and
//! the gRPC families), `admin` (the HTTP `GET /metrics` endpoint) and `layer` (the
//! per-call span, metrics and log line, server and client side).
//!
//! Imports point down: `layer` -> `metrics`, `traces`; `admin` -> `metrics`; `logs` ->
//! `traces`; `metrics` imports nothing of ours, so any module can export its own
//! metrics into the registry.

pub mod admin;
pub(crate) mod layer;
pub mod logs;
pub mod metrics;
pub mod traces;
