//! Where `tracing` output goes: log lines to stderr and, with an OTLP endpoint, the request
//! spans (`router_one_core::telemetry`) to an OpenTelemetry collector.
//!
//! One global filter, no per-layer filters: with a per-layer filter anywhere in the stack,
//! `tracing-subscriber` can drop other layers' events (tokio-rs/tracing#2704 — seen here as log
//! lines missing on PostgreSQL). The span target is switched off in that filter unless an
//! exporter is configured, so without one no request span is ever built (`tracing` caches the
//! answer at each call site). With one, the log layer also sees the spans: a log line written
//! inside a request names its spans' ids and route, never more.

use anyhow::Result;
use router_one_core::telemetry::SPAN_TARGET;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// What must be shut down before the process exits: the exporter's last spans.
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (a bounded wait), then stops the exporter.
    pub(crate) fn shut_down(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the OpenTelemetry exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber. Logs go to stderr, filtered by `RUST_LOG` (default `info`).
/// HTTP libraries are held at `info` whatever `RUST_LOG` says: their trace output could
/// describe headers, and nothing that could carry a secret or a body may reach a log line.
/// `--log-format json`: one JSON object per line (`timestamp`, `level`, `target`, the fields
/// flattened beside `message`). Must run outside the async runtime (the exporter's HTTP client
/// is a blocking one).
pub(crate) fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry> {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let spans = if otlp_endpoint.is_some() { "info" } else { "off" };
    let filter =
        format!("{wanted},hyper=info,hyper_util=info,h2=info,rustls=info,reqwest=info,sqlx=warn,{SPAN_TARGET}={spans}");
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).boxed(),
    };
    let registry = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(logs);
    match otlp_endpoint {
        None => {
            registry.init();
            Ok(Telemetry {
                #[cfg(feature = "otel")]
                provider: None,
            })
        }
        #[cfg(feature = "otel")]
        Some(endpoint) => {
            let provider = otel::provider(endpoint)?;
            registry.with(otel::layer(&provider)).init();
            tracing::info!(endpoint = %otel::traces_url(endpoint), "exporting request traces over OTLP/HTTP");
            Ok(Telemetry {
                provider: Some(provider),
            })
        }
        #[cfg(not(feature = "otel"))]
        Some(_) => anyhow::bail!(
            "--otlp-endpoint (telemetry.otlp_endpoint) needs a build with the `otel` cargo feature; \
             this one was built without it"
        ),
    }
}

#[cfg(feature = "otel")]
mod otel {
    use anyhow::{Context, Result};
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    /// The collector's traces URL: `endpoint` as given if it already names `/v1/traces`, else
    /// with it appended (as OpenTelemetry does with `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub(super) fn traces_url(endpoint: &str) -> String {
        let base = endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    }

    /// A tracer provider exporting in batches from a thread of its own (the SDK's batch
    /// processor: a full queue drops spans rather than waiting, so the request path never
    /// blocks on the collector). `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT`
    /// apply as usual.
    pub(super) fn provider(endpoint: &str) -> Result<SdkTracerProvider> {
        let url = traces_url(endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .build()
            .with_context(|| format!("the OTLP exporter for {url}"))?;
        let resource = Resource::builder()
            .with_service_name("router-one")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    }

    /// The layer that turns spans into OpenTelemetry spans (the request spans are the only ones
    /// the global filter lets through: no dependency makes spans at `info`). A log event inside a
    /// span becomes an event of that span, as written to the log: never a body.
    pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("router-one"))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_traces_path_is_added_once() {
            assert_eq!(super::traces_url("http://c:4318"), "http://c:4318/v1/traces");
            assert_eq!(super::traces_url("http://c:4318/"), "http://c:4318/v1/traces");
            assert_eq!(super::traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
        }
    }
}
