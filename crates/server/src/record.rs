//! One request's metering context, from admission to its usage record. Promise 5 is enforced
//! here: [`RequestMeter::finish`] consumes the meter, settles the reservation and writes exactly
//! one record to the crash-safe journal — before the caller sends the response's last byte.

use std::sync::Arc;
use std::time::Instant;

use router_one_core::telemetry::SPAN_TARGET;
use router_one_core::usage::{Endpoint, RecordLease, RecordReceipt, UsageRecord};
use router_one_core::{ApiError, ErrorKind, TokenUsage, Usd};
use router_one_metering::rate::{RateGrant, RateSnapshot};
use router_one_metering::reservation::{Settlement, UsageFault};
use router_one_metering::{KeyState, Reservation};
use router_one_store::UsageWriter;

use crate::run_to_completion::HungUp;

/// The status recorded for an answer nobody received: the client hung up before its head
/// (nginx's "client closed request").
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Seconds a client is told to wait while usage records cannot be made durable.
const USAGE_RETRY_AFTER_S: u64 = 5;

/// The refusal while a usage record cannot be made durable (the journal cannot be written):
/// a transient 503 with `Retry-After`, never worded as a matter of credit or balance.
pub(crate) fn usage_unavailable() -> ApiError {
    ApiError::new(
        ErrorKind::UsageUnavailable,
        "Usage recording is temporarily unavailable, so this request was not completed. Retry later.",
    )
    .with_retry_after(USAGE_RETRY_AFTER_S)
}

/// How a request ended, as far as metering cares.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// HTTP status sent to the client.
    pub(crate) status: u16,
    /// Error code sent to the client, or why metering is incomplete.
    pub(crate) error_code: Option<&'static str>,
    /// The model the upstream reported.
    pub(crate) served_model: Option<String>,
    /// Tokens the upstream reported (zero when it reported none).
    pub(crate) usage: TokenUsage,
    /// Why the gateway refused it, where the code does not say ([`ApiError::refusal`]).
    pub(crate) refusal: Option<&'static str>,
}

/// Metering state of one authenticated request. Its fields change only through its own
/// methods, each named for the step of the request that calls it.
#[derive(Debug)]
pub(crate) struct RequestMeter {
    request_id: String,
    key: Arc<KeyState>,
    created_at_us: i64,
    started: Instant,
    endpoint: Endpoint,
    requested_model: String,
    provider: String,
    streamed: bool,
    upstream_sent_us: Option<u64>,
    ttft_us: Option<u64>,
    reservation: Option<Reservation>,
    /// The key's request/token/concurrency grant; its slot is freed when the meter finishes.
    rate: Option<RateGrant>,
    /// The rate counters to show in this request's `x-ratelimit-*` headers.
    rate_snapshot: Option<RateSnapshot>,
    /// Whether the request is metered (always, except in a benchmark of metering's cost).
    metering: bool,
    /// A cluster node's lease book: the record names the leases that paid for it.
    leases: Option<Arc<crate::leases::LeaseBook>>,
    /// Set if the client hung up before the response head: the exchange still finishes and is
    /// recorded, as 499 `client_disconnected` if it succeeded.
    hung_up: HungUp,
    /// Attempts on other routes that failed before the one that ends the request (`failover`).
    failed_attempts: Vec<router_one_core::usage::FailedAttempt>,
    /// Where the record goes.
    writer: UsageWriter,
    /// The request's `request` span (`core::telemetry`), closed with the meter.
    span: tracing::Span,
    /// The record, settled and not yet written ([`RequestMeter::settle`]).
    settled: Option<UsageRecord>,
    /// Tells the receipt signer this request is in flight, so receipts sealed meanwhile wait a
    /// moment to share a signature with its (`BatchSigner`); `None` where nothing is signed.
    receipt_mark: Option<router_one_receipts::InFlight>,
    /// The record was written (or, unmetered, skipped): [`Drop`] has nothing left to do.
    finished: bool,
}

impl RequestMeter {
    /// A meter for a request that just arrived.
    pub(crate) fn new(
        key: Arc<KeyState>,
        endpoint: Endpoint,
        started: Instant,
        metering: bool,
        writer: &UsageWriter,
    ) -> RequestMeter {
        let request_id = router_one_core::ids::new_id("req");
        let span = request_span(&request_id, &key, endpoint);
        RequestMeter {
            request_id,
            key,
            created_at_us: router_one_core::ids::now_us(),
            started,
            endpoint,
            requested_model: String::new(),
            provider: String::new(),
            streamed: false,
            upstream_sent_us: None,
            ttft_us: None,
            reservation: None,
            rate: None,
            rate_snapshot: None,
            metering,
            leases: None,
            hung_up: HungUp::default(),
            failed_attempts: Vec::new(),
            writer: writer.clone(),
            span,
            settled: None,
            receipt_mark: None,
            finished: false,
        }
    }

    /// Marks the request in flight for the signer of its receipt, until the meter ends.
    pub(crate) fn expect_receipt(&mut self, mark: router_one_receipts::InFlight) {
        self.receipt_mark = Some(mark);
    }

    /// The request's `request` span, the parent of its steps' spans (`upstream_attempt`).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The span of this request's admission (validate, route, reserve, prepare): one for every
    /// inference endpoint, chat's dialects included.
    pub(crate) fn admission_span(&self) -> tracing::Span {
        tracing::info_span!(target: SPAN_TARGET, parent: &self.span, "admission")
    }

    /// µs since the request arrived.
    pub(crate) fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Notes the moment the request first left for the upstream (a failed-over attempt keeps
    /// the first).
    pub(crate) fn mark_sent(&mut self) {
        if self.upstream_sent_us.is_none() {
            self.upstream_sent_us = Some(self.elapsed_us());
        }
    }

    /// Notes the first byte (or stream event) from the upstream.
    pub(crate) fn mark_first_byte(&mut self) {
        if self.ttft_us.is_none() {
            self.ttft_us = Some(self.elapsed_us());
        }
    }

    /// The request id (also the record's and the `x-request-id` header's).
    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The key presenting the request.
    pub(crate) fn key(&self) -> &Arc<KeyState> {
        &self.key
    }

    /// When the request arrived, µs since the Unix epoch.
    pub(crate) fn created_at_us(&self) -> i64 {
        self.created_at_us
    }

    /// Which API was called.
    pub(crate) fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The route (provider channel) the request is on.
    pub(crate) fn provider(&self) -> &str {
        &self.provider
    }

    /// Whether the request is metered (always, but in a benchmark of metering's cost).
    pub(crate) fn is_metered(&self) -> bool {
        self.metering
    }

    /// What admission reserved, once it has.
    pub(crate) fn reservation(&self) -> Option<&Reservation> {
        self.reservation.as_ref()
    }

    /// Set if the client hangs up before the response head.
    pub(crate) fn hung_up(&self) -> HungUp {
        self.hung_up.clone()
    }

    /// A cluster node's lease book, so the record names the leases that paid for it.
    pub(crate) fn drawn_on(&mut self, leases: Option<Arc<crate::leases::LeaseBook>>) {
        self.leases = leases;
    }

    /// Admission read the body: the model asked for and whether the answer streams.
    pub(crate) fn asked_for(&mut self, model: &str, streamed: bool) {
        model.clone_into(&mut self.requested_model);
        self.streamed = streamed;
    }

    /// The request goes to this route (provider channel) now.
    pub(crate) fn routed_to(&mut self, provider: &str) {
        provider.clone_into(&mut self.provider);
    }

    /// The answer turned out to be a stream.
    pub(crate) fn mark_streaming(&mut self) {
        self.streamed = true;
    }

    /// The key's rate limits granted the request.
    pub(crate) fn granted(&mut self, grant: RateGrant) {
        self.rate_snapshot = Some(*grant.snapshot());
        self.rate = Some(grant);
    }

    /// The key's rate limits refused the request; these are its counters.
    pub(crate) fn rate_refused(&mut self, snapshot: RateSnapshot) {
        self.rate_snapshot = Some(snapshot);
    }

    /// The output the reservation pays for is less than the rate grant counted: it gives the
    /// rest back.
    pub(crate) fn shrink_rate_output(&mut self, tokens: u64) {
        if let Some(grant) = self.rate.as_mut() {
            grant.shrink_output(tokens);
            self.rate_snapshot = Some(*grant.snapshot());
        }
    }

    /// Admission reserved the worst case.
    pub(crate) fn hold(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// The rate counters for the response's `x-ratelimit-*` headers.
    pub(crate) fn take_rate_snapshot(&mut self) -> Option<RateSnapshot> {
        self.rate_snapshot.take()
    }

    /// An attempt on one route failed before the client received a byte, and the request goes
    /// on to another route: the attempt is kept for the record, and its first byte forgotten.
    pub(crate) fn failed_over(&mut self, attempt: router_one_core::usage::FailedAttempt) {
        self.failed_attempts.push(attempt);
        self.ttft_us = None;
    }

    /// Nothing of this attempt reached the client: a later attempt's first byte is the request's.
    pub(crate) fn forget_first_byte(&mut self) {
        self.ttft_us = None;
    }

    /// Settles the reservation with the usage the upstream reported (bounded and priced there,
    /// never billed above what was reserved) and writes the usage record. Returns the cost.
    pub(crate) fn finish(mut self, outcome: Outcome) -> Result<Usd, ApiError> {
        self.settle(outcome);
        self.write(None)
    }

    /// The first half of [`RequestMeter::finish`] for an answer with a receipt: settles the
    /// reservation and makes the record (its cost is the one billed), for the caller to write
    /// the response's last bytes and seal their receipt with it; [`RequestMeter::write`] then
    /// writes it. A meter dropped in between writes the settled record without a receipt.
    pub(crate) fn settle(&mut self, mut outcome: Outcome) -> &UsageRecord {
        if self.hung_up.get() && (200..300).contains(&outcome.status) {
            outcome.status = CLIENT_CLOSED_REQUEST;
            outcome.error_code = Some("client_disconnected");
        }
        // A cluster node's record names the leases its reservation drew on.
        let lease = match (&self.reservation, &self.leases) {
            (Some(_), Some(book)) => Some(RecordLease {
                node_id: book.node().node_id.clone(),
                node_epoch: book.node().epoch,
                key_period_start_us: crate::leases::LeaseBook::key_period_start(&self.key, self.created_at_us),
            }),
            _ => None,
        };
        let Settlement { usage, cost, fault } = match self.reservation.take() {
            Some(reservation) => reservation.settle(outcome.usage),
            // Refused before anything was reserved (or unmetered): nothing to bill.
            None => Settlement {
                usage: outcome.usage,
                cost: Usd::ZERO,
                fault: None,
            },
        };
        if let Some(fault) = fault {
            tracing::warn!(
                request_id = %self.request_id,
                provider = %self.provider,
                fault = fault.code(),
                "upstream usage report not billed as reported"
            );
        }
        if let Some(grant) = self.rate.take() {
            grant.settle(usage.prompt_tokens.saturating_add(usage.completion_tokens));
        }
        let record = UsageRecord {
            request_id: std::mem::take(&mut self.request_id),
            account_id: self.key.account_id.clone(),
            key_id: self.key.id.clone(),
            created_at_us: self.created_at_us,
            endpoint: self.endpoint,
            requested_model: std::mem::take(&mut self.requested_model),
            served_model: outcome.served_model,
            provider: std::mem::take(&mut self.provider),
            usage,
            cost,
            latency_us: self.elapsed_us(),
            upstream_sent_us: self.upstream_sent_us,
            ttft_us: self.ttft_us,
            status: outcome.status,
            // The operator must see an upstream that was not believed, whatever else happened.
            error_code: fault.map(UsageFault::code).or(outcome.error_code).map(str::to_owned),
            streamed: self.streamed,
            lease,
            failed_attempts: std::mem::take(&mut self.failed_attempts),
            receipt: None,
            refusal: outcome.refusal.map(str::to_owned),
        };
        close_span(&self.span, &record);
        self.settled.insert(record)
    }

    /// Writes the settled record ([`RequestMeter::settle`]) with its receipt, once: by the
    /// caller, or by [`Drop`] if the caller never gets there. Returns the cost.
    pub(crate) fn write(mut self, receipt: Option<RecordReceipt>) -> Result<Usd, ApiError> {
        self.write_settled(receipt)
    }

    fn write_settled(&mut self, receipt: Option<RecordReceipt>) -> Result<Usd, ApiError> {
        self.finished = true;
        let Some(mut record) = self.settled.take() else {
            return Ok(Usd::ZERO);
        };
        record.receipt = receipt;
        let cost = record.cost;
        let written = if self.metering {
            // The `usage_write` span is a child of this request's.
            self.span.in_scope(|| self.writer.record(record))
        } else {
            Ok(())
        };
        written.map_err(|e| {
            // The writer logs the journal failing and recovering once; not every request.
            tracing::debug!(error = %e, "usage journal write failed");
            usage_unavailable()
        })?;
        Ok(cost)
    }

    /// Records a request refused after authentication (bad input, unknown model, …).
    pub(crate) fn refuse(self, error: &ApiError) {
        let outcome = Outcome {
            status: error.kind.status(),
            error_code: Some(error.kind.code()),
            refusal: error.refusal,
            ..Outcome::default()
        };
        // A refusal costs nothing; if even its record cannot be written the error goes out anyway.
        let _ = self.finish(outcome);
    }
}

/// The `request` span of a request that just arrived. Its fields are ids and names, and the
/// outcome recorded by [`close_span`]: never a body or a header.
fn request_span(request_id: &str, key: &KeyState, endpoint: Endpoint) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        request_id,
        endpoint = endpoint.as_str(),
        account_id = %key.account_id,
        key_id = %key.id,
        "gen_ai.request.model" = Empty,
        "gen_ai.response.model" = Empty,
        route = Empty,
        stream = Empty,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        cost_usd = Empty,
        failed_attempts = Empty,
        "otel.status_code" = Empty,
    )
}

/// Records the request's outcome on its span, from its usage record.
fn close_span(span: &tracing::Span, record: &UsageRecord) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.request.model", record.requested_model.as_str());
    if let Some(served) = &record.served_model {
        span.record("gen_ai.response.model", served.as_str());
    }
    span.record("route", record.provider.as_str());
    span.record("stream", record.streamed);
    // As i64: OpenTelemetry's integers are signed, and unsigned values arrive as strings.
    span.record("http.response.status_code", i64::from(record.status));
    if let Some(code) = &record.error_code {
        span.record("error.type", code.as_str());
    }
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.record("gen_ai.usage.input_tokens", signed(record.usage.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", signed(record.usage.completion_tokens));
    span.record("cost_usd", tracing::field::display(record.cost));
    span.record(
        "failed_attempts",
        i64::try_from(record.failed_attempts.len()).unwrap_or(i64::MAX),
    );
    if record.status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

impl Drop for RequestMeter {
    /// A meter dropped unfinished after its request went upstream: the exchange was abandoned
    /// (the runtime stopped at the shutdown deadline while the upstream was still answering).
    /// The upstream may bill it, so it still gets its one record, written synchronously to the
    /// journal: what is known of it, at no cost (its reservation is released unspent).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.settled.is_none() && self.upstream_sent_us.is_some() {
            let outcome = Outcome {
                status: CLIENT_CLOSED_REQUEST,
                error_code: Some("gateway_shutdown"),
                ..Outcome::default()
            };
            self.settle(outcome);
        }
        // Settled but never written (the response was dropped while its receipt was sealed): the
        // record, as settled, without a receipt.
        let _ = self.write_settled(None);
    }
}
