//! One client connection's task: hyper's HTTP/1 connection, its header-read and keep-alive
//! timer, and the eviction and shutdown signals (see the module doc of `listener`).

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

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
    let mut conn = pin!(edge.http.serve_connection(WatchedIo::new(tcp, state.clone()), service));
    let first_check = state.instant_at(state.now_ms().saturating_add(header_read_ms));
    let mut timer = pin!(tokio::time::sleep_until(first_check.into()));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                break;
            }
            () = &mut timer => match state.check(state.now_ms(), header_read_ms, keep_alive_ms) {
                Check::Close => {
                    tracing::debug!(%peer, "closing a connection idle (or not reading) past its allowance");
                    break;
                }
                Check::At(ms) => timer.as_mut().reset(state.instant_at(ms).into()),
            },
            () = state.wake.notified() => {
                let closing = state.closing();
                if closing == Closing::No {
                    continue;
                }
                if !state.is_busy() {
                    break;
                }
                if closing == Closing::Evict {
                    // A request arrived since the eviction was decided: it is served.
                    state.spare();
                } else if !draining {
                    // The request in flight finishes; then hyper closes the connection.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
    // Dropping the connection closes the socket; dropping the registration frees its place.
    drop(registration);
}
