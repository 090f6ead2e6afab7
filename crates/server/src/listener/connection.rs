//! One client connection's task: hyper's HTTP/1 connection, its header-read and keep-alive
//! timer, and the eviction and shutdown signals (see the module doc of `listener`).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Edge;
use super::registry::{Check, Closing, Registration};
use super::service::ConnectionService;
use super::socket::WatchedIo;

/// The two idle allowances, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    header_read_ms: u64,
    keep_alive_ms: u64,
}

impl Timeouts {
    pub(super) fn new(header_read: Duration, keep_alive: Duration) -> Timeouts {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Timeouts {
            header_read_ms: ms(header_read),
            keep_alive_ms: ms(keep_alive),
        }
    }
}

/// Serves one connection until it ends, times out, is evicted or is drained.
pub(super) async fn run(edge: Arc<Edge>, registration: Registration, tcp: TcpStream, peer: SocketAddr) {
    let state = registration.state().clone();
    let Timeouts {
        header_read_ms,
        keep_alive_ms,
    } = edge.timeouts;
    let service = ConnectionService::new(edge.app.clone(), state.clone());
    // Polled without hyper's own shutdown, so that the socket comes back for `linger`.
    let mut conn = edge.http.serve_connection(WatchedIo::new(tcp, state.clone()), service);
    let first_check = state.instant_at(state.now_ms().saturating_add(header_read_ms));
    let mut timer = pin!(tokio::time::sleep_until(first_check.into()));
    let mut draining = false;
    let ended_by_hyper = loop {
        tokio::select! {
            result = poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                break true;
            }
            () = &mut timer => match state.check(state.now_ms(), header_read_ms, keep_alive_ms) {
                Check::Close => {
                    tracing::debug!(%peer, "closing a connection idle (or not reading) past its allowance");
                    break false;
                }
                Check::At(ms) => timer.as_mut().reset(state.instant_at(ms).into()),
            },
            () = state.wake.notified() => {
                let closing = state.closing();
                if closing == Closing::No {
                    continue;
                }
                if !state.is_busy() {
                    break false;
                }
                if closing == Closing::Evict {
                    // A request arrived since the eviction was decided: it is served.
                    state.spare();
                } else if !draining {
                    // The request in flight finishes; then hyper closes the connection.
                    Pin::new(&mut conn).graceful_shutdown();
                    draining = true;
                }
            }
        }
    };
    if ended_by_hyper {
        linger(conn.into_parts().io.into_inner()).await;
    }
    // Dropping the socket closes it; dropping the registration frees its place.
    drop(registration);
}

/// The longest a closing connection's late request bytes are read and discarded.
const LINGER: Duration = Duration::from_secs(5);
/// The most bytes discarded so.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// nginx's lingering close. A response may go out before its request's body was read (a refused
/// key is answered from the head alone, so an unauthenticated client cannot make the gateway
/// buffer its body), and hyper then closes the connection. Closing a socket with received bytes
/// unread makes the kernel send a reset, and a reset can destroy the response before the client
/// reads it: a client uploading a large body with a bad key saw "connection reset" instead of
/// its 401. So the write side is closed first (the client sees the whole response, then the
/// end), and what the client still sends is read and discarded, bounded in time and bytes. A
/// client that closed first costs one read that returns at once.
async fn linger(mut tcp: TcpStream) {
    if tcp.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    // Usually the client has closed: the first read, into a small buffer, says so.
    let mut first = [0u8; 256];
    let mut discarded = match tokio::time::timeout_at(deadline, tcp.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    let mut scratch = vec![0u8; 16 * 1024];
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}
