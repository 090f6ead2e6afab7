//! A metered stream: forwards the upstream's server-sent events to the client as they arrive
//! (through the provider's decoder, which passes OpenAI events untouched and translates other
//! formats into OpenAI chunks), reads usage from them, and — before the last bytes (the usage
//! chunk and `[DONE]`) go out — settles and writes the usage record. If the client goes away mid-stream, the rest of the
//! upstream stream is drained in the background so the request is still billed for what the
//! upstream produced and still gets its one record.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
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

use crate::record::{Outcome, RequestMeter};
use crate::routes::upstream::{fail, success};
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
    ready: VecDeque<Bytes>,
    meter: Option<RequestMeter>,
    include_usage: bool,
    client_gone: bool,
    usage: Option<TokenUsage>,
    held_usage: Option<HeldUsage>,
    saw_done: bool,
    saw_error: bool,
    saw_data: bool,
    broken: bool,
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl MeteredStream {
    /// Starts forwarding. Waits for the first event so the served model can go in the headers;
    /// if the upstream fails before any event, the client gets a plain error response instead.
    pub(crate) async fn start(
        app: Arc<AppState>,
        mut meter: RequestMeter,
        decoder: Box<dyn StreamDecoder>,
        upstream: Incoming,
        include_usage: bool,
    ) -> Response {
        meter.streamed = true;
        let timeout = app.config.upstream_timeout;
        let request_id = meter.request_id.clone();
        let provider_name = meter.provider.clone();
        let mut state = Box::new(StreamState {
            app,
            decoder,
            upstream: Some(upstream),
            splitter: SseSplitter::default(),
            scratch: Vec::new(),
            decoded: Vec::new(),
            ready: VecDeque::new(),
            meter: Some(meter),
            include_usage,
            client_gone: false,
            usage: None,
            held_usage: None,
            saw_done: false,
            saw_error: false,
            saw_data: false,
            broken: false,
            idle: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        });
        if let Err(error) = std::future::poll_fn(|cx| state.poll_first_event(cx)).await
            && let Some(meter) = state.meter.take()
        {
            return fail(meter, error);
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
        response.into_response()
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
            if let Some(bytes) = self.ready.pop_front() {
                return Poll::Ready(Some(bytes));
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
            self.ready.push_back(event);
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
        self.ready.extend(self.decoded.drain(..));
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
        let Some(meter) = self.meter.take() else {
            return;
        };
        let error_code = match ending {
            _ if self.client_gone => Some("client_disconnected"),
            Ending::Complete if self.saw_error => Some("upstream_stream_error"),
            Ending::Cut => Some("upstream_stream_cut"),
            Ending::Timeout => Some("upstream_timeout"),
            Ending::Malformed => Some("upstream_malformed"),
            Ending::Complete if self.usage.is_none() => Some("upstream_usage_missing"),
            Ending::Complete => None,
        };
        let outcome = Outcome {
            status: 200,
            error_code,
            served_model: self.decoder.served_model().map(str::to_owned),
            usage: self.usage.unwrap_or_default(),
        };
        let cost = match meter.finish(outcome) {
            Ok(cost) => cost,
            Err(e) => {
                self.ready.push_back(error_event(&e));
                return;
            }
        };
        if let Some(held) = self.held_usage.take()
            && self.include_usage
        {
            let chunk = with_cost(held.chunk, held.usage_end, &cost.to_string());
            self.ready.push_back(data_event(&chunk));
        }
        match ending {
            Ending::Cut => self.ready.push_back(error_event(&ApiError::new(
                ErrorKind::UpstreamError,
                "The upstream provider's stream broke before it finished.",
            ))),
            Ending::Timeout => self.ready.push_back(error_event(&ApiError::new(
                ErrorKind::UpstreamTimeout,
                "The upstream provider stopped sending events.",
            ))),
            Ending::Malformed => self.ready.push_back(error_event(&ApiError::new(
                ErrorKind::UpstreamError,
                "The upstream provider sent a malformed stream event.",
            ))),
            Ending::Complete if self.saw_done => self.ready.push_back(Bytes::from_static(b"data: [DONE]\n\n")),
            Ending::Complete => {}
        }
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
    }
}
