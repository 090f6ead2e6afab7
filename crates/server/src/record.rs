//! One request's metering context, from admission to its usage record. Promise 5 is enforced
//! here: [`RequestMeter::finish`] consumes the meter, settles the reservation and writes exactly
//! one record to the crash-safe journal — before the caller sends the response's last byte.

use std::sync::Arc;
use std::time::Instant;

use router_one_core::usage::{Endpoint, UsageRecord};
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
}

/// Metering state of one authenticated request.
#[derive(Debug)]
pub(crate) struct RequestMeter {
    pub(crate) request_id: String,
    pub(crate) key: Arc<KeyState>,
    pub(crate) created_at_us: i64,
    pub(crate) started: Instant,
    pub(crate) endpoint: Endpoint,
    pub(crate) requested_model: String,
    pub(crate) provider: String,
    pub(crate) streamed: bool,
    pub(crate) upstream_sent_us: Option<u64>,
    pub(crate) ttft_us: Option<u64>,
    pub(crate) reservation: Option<Reservation>,
    /// The key's request/token/concurrency grant; its slot is freed when the meter finishes.
    pub(crate) rate: Option<RateGrant>,
    /// The rate counters to show in this request's `x-ratelimit-*` headers.
    pub(crate) rate_snapshot: Option<RateSnapshot>,
    /// Whether the request is metered (always, except in a benchmark of metering's cost).
    pub(crate) metering: bool,
    /// Set if the client hung up before the response head: the exchange still finishes and is
    /// recorded, as 499 `client_disconnected` if it succeeded.
    pub(crate) hung_up: HungUp,
    /// Where the record goes.
    writer: UsageWriter,
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
        RequestMeter {
            request_id: router_one_core::ids::new_id("req"),
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
            hung_up: HungUp::default(),
            writer: writer.clone(),
            finished: false,
        }
    }

    /// µs since the request arrived.
    pub(crate) fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Notes the moment the request left for the upstream.
    pub(crate) fn mark_sent(&mut self) {
        self.upstream_sent_us = Some(self.elapsed_us());
    }

    /// Notes the first byte (or stream event) from the upstream.
    pub(crate) fn mark_first_byte(&mut self) {
        if self.ttft_us.is_none() {
            self.ttft_us = Some(self.elapsed_us());
        }
    }

    /// Settles the reservation with the usage the upstream reported (bounded and priced there,
    /// never billed above what was reserved) and writes the usage record. Returns the cost.
    pub(crate) fn finish(mut self, outcome: Outcome) -> Result<Usd, ApiError> {
        self.write(outcome)
    }

    /// [`RequestMeter::finish`], once: the record is written by whichever of `finish` and
    /// [`Drop`] comes first.
    fn write(&mut self, mut outcome: Outcome) -> Result<Usd, ApiError> {
        self.finished = true;
        if self.hung_up.get() && (200..300).contains(&outcome.status) {
            outcome.status = CLIENT_CLOSED_REQUEST;
            outcome.error_code = Some("client_disconnected");
        }
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
        };
        if let Some(grant) = self.rate.take() {
            grant.settle(usage.prompt_tokens.saturating_add(usage.completion_tokens));
        }
        let written = if self.metering {
            self.writer.record(record)
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
            ..Outcome::default()
        };
        // A refusal costs nothing; if even its record cannot be written the error goes out anyway.
        let _ = self.finish(outcome);
    }
}

impl Drop for RequestMeter {
    /// A meter dropped unfinished after its request went upstream: the exchange was abandoned
    /// (the runtime stopped at the shutdown deadline while the upstream was still answering).
    /// The upstream may bill it, so it still gets its one record, written synchronously to the
    /// journal: what is known of it, at no cost (its reservation is released unspent).
    fn drop(&mut self) {
        if !self.finished && self.upstream_sent_us.is_some() {
            let outcome = Outcome {
                status: CLIENT_CLOSED_REQUEST,
                error_code: Some("gateway_shutdown"),
                ..Outcome::default()
            };
            let _ = self.write(outcome);
        }
    }
}
