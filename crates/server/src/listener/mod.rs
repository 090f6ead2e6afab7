//! The HTTP edge: the gateway's own accept loop around hyper's HTTP/1 connections, so that it
//! stays reachable under slow or numerous clients and stops on time. `cli/serve.rs` only wires it.
//!
//! - **Header-read and keep-alive timeouts.** hyper 1.12's `header_read_timeout` starts its timer
//!   whenever a connection waits for a request head — on accept *and* each time a keep-alive
//!   connection goes idle (`proto/h1/conn.rs`, `State::idle` re-arms it) — so it would be both
//!   deadlines at once, and it boxes and registers a new timer for every request. Instead each
//!   connection task keeps one timer of its own, re-armed only when it fires: a new connection
//!   must deliver a complete request head within [`EdgeConfig::header_read_timeout`]; between
//!   requests (idle, or sending its next head) it is closed after
//!   [`EdgeConfig::keep_alive_timeout`]. A request in flight is never timed out here (its body
//!   read and its upstream call have their own deadlines), unless the client stops reading its
//!   response: writes blocked for the keep-alive allowance close the connection (`socket.rs`), so a
//!   slow reader cannot hold a busy connection, which the cap never evicts, forever.
//! - **A connection cap that keeps legitimate clients in.** At [`EdgeConfig::max_connections`] a
//!   new connection evicts a connection with no request in flight — the oldest that never
//!   completed a request head (a slow-loris) first, else the longest idle one — so a flood of
//!   half-open connections cannot shut out a health check. Only when every connection has a
//!   request in flight is the newcomer refused: a 503 `server_busy` with `Retry-After`, then
//!   closed. The default cap comes from the file-descriptor limit ([`default_max_connections`]).
//! - **Graceful shutdown with a deadline.** Stop accepting (the listening socket closes), close idle
//!   connections at once, let requests in flight finish (keep-alive off), and close whatever is
//!   left when [`EdgeConfig::shutdown_timeout`] has passed.
//!
//! The hot path pays no lock, allocation, spawn or timer for this: per request, two atomic
//! counters and one clock read when the response ends; per socket write, one relaxed load. The
//! peer address reaches handlers through a task-local set once per connection ([`peer`]), not a
//! request extension (axum's `ConnectInfo` boxes one per request). Connections are registered under a lock once
//! when accepted and once when closed.

mod connection;
mod registry;
mod service;
mod socket;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use router_one_core::{ApiError, ErrorKind};

use crate::log_throttle::Throttle;
use connection::Timeouts;
use registry::Registry;

/// File descriptors kept back from client connections for everything else the process opens:
/// stdio, the runtime's epoll and event descriptors, the listener, the SQLite pool (database,
/// WAL and shared memory per connection), the usage journal, the demo's simulator.
const RESERVED_FDS: u64 = 128;
/// The derived cap never exceeds this: past it, memory (up to [`MAX_BUF_BYTES`] of buffer per
/// connection) rather than descriptors is what runs out. An operator raises it explicitly.
const MAX_DERIVED_CONNECTIONS: u64 = 10_000;
/// The derived cap never goes below this, however low the descriptor limit.
const MIN_DERIVED_CONNECTIONS: u64 = 16;
/// hyper's read buffer per connection, which also bounds a request head (larger: 431). hyper's
/// default (~400 KiB) would let each half-open connection pin that much memory.
const MAX_BUF_BYTES: usize = 64 * 1024;

tokio::task_local! {
    /// The peer address of the connection whose task is running: set once around each
    /// connection's task (hyper runs its requests' handlers inside it), so a handler can know its
    /// client without a per-request extension (which would cost an allocation per request).
    static PEER: SocketAddr;
}

/// The address of the client whose connection is serving the current request, when the request
/// came through [`serve`].
pub(crate) fn peer() -> Option<SocketAddr> {
    PEER.try_with(|peer| *peer).ok()
}

/// How the edge treats client connections.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// From accept to a complete first request head; a connection that has not sent one by then
    /// is closed.
    pub header_read_timeout: Duration,
    /// From the end of a response to the next complete request head; an idle keep-alive
    /// connection is closed after it.
    pub keep_alive_timeout: Duration,
    /// Most client connections open at once (see the module doc for what happens at the cap).
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take to finish before their connections are
    /// closed by force.
    pub shutdown_timeout: Duration,
    /// Cancelled when `shutdown_timeout` has passed: what still runs ends itself cleanly (a
    /// stream sends its error event and writes its record) within [`FLUSH_ALLOWANCE`], then
    /// the rest is closed.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// After the shutdown deadline, how long connections get to send the clean endings of their
/// requests before they are closed.
pub const FLUSH_ALLOWANCE: Duration = Duration::from_secs(1);

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still busy when the shutdown deadline passed, closed by force.
    pub forced: usize,
}

/// How many connections may wait for `accept` (the kernel caps it at `net.core.somaxconn`,
/// 4,096 on current Linux). The standard library's and tokio's `bind` ask for 128: a burst of a
/// few hundred connects (a relay's pool opening, a benchmark starting) overflowed it on a busy
/// 2-core host (`nstat`'s `TcpExtListenOverflows`), and a connection whose handshake is dropped
/// that way waits for a retransmission, a second or more, before it is even accepted.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `address` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's
/// `bind` sets it, so a restart does not wait for the old connections' `TIME_WAIT`).
pub fn bind(address: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit now in force (on a
/// platform without the limit, `None`). Each client connection costs a descriptor, and so does
/// each upstream connection: the common default soft limit of 1,024 is too low for a gateway.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The default connection cap for a file-descriptor limit: every client connection may need an
/// upstream connection too (in flight, or idle in the pool), and [`RESERVED_FDS`] are kept for
/// the rest, so `(limit − 128) / 2`, within 16 ..= 10,000. With a limit of 1,024 that is 448.
pub fn default_max_connections(fd_limit: u64) -> usize {
    let derived = fd_limit.saturating_sub(RESERVED_FDS) / 2;
    let capped = derived.clamp(MIN_DERIVED_CONNECTIONS, MAX_DERIVED_CONNECTIONS);
    usize::try_from(capped).unwrap_or(usize::MAX)
}

/// Serves `app` on `listener` until `shutdown` completes, then drains (module doc).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: EdgeConfig,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let registry = Arc::new(Registry::new(config.max_connections.max(1)));
    let edge = Arc::new(Edge {
        // As axum's own server does: turns every handler into its final boxed route once, rather
        // than on each request.
        app: app.with_state(()),
        http: http1_builder(),
        timeouts: Timeouts::new(config.header_read_timeout, config.keep_alive_timeout),
        busy_response: busy_response(),
    });
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match registry.admit() {
                    Some(registration) => {
                        // Small SSE frames must not wait for Nagle.
                        let _ = tcp.set_nodelay(true);
                        tasks.spawn(PEER.scope(peer, connection::run(edge.clone(), registration, tcp, peer)));
                    }
                    None => refuse(&tcp, &edge.busy_response),
                },
                Err(e) => accept_failed(&e, &registry).await,
            },
        }
    }
    drop(listener);
    drain(&registry, tasks, config.shutdown_timeout, &config.stopping).await
}

/// What every connection task shares.
struct Edge {
    app: Router,
    http: http1::Builder,
    timeouts: Timeouts,
    busy_response: Vec<u8>,
}

fn http1_builder() -> http1::Builder {
    let mut http = http1::Builder::new();
    // The connection task enforces both timeouts itself (module doc); hyper's would need a
    // timer per request.
    http.header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(MAX_BUF_BYTES);
    http
}

/// Closes every connection that is idle, lets busy ones finish until `deadline`, then tells
/// what still runs to end cleanly (`stopping`), gives that [`FLUSH_ALLOWANCE`], and closes the
/// rest.
async fn drain(
    registry: &Registry,
    mut tasks: JoinSet<()>,
    deadline: Duration,
    stopping: &tokio_util::sync::CancellationToken,
) -> Stopped {
    registry.drain();
    let mut deadline = pin!(tokio::time::sleep(deadline));
    let mut flushing = false;
    let forced = loop {
        tokio::select! {
            () = &mut deadline => {
                if flushing {
                    break tasks.len();
                }
                flushing = true;
                stopping.cancel();
                deadline.as_mut().reset(tokio::time::Instant::now() + FLUSH_ALLOWANCE);
            }
            next = tasks.join_next() => if next.is_none() { break 0 },
        }
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Stopped { forced }
}

/// Every connection has a request in flight: answer 503 without reading the request, and close.
/// Best effort and never blocking: a fresh socket's send buffer takes the few hundred bytes.
fn refuse(tcp: &TcpStream, response: &[u8]) {
    static REFUSED: Throttle = Throttle::per_minute();
    if let Some(count) = REFUSED.hit() {
        tracing::warn!(
            count,
            "connection cap reached with every connection busy: new connections refused (503)"
        );
    }
    let _ = tcp.try_write(response);
    // What the client already sent, read so that closing sends FIN rather than RST (which could
    // discard the answer before the client reads it).
    let mut scratch = [0u8; 2048];
    let _ = tcp.try_read(&mut scratch);
}

/// The 503 a refused connection gets, from the one error table.
fn busy_response() -> Vec<u8> {
    let error = ApiError::new(
        ErrorKind::ServerBusy,
        "The gateway is at its connection limit with every connection busy; retry shortly.",
    );
    let body = error.to_json();
    let (status, _, _) = ErrorKind::ServerBusy.parts();
    let mut response = format!(
        "HTTP/1.1 {status} Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

/// `accept` failed. A connection the peer abandoned is nothing; out of descriptors (EMFILE,
/// ENFILE) or memory, the connection waits in the backlog: free a descriptor by evicting an idle
/// connection, and back off a little so the loop does not spin.
async fn accept_failed(e: &io::Error, registry: &Registry) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    static FAILED: Throttle = Throttle::per_minute();
    if let Some(count) = FAILED.hit() {
        tracing::warn!(error = %e, count, "accepting a connection failed");
    }
    let pause = if registry.evict_one() { 5 } else { 100 };
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
