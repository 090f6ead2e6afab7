//! One accepted TCP connection: HTTP/1.1 served by hyper, plus the one thing hyper cannot do for
//! us, an abortive close (TCP RST) on request for the `reset` directive.

use std::future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::SimState;

/// Lets a request handler reset the connection it arrived on.
#[derive(Debug, Default)]
pub(crate) struct ConnControl {
    reset: Notify,
}

impl ConnControl {
    /// Asks the connection task to drop the connection with a TCP RST, and never returns: the
    /// handler's future is dropped along with the connection.
    pub(crate) async fn reset(&self) -> ! {
        self.reset.notify_one();
        future::pending().await
    }
}

/// Serves one connection until the peer closes it, it fails, or a handler asks for a reset.
pub(crate) async fn serve_connection(mut stream: TcpStream, state: &SimState) {
    // Streamed words must leave as soon as they are written, not when Nagle decides.
    let _ = stream.set_nodelay(true);
    let control = ConnControl::default();
    let reset_requested = {
        let service = service_fn(|request| crate::exchange::route(request, state, &control));
        let connection = http1::Builder::new().serve_connection(TokioIo::new(&mut stream), service);
        tokio::select! {
            biased;
            () = control.reset.notified() => true,
            _ = connection => false,
        }
    };
    if reset_requested {
        // SO_LINGER 0 turns the close on drop into an RST, which clients see as a connection
        // error rather than a clean end of stream.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
}
