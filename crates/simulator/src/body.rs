//! Response bodies: a whole body at once, or a paced event stream that may end abruptly.
//!
//! A paced stream is written up front into one buffer, split into segments each with the delay
//! to wait before it; consecutive segments without delay leave as one frame, so an unpaced stream
//! costs one write. Format-neutral: the OpenAI SSE writer (and later others) only fill segments.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How long a cut stream waits after its last segment before failing, so that hyper flushes what
/// was already sent instead of discarding it with the connection.
const CUT_FLUSH: Duration = Duration::from_millis(10);

/// The error that ends a cut stream; hyper then drops the connection mid-body.
#[derive(Debug, thiserror::Error)]
#[error("simulated stream cut")]
pub(crate) struct StreamCut;

/// The body of every simulator response.
#[derive(Debug)]
pub(crate) enum SimBody {
    /// A whole body, sent with a `content-length`.
    Full(Option<Bytes>),
    /// A paced stream, sent chunked.
    Paced(Paced),
}

impl SimBody {
    /// A whole body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        SimBody::Full(Some(bytes.into()))
    }
}

/// Builds a [`Paced`] body one segment at a time.
#[derive(Debug, Default)]
pub(crate) struct PacedBuilder {
    buf: Vec<u8>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    end: usize,
    delay: Duration,
}

impl PacedBuilder {
    /// A builder whose buffer starts with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        PacedBuilder {
            buf: Vec::with_capacity(capacity),
            segments: Vec::new(),
        }
    }

    /// Adds a segment sent `delay` after the previous one; `write` appends its bytes.
    pub(crate) fn segment(&mut self, delay: Duration, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.segments.push(Segment {
            end: self.buf.len(),
            delay,
        });
    }

    /// The stream; with `cut`, it ends with an error (an abrupt close) instead of cleanly.
    pub(crate) fn finish(self, cut: bool) -> SimBody {
        SimBody::Paced(Paced {
            data: Bytes::from(self.buf),
            segments: self.segments,
            next: 0,
            pos: 0,
            delay_done: false,
            sleep: None,
            waiting: false,
            ending: if cut {
                Ending::Cut { flushed: false }
            } else {
                Ending::Clean
            },
        })
    }
}

/// A stream of pre-written segments released on a schedule.
#[derive(Debug)]
pub(crate) struct Paced {
    data: Bytes,
    segments: Vec<Segment>,
    /// Index of the next segment to send.
    next: usize,
    /// Byte offset where the next segment starts.
    pos: usize,
    /// Whether the delay before segment `next` has been waited already.
    delay_done: bool,
    /// The one timer of this stream, created on first use and reset after.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` is armed and must elapse before anything else happens.
    waiting: bool,
    ending: Ending,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Clean,
    Cut { flushed: bool },
}

impl Paced {
    fn arm(&mut self, delay: Duration) {
        let deadline = Instant::now() + delay;
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
    }

    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamCut>>> {
        loop {
            if self.waiting {
                if let Some(sleep) = self.sleep.as_mut()
                    && sleep.as_mut().poll(cx).is_pending()
                {
                    return Poll::Pending;
                }
                self.waiting = false;
            }
            let Some(segment) = self.segments.get(self.next).copied() else {
                match self.ending {
                    Ending::Clean => return Poll::Ready(None),
                    Ending::Cut { flushed: true } => return Poll::Ready(Some(Err(StreamCut))),
                    Ending::Cut { flushed: false } => {
                        self.ending = Ending::Cut { flushed: true };
                        self.arm(CUT_FLUSH);
                        continue;
                    }
                }
            };
            if !self.delay_done && !segment.delay.is_zero() {
                self.delay_done = true;
                self.arm(segment.delay);
                continue;
            }
            let start = self.pos;
            let mut end = segment.end;
            self.next += 1;
            while let Some(more) = self.segments.get(self.next).filter(|s| s.delay.is_zero()) {
                end = more.end;
                self.next += 1;
            }
            self.pos = end;
            self.delay_done = false;
            return Poll::Ready(Some(Ok(self.data.slice(start..end))));
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Paced(paced) => paced.poll_segment(cx).map(|r| r.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Paced(_) => SizeHint::default(),
        }
    }
}
