//! A metered stream: forwards the upstream's server-sent events to the client as they arrive
//! (through the provider's decoder, which passes OpenAI events untouched and translates other
//! formats into OpenAI chunks), reads usage from them, and — before the last bytes (the usage
//! chunk and `[DONE]`) go out — settles and writes the usage record. A signed stream then ends
//! with its receipt: an SSE comment, `: receipt <jws>`, over the SHA-256 of every byte before
//! it, hashed as the bytes are queued. If the client goes away mid-stream, the rest of the
//! upstream stream is drained in the background so the request is still billed for what the
//! upstream produced and still gets its one record.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use router_one_core::{ApiError, ErrorKind, TokenUsage};
use router_one_providers::openai::wire::{data_event, error_event};
use router_one_providers::openai::with_cost;
use router_one_providers::sse::{SseSplitter, event_data};
use router_one_providers::{HeldUsage, StreamDecoder};
use router_one_receipts::BodyHasher;

use crate::record::{Outcome, RequestMeter};
use crate::routes::receipts::{PendingReceipt, Sealed};
use crate::routes::upstream::success;
use crate::state::AppState;

/// How the upstream stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The upstream closed the stream normally.
    Complete,
    /// The connection broke mid-stream.
    Cut,
    /// No event within the timeout.
    Timeout,
    /// The gateway's shutdown deadline passed first.
    Shutdown,
    /// The upstream sent something that is not an event of its format.
    Malformed,
}

/// The client-facing body of a streamed completion.
pub(crate) struct MeteredStream {
    inner: Option<Box<StreamState>>,
}

struct StreamState {
    app: Arc<AppState>,
    decoder: Box<dyn StreamDecoder>,
    upstream: Option<Incoming>,
    splitter: SseSplitter,
    scratch: Vec<Bytes>,
    decoded: Vec<Bytes>,
    /// What is queued for the client, hashed as it is queued (for the receipt).
    out: Outbox,
    /// Whether the stream ends with its receipt line (not for a key that hides Router One's
    /// own headers: its receipt is kept with the record only).
    show_receipt: bool,
    meter: Option<RequestMeter>,
    /// The stream's end, waiting for its receipt.
    sealing: Option<Sealing>,
    include_usage: bool,
    client_gone: bool,
    usage: Option<TokenUsage>,
    held_usage: Option<HeldUsage>,
    saw_done: bool,
    saw_error: bool,
    saw_data: bool,
    broken: bool,
    idle: Pin<Box<Sleep>>,
    /// Completes when the gateway's shutdown deadline passes: the stream then ends cleanly.
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    timeout: Duration,
}

impl MeteredStream {
    /// Starts forwarding. Waits for the first event so the served model can go in the headers;
    /// if the upstream fails before any event, nothing has reached the client: the meter comes
    /// back with the error, so the request can be tried on another route or refused plainly.
    pub(crate) async fn start(
        app: Arc<AppState>,
        mut meter: RequestMeter,
        decoder: Box<dyn StreamDecoder>,
        upstream: Incoming,
        include_usage: bool,
    ) -> Result<Response, (RequestMeter, ApiError)> {
        meter.mark_streaming();
        let timeout = app.config.upstream_timeout;
        let request_id = meter.request_id().to_owned();
        let provider_name = meter.provider().to_owned();
        let hasher = crate::routes::receipts::signer_for(&app, meter.endpoint()).map(|_| BodyHasher::default());
        let show_receipt = meter.key().settings().router_headers;
        let stop = Box::pin(app.stopping.clone().cancelled_owned());
        // Counted until the state drops (`Drop for StreamState`), whichever way the stream ends.
        app.open_streams.fetch_add(1, Ordering::Relaxed);
        let mut state = Box::new(StreamState {
            app,
            decoder,
            upstream: Some(upstream),
            splitter: SseSplitter::default(),
            scratch: Vec::new(),
            decoded: Vec::new(),
            out: Outbox {
                ready: VecDeque::new(),
                hasher,
            },
            show_receipt,
            meter: Some(meter),
            sealing: None,
            include_usage,
            client_gone: false,
            usage: None,
            held_usage: None,
            saw_done: false,
            saw_error: false,
            saw_data: false,
            broken: false,
            idle: Box::pin(tokio::time::sleep(timeout)),
            stop,
            timeout,
        });
        if let Err(error) = std::future::poll_fn(|cx| state.poll_first_event(cx)).await
            && let Some(meter) = state.meter.take()
        {
            return Err((meter, error));
        }
        let served_model = state.decoder.served_model().map(str::to_owned);
        let mut response = success(
            StatusCode::OK,
            Body::new(MeteredStream { inner: Some(state) }),
            "text/event-stream",
            &request_id,
            served_model.as_deref(),
            &provider_name,
        );
        response
            .headers_mut()
            .insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response.into_response())
    }
}

impl StreamState {
    /// Reads until one event is ready for the client. Fails (with nothing sent) if the upstream
    /// ends, breaks or times out first.
    fn poll_first_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        loop {
            // Nothing has reached the client yet: a broken stream is still a plain 502.
            if self.broken {
                return Poll::Ready(Err(ApiError::new(
                    ErrorKind::UpstreamError,
                    "The upstream provider sent a malformed stream.",
                )));
            }
            // Wait for a data event, not just a comment (keep-alives), so the served model is known.
            if self.saw_data || self.meter.is_none() {
                return Poll::Ready(Ok(()));
            }
            let Some(upstream) = self.upstream.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => self.on_frame(frame),
                Poll::Ready(Some(Err(_))) => {
                    return Poll::Ready(Err(ApiError::new(
                        ErrorKind::UpstreamError,
                        "The upstream stream broke before any event.",
                    )));
                }
                Poll::Ready(None) if self.saw_done || self.usage.is_some() => {
                    self.end(Ending::Complete);
                }
                Poll::Ready(None) => {
                    return Poll::Ready(Err(ApiError::new(
                        ErrorKind::UpstreamError,
                        "The upstream stream ended before any event.",
                    )));
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(ApiError::new(
                            ErrorKind::UpstreamTimeout,
                            "The upstream provider did not start streaming in time.",
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next bytes for the client, or `None` when the stream is over.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(bytes) = self.out.ready.pop_front() {
                return Poll::Ready(Some(bytes));
            }
            if let Some(sealing) = self.sealing.as_mut() {
                let receipt = std::task::ready!(Pin::new(&mut sealing.receipt).poll(cx));
                if let Some(Sealing { meter, last, .. }) = self.sealing.take() {
                    self.write(meter, receipt, last);
                }
                continue;
            }
            if self.broken && self.upstream.is_some() {
                self.end(Ending::Malformed);
                continue;
            }
            let Some(upstream) = self.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => self.on_frame(frame),
                Poll::Ready(Some(Err(_))) => self.end(Ending::Cut),
                Poll::Ready(None) => self.end(Ending::Complete),
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        self.end(Ending::Timeout);
                        continue;
                    }
                    if self.stop.as_mut().poll(cx).is_ready() {
                        self.end(Ending::Shutdown);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame<Bytes>) {
        let Ok(data) = frame.into_data() else {
            return;
        };
        self.idle.as_mut().reset(Instant::now() + self.timeout);
        let mut events = std::mem::take(&mut self.scratch);
        self.broken |= self.splitter.push(data, &mut events).is_err();
        for event in events.drain(..) {
            self.on_event(event);
        }
        self.scratch = events;
    }

    fn on_event(&mut self, event: Bytes) {
        if self.broken {
            return;
        }
        let Some(data) = event_data(&event) else {
            // Comments and keep-alives pass through.
            self.out.push(event);
            return;
        };
        self.saw_data = true;
        if let Some(meter) = self.meter.as_mut() {
            meter.mark_first_byte();
        }
        let decoded = self.decoder.decode(&event, data, &mut self.decoded);
        if decoded.malformed {
            // Nothing after garbage can be trusted; the stream ends here.
            self.decoded.clear();
            self.broken = true;
            return;
        }
        for bytes in self.decoded.drain(..) {
            self.out.push(bytes);
        }
        if let Some(usage) = decoded.usage {
            // Usage is cumulative where vendors repeat it: the last report wins.
            self.usage = Some(usage);
        }
        if decoded.held.is_some() {
            self.held_usage = decoded.held;
        }
        self.saw_done |= decoded.done;
        self.saw_error |= decoded.error;
    }

    /// The upstream is done: settle, write the record, then queue the final bytes.
    fn end(&mut self, ending: Ending) {
        self.upstream = None;
        if let Some(rest) = self.splitter.remainder() {
            // A last event without its blank line (e.g. `data: [DONE]` then close).
            self.on_event(rest);
        }
        let Some(mut meter) = self.meter.take() else {
            return;
        };
        let error_code = match ending {
            _ if self.client_gone => Some("client_disconnected"),
            Ending::Complete if self.saw_error => Some("upstream_stream_error"),
            Ending::Cut => Some("upstream_stream_cut"),
            Ending::Timeout => Some("upstream_timeout"),
            Ending::Shutdown => Some("gateway_shutdown"),
            Ending::Malformed => Some("upstream_malformed"),
            Ending::Complete if self.usage.is_none() => Some("upstream_usage_missing"),
            Ending::Complete => None,
        };
        let outcome = Outcome {
            status: 200,
            error_code,
            served_model: self.decoder.served_model().map(str::to_owned),
            usage: self.usage.unwrap_or_default(),
            refusal: None,
        };
        // The last bytes need the cost, and the receipt needs the last bytes: both are made
        // with the settled record, and queued only once it is written — with its receipt, once
        // sealed (`poll_next` waits for it). A client that left gets no receipt: nobody received
        // the body it would vouch for.
        let hasher = self.out.hasher.take().filter(|_| !self.client_gone);
        let signer = crate::routes::receipts::signer_for(&self.app, meter.endpoint());
        let held = self.held_usage.take().filter(|_| self.include_usage);
        let record = meter.settle(outcome);
        let mut last: Vec<Bytes> = Vec::with_capacity(2);
        if let Some(held) = held {
            let chunk = with_cost(held.chunk, held.usage_end, &record.cost.to_string());
            last.push(data_event(&chunk));
        }
        last.extend(closing_event(ending, self.saw_done));
        if let (Some(mut hasher), Some(signer)) = (hasher, signer) {
            for bytes in &last {
                hasher.update(bytes);
            }
            let receipt =
                crate::routes::receipts::seal(signer, record, self.decoder.upstream_response_id(), &hasher.finish());
            self.sealing = Some(Sealing { meter, receipt, last });
            return;
        }
        self.write(meter, None, last);
    }

    /// Writes the settled record with its receipt, then queues the last bytes — or, if the
    /// record cannot be written, an error event instead of them.
    fn write(&mut self, meter: RequestMeter, receipt: Option<Sealed>, last: Vec<Bytes>) {
        let receipt_line = receipt
            .as_ref()
            .filter(|_| self.show_receipt)
            .map(|receipt| Bytes::from(format!(": receipt {}\n\n", receipt.sent)));
        if let Err(e) = meter.write(receipt.map(|receipt| receipt.kept)) {
            self.out.ready.push_back(error_event(&e));
            return;
        }
        // Already hashed: straight to the client.
        self.out.ready.extend(last);
        self.out.ready.extend(receipt_line);
    }
}

/// A stream's end waiting for its receipt: the settled meter and the last bytes, held until the
/// batch signer answers.
struct Sealing {
    meter: RequestMeter,
    receipt: PendingReceipt,
    last: Vec<Bytes>,
}

/// What ends a stream that ended this way, after its usage chunk: `[DONE]` after a complete
/// stream that had one, else an error event saying what went wrong.
fn closing_event(ending: Ending, saw_done: bool) -> Option<Bytes> {
    let error = |kind, message: &'static str| Some(error_event(&ApiError::new(kind, message)));
    match ending {
        Ending::Cut => error(
            ErrorKind::UpstreamError,
            "The upstream provider's stream broke before it finished.",
        ),
        Ending::Timeout => error(
            ErrorKind::UpstreamTimeout,
            "The upstream provider stopped sending events.",
        ),
        Ending::Malformed => error(
            ErrorKind::UpstreamError,
            "The upstream provider sent a malformed stream event.",
        ),
        Ending::Shutdown => error(
            ErrorKind::ShuttingDown,
            "The gateway is restarting and ended this stream; what was sent is billed. Retry.",
        ),
        Ending::Complete if saw_done => Some(Bytes::from_static(b"data: [DONE]\n\n")),
        Ending::Complete => None,
    }
}

/// The bytes queued for the client, each hashed as it is queued when the stream is signed.
struct Outbox {
    ready: VecDeque<Bytes>,
    hasher: Option<BodyHasher>,
}

impl Outbox {
    fn push(&mut self, bytes: Bytes) {
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&bytes);
        }
        self.ready.push_back(bytes);
    }
}

impl http_body::Body for MeteredStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(state) = self.get_mut().inner.as_mut() else {
            return Poll::Ready(None);
        };
        state.poll_next(cx).map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}

impl Drop for MeteredStream {
    /// The client went away before the end: drain the upstream in the background so the request
    /// is billed for what was produced and still gets exactly one record.
    fn drop(&mut self) {
        let Some(mut state) = self.inner.take() else {
            return;
        };
        if state.meter.is_none() {
            return;
        }
        state.client_gone = true;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let tasks = state.app.tasks.clone();
                tasks.spawn_on(
                    async move { while std::future::poll_fn(|cx| state.poll_next(cx)).await.is_some() {} },
                    &runtime,
                );
            }
            // No runtime to drain on: the state's own drop records what was seen.
            Err(_) => drop(state),
        }
    }
}

impl Drop for StreamState {
    /// Dropped before the stream ended — its drain task stopped with the runtime at the shutdown
    /// deadline: the stream still gets its one record, with what was seen so far.
    fn drop(&mut self) {
        if self.meter.is_some() {
            self.client_gone = true;
            self.end(Ending::Cut);
        }
        self.app.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
