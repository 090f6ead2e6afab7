//! The service hyper calls for each request of one connection: the axum router, with the
//! connection marked busy from the request head until its response ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::Body;
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tower::Service;

use super::registry::ConnState;

/// The per-connection service.
pub(super) struct ConnectionService {
    app: Router,
    conn: Arc<ConnState>,
}

impl ConnectionService {
    pub(super) fn new(app: Router, conn: Arc<ConnState>) -> ConnectionService {
        ConnectionService { app, conn }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedResponse;

    fn call(&self, request: Request<Incoming>) -> TrackedResponse {
        let in_flight = InFlight::start(&self.conn);
        // `Router` is an `Arc`; axum's own server clones it per request too. It is always ready.
        let future = self.app.clone().call(request);
        TrackedResponse {
            future,
            in_flight: Some(in_flight),
        }
    }
}

/// Marks its connection busy while it lives: from the request head to the end of the response
/// body (or until hyper drops the request, e.g. when the client leaves).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(conn: &Arc<ConnState>) -> InFlight {
        conn.request_started();
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The router's response future, carrying the in-flight mark into the response body.
pub(super) struct TrackedResponse {
    future: RouteFuture<Infallible>,
    in_flight: Option<InFlight>,
}

impl Future for TrackedResponse {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both fields are `Unpin` (the route future boxes its inner service's future).
        let this = &mut *self;
        let response = ready!(Pin::new(&mut this.future).poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that ends its request's in-flight mark when hyper drops it (at its end).
pub(super) struct TrackedBody {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
