//! A connection's socket as hyper sees it, noting when the client stops reading: a response
//! whose writes stay blocked past the allowance marks the connection stalled (a slow-read
//! attack would otherwise hold a busy connection, which the cap never evicts, forever).
//!
//! Only a blocked write costs a clock read; a write that goes through costs one relaxed load.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::registry::ConnState;

/// The socket, watched.
pub(super) struct WatchedIo {
    io: TokioIo<TcpStream>,
    conn: Arc<ConnState>,
}

impl WatchedIo {
    /// The socket, once hyper is done with it.
    pub(super) fn into_inner(self) -> TcpStream {
        self.io.into_inner()
    }

    pub(super) fn new(tcp: TcpStream, conn: Arc<ConnState>) -> WatchedIo {
        WatchedIo {
            io: TokioIo::new(tcp),
            conn,
        }
    }

    fn noted<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &poll {
            Poll::Pending => self.conn.write_blocked(),
            Poll::Ready(_) => self.conn.write_went_through(),
        }
        poll
    }
}

impl Read for WatchedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for WatchedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.noted(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.noted(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
