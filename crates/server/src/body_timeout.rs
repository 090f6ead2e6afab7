//! A request body must keep arriving: one that stalls for [`BODY_IDLE_TIMEOUT`] between two
//! frames fails (its handler answers 400 and the connection is freed), so a client that stops
//! sending mid-body cannot hold a connection forever.
//!
//! tower-http's `RequestBodyTimeoutLayer`, used before, created and registered a timer before
//! every frame it read: two per request on the hot path (the data frame and the end of the body),
//! each taken from and given back to the runtime's timer wheel. Here the timer is armed only when
//! the client actually makes the gateway wait: a body already in hyper's buffer when the handler
//! reads it — nearly every API request — costs no timer at all, and a slow upload re-arms one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::BoxError;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How long a request body may go without a new frame.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client stopped sending its body.
#[derive(Debug)]
pub(crate) struct Stalled(Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body stalled for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

/// `request`'s body, failing after [`BODY_IDLE_TIMEOUT`] without a frame (the app's outermost
/// layer).
pub(crate) fn limit_idle(request: http::Request<Body>) -> http::Request<Body> {
    request.map(|body| Body::new(IdleTimeout::new(body, BODY_IDLE_TIMEOUT)))
}

/// A body that fails once it has made its reader wait `idle` for one frame.
pub(crate) struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Made the first time the reader has to wait, and re-armed each later time.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timer = match &mut this.timer {
            Some(timer) => {
                if !this.armed {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                timer
            }
            none => none.insert(Box::pin(tokio::time::sleep(this.idle))),
        };
        this.armed = true;
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(Stalled(this.idle)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_body_that_is_already_there_arms_no_timer() {
        let mut body = IdleTimeout::new(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")), IDLE);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"{\"model\":\"m\"}"));
        assert!(body.frame().await.is_none());
        assert!(
            body.timer.is_none(),
            "no timer for a body that never made its reader wait"
        );
    }

    /// A body whose frames come from a channel.
    struct Received(tokio::sync::mpsc::Receiver<Bytes>);

    impl HttpBody for Received {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|data| data.map(|data| Ok(Frame::data(data))))
        }
    }

    /// One frame after each delay, then nothing more (the body never ends).
    fn trickled(delays: Vec<Duration>) -> IdleTimeout<Received> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for delay in delays {
                tokio::time::sleep(delay).await;
                if sender.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        IdleTimeout::new(Received(receiver), IDLE)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_arriving_is_read_and_one_that_stalls_fails_after_the_idle_time() {
        let start = Instant::now();
        let mut body = trickled(vec![Duration::from_secs(59); 3]);
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"x"));
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(177),
            "each frame came within the idle time"
        );
        let stalled = body.frame().await.unwrap().unwrap_err();
        assert!(stalled.is::<Stalled>(), "{stalled}");
        assert_eq!(start.elapsed(), Duration::from_secs(177 + 60));
    }
}
