//! One log line per request (`--access-log`, on by default with `--log-format json`), target
//! `router_one::access`. Written from the usage records as they commit — the writer's commit
//! observer, off the request path, in batches — so a line costs the hot path nothing and
//! says exactly what the record says. Metadata only: ids, model, route, status, tokens, cost
//! and times; never a body.

use router_one_core::UsageRecord;

/// Logs one line per record.
pub fn write(records: &[UsageRecord]) {
    for r in records {
        tracing::info!(
            target: "router_one::access",
            request_id = %r.request_id,
            account_id = %r.account_id,
            key_id = %r.key_id,
            endpoint = r.endpoint.as_str(),
            model = %r.requested_model,
            served_model = r.served_model.as_deref().unwrap_or(""),
            route = %r.provider,
            status = r.status,
            error = r.error_code.as_deref().unwrap_or(""),
            streamed = r.streamed,
            prompt_tokens = r.usage.prompt_tokens,
            completion_tokens = r.usage.completion_tokens,
            cost = %r.cost,
            latency_us = r.latency_us,
            ttft_us = r.ttft_us.unwrap_or(0),
            attempts = r.failed_attempts.len() + 1,
            "request"
        );
    }
}
