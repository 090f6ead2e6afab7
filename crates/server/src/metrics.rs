//! Prometheus metrics (`GET /metrics` on its own listen address, never the public port).
//!
//! Nothing here runs per request on the hot path. The request counters, histograms, token and
//! cost counters are fed from the usage records as the writer commits them
//! ([`router_one_store::CommitObserver`]): one record per request, counted once, so the counters
//! match `GET /v1/usage` exactly (about 25 ms behind it). Gauges (writer lag, journal size,
//! open streams, breakers) are read when scraped.
//!
//! Labels are bounded: the endpoint, a catalog model id (a model the client named that is not
//! in the catalog is `other`), a configured route, a status class, an error code from the one
//! error table. No key id, account id or anything else a client chooses.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use router_one_core::UsageRecord;

/// Upper bounds of the latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    model: String,
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The gauges read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    /// Records journaled, not yet committed.
    pub usage_pending: usize,
    /// Bytes in the current journal segment.
    pub journal_bytes: u64,
    /// Streams in flight.
    pub open_streams: usize,
    /// Whether `o200k_base`'s tables (about 46 MiB) have been built.
    pub tokenizer_loaded: bool,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    models: HashSet<String>,
    routes: HashSet<String>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    ttft: HistogramFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost_units: Family<ModelLabels, Counter>,
    usage_pending: Gauge,
    journal_bytes: Gauge,
    open_streams: Gauge,
    tokenizer_loaded: Gauge,
    breaker_open: Family<RouteLabels, Gauge>,
    /// Serialises scrapes (the gauges are set, then everything is encoded).
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics labelled with these catalog models and configured routes (anything else is
    /// `other`).
    pub fn new(models: impl IntoIterator<Item = String>, routes: impl IntoIterator<Item = String>) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("router_one");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inference requests answered, by endpoint, model, route and status class",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "From a request's arrival to its response's last byte",
            latency.clone(),
        );
        let ttft: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "From a request's arrival to the upstream's first byte (streams: first event)",
            ttft.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream attempts that failed, by route and error class (failed-over attempts included)",
            upstream_errors.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused by the gateway before any upstream call, by reason (rate_limit, budget, balance, else the error code)",
            refusals.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register("tokens", "Tokens billed, by model and kind", tokens.clone());
        let cost_units = Family::<ModelLabels, Counter>::default();
        registry.register(
            "cost_units",
            "Cost billed at posted rates, in units of 10^-10 USD (exact integers), by model",
            cost_units.clone(),
        );
        let usage_pending = Gauge::default();
        registry.register(
            "usage_pending_records",
            "Usage records journaled but not yet committed to the database (the writer's lag)",
            usage_pending.clone(),
        );
        let journal_bytes = Gauge::default();
        registry.register(
            "usage_journal_bytes",
            "Bytes in the current usage journal segment",
            journal_bytes.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "open_streams",
            "Streamed answers in flight (from the upstream's first event to the end)",
            open_streams.clone(),
        );
        let tokenizer_loaded = Gauge::default();
        registry.register(
            "tokenizer_loaded",
            "1 once o200k_base's tables (about 46 MiB) are built: the first request whose exact prompt count matters",
            tokenizer_loaded.clone(),
        );
        let breaker_open = Family::<RouteLabels, Gauge>::default();
        registry.register(
            "breaker_open",
            "1 while a route's circuit breaker is open, else 0",
            breaker_open.clone(),
        );
        Arc::new(Metrics {
            registry,
            models: models.into_iter().collect(),
            routes: routes.into_iter().collect(),
            requests,
            latency,
            ttft,
            upstream_errors,
            refusals,
            tokens,
            cost_units,
            usage_pending,
            journal_bytes,
            open_streams,
            tokenizer_loaded,
            breaker_open,
            scrape: Mutex::new(()),
        })
    }

    /// A committed batch of usage records (the writer's [`router_one_store::CommitObserver`]).
    pub fn observe(&self, records: &[UsageRecord]) {
        for record in records {
            self.count(record);
        }
    }

    fn model(&self, model: &str) -> String {
        if self.models.contains(model) { model } else { "other" }.to_owned()
    }

    fn route(&self, route: &str) -> String {
        if route.is_empty() {
            "none"
        } else if self.routes.contains(route) {
            route
        } else {
            "other"
        }
        .to_owned()
    }

    fn count(&self, record: &UsageRecord) {
        let endpoint = record.endpoint.as_str();
        let model = self.model(&record.requested_model);
        let route = self.route(&record.provider);
        let status_class = match record.status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                model: model.clone(),
                route: route.clone(),
                status_class,
            })
            .inc();
        let labels = EndpointLabels { endpoint };
        self.latency.get_or_create(&labels).observe(seconds(record.latency_us));
        if let Some(ttft) = record.ttft_us {
            self.ttft.get_or_create(&labels).observe(seconds(ttft));
        }
        for attempt in &record.failed_attempts {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    route: self.route(&attempt.route),
                    class: attempt.error.clone(),
                })
                .inc();
        }
        if let Some(code) = &record.error_code {
            if record.upstream_sent_us.is_some() {
                self.upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        route: route.clone(),
                        class: code.clone(),
                    })
                    .inc();
            } else {
                // The finer reason where the code does not say (a key's budget or the
                // account's balance are both `insufficient_quota`).
                let reason = record.refusal.as_ref().unwrap_or(code).clone();
                self.refusals.get_or_create(&ReasonLabels { reason }).inc();
            }
        }
        let usage = &record.usage;
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
            ("cached_prompt", usage.cached_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        let units = u64::try_from(record.cost.units()).unwrap_or_default();
        if units > 0 {
            self.cost_units.get_or_create(&ModelLabels { model }).inc_by(units);
        }
    }

    /// The text exposition (OpenMetrics), with the gauges read now.
    pub fn render(&self, readings: Readings, open_breakers: &[&str]) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.usage_pending.set(gauge(readings.usage_pending as u64));
        self.journal_bytes.set(gauge(readings.journal_bytes));
        self.open_streams.set(gauge(readings.open_streams as u64));
        self.tokenizer_loaded.set(i64::from(readings.tokenizer_loaded));
        for route in &self.routes {
            let open = open_breakers.contains(&route.as_str());
            self.breaker_open
                .get_or_create(&RouteLabels { route: route.clone() })
                .set(i64::from(open));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn seconds(us: u64) -> f64 {
    // A duration, not money: f64 is what Prometheus histograms take.
    us as f64 / 1_000_000.0
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
