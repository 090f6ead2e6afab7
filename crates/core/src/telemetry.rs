//! The trace spans every request makes, for an OpenTelemetry exporter (`serve --otlp-endpoint`,
//! docs/traces.md).
//!
//! Each request is one `request` span (`server/src/record.rs`, alive as long as its meter) with
//! children: `admission` (validate, route, reserve, prepare), one `upstream_attempt` per route
//! tried (`routes/upstream.rs`), and `usage_write` (from the journal append until its batch
//! commits, `store/src/writer.rs`). Their fields are ids, names, counts and times — never a
//! body, a header or anything else the client wrote beyond the model name.
//!
//! The spans use a target of their own, switched off in the log filter unless an exporter is
//! configured (`cli/src/telemetry.rs`): without one `tracing` caches "never" at each call site,
//! and a span costs a load and a branch.

/// The `tracing` target of the request spans.
pub const SPAN_TARGET: &str = "router_one::otel";
