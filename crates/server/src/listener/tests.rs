//! The accept loop over real sockets, against a two-route app: `/fast` answers at once, `/slow`
//! when the test lets it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use super::*;

/// Bounds every wait, so a broken edge fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);
/// A response far larger than the kernel buffers of a small-window client connection.
const BIG: usize = 16 << 20;

struct Server {
    addr: SocketAddr,
    release_slow: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    stopped: tokio::task::JoinHandle<Stopped>,
}

async fn start(config: EdgeConfig) -> Server {
    let release_slow = Arc::new(Notify::new());
    let release = release_slow.clone();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route("/big", get(|| async { vec![b'x'; BIG] }))
        .route(
            "/stream",
            get(|| async {
                let chunks = (0..BIG >> 20).map(|_| Ok::<_, std::convert::Infallible>(vec![b'x'; 1 << 20]));
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            get(move || {
                let release = release.clone();
                async move {
                    release.notified().await;
                    "slow"
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let stopped = tokio::spawn(serve(listener, app, config, async {
        let _ = stop_rx.await;
    }));
    Server {
        addr,
        release_slow,
        stop: Some(stop),
        stopped,
    }
}

fn config(max_connections: usize) -> EdgeConfig {
    EdgeConfig {
        header_read_timeout: Duration::from_secs(60),
        keep_alive_timeout: Duration::from_secs(60),
        max_connections,
        shutdown_timeout: Duration::from_secs(60),
        stopping: tokio_util::sync::CancellationToken::new(),
    }
}

async fn get_on(conn: &mut TcpStream, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, conn.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits for the server to close `conn`; what it sent before closing.
async fn closed(conn: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut all))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&all).into_owned()
}

/// A connection whose `/slow` request is in flight (its head has had time to arrive).
async fn in_flight(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn
}

async fn half_open(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /fast HTTP/1.1\r\nhost: t\r\nx-slow")
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_connection_that_stalls_in_its_request_head_is_closed_after_the_header_timeout() {
    let server = start(EdgeConfig {
        header_read_timeout: Duration::from_millis(200),
        ..config(8)
    })
    .await;
    let mut stalled = half_open(server.addr).await;
    assert_eq!(closed(&mut stalled).await, "", "closed without an answer");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout_but_never_mid_request() {
    let server = start(EdgeConfig {
        header_read_timeout: Duration::from_millis(100),
        keep_alive_timeout: Duration::from_millis(300),
        ..config(8)
    })
    .await;
    // In flight far longer than either timeout: it is not cut.
    let mut conn = in_flight(server.addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.release_slow.notify_one();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("slow"));
    assert!(
        get_on(&mut conn, "/fast").await.ends_with("fast"),
        "kept alive between requests"
    );
    assert_eq!(closed(&mut conn).await, "", "then closed once idle");
}

/// A client connection whose receive buffer is small, so the server's writes block soon after
/// the client stops reading.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes or the response is complete; the bytes received. `pause` after
/// each MiB makes a slow but steady reader.
async fn read_all(conn: &mut TcpStream, pause: Duration) -> usize {
    let (mut received, mut next_pause) = (0, 1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(PATIENCE, conn.read(&mut buf)).await {
        received += n;
        if received >= BIG {
            break;
        }
        if received >= next_pause {
            next_pause += 1 << 20;
            tokio::time::sleep(pause).await;
        }
    }
    received
}

fn reading_allowance() -> EdgeConfig {
    EdgeConfig {
        header_read_timeout: Duration::from_millis(100),
        keep_alive_timeout: Duration::from_millis(300),
        ..config(8)
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_closed() {
    let server = start(reading_allowance()).await;
    let mut reader = small_window(server.addr).await;
    reader
        .write_all(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // Not reading, long past the allowance; then what arrives is less than the response.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = read_all(&mut reader, Duration::ZERO).await;
    assert!(
        received < BIG,
        "the whole response arrived: the stalled connection was kept"
    );
}

#[tokio::test]
async fn a_slow_but_steady_reader_gets_its_whole_response() {
    let server = start(reading_allowance()).await;
    let mut reader = small_window(server.addr).await;
    // A body hyper takes whole: it is still being flushed long after the request ended.
    reader.write_all(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let received = read_all(&mut reader, Duration::from_millis(100)).await;
    assert!(received >= BIG, "cut after {received} bytes");
}

#[tokio::test]
async fn at_the_cap_half_open_connections_are_evicted_so_new_clients_are_served() {
    let server = start(config(4)).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(half_open(server.addr).await);
    }
    for _ in 0..5 {
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        assert!(get_on(&mut client, "/fast").await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(closed(&mut stalled[0]).await, "", "the oldest stalled one was evicted");
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_refused_with_a_clean_503() {
    let server = start(config(2)).await;
    let _busy = [in_flight(server.addr).await, in_flight(server.addr).await];
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let answer = closed(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n") && answer.contains("connection: close\r\n"));
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "server_busy");
    assert_eq!(body["error"]["type"], "server_error");
    server.release_slow.notify_waiters();
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_lets_requests_in_flight_finish() {
    let mut server = start(config(8)).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut idle, "/fast").await.ends_with("fast"));
    let mut stalled = half_open(server.addr).await;
    let mut in_flight = in_flight(server.addr).await;
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(closed(&mut idle).await, "");
    assert_eq!(closed(&mut stalled).await, "");
    assert!(TcpStream::connect(server.addr).await.is_err(), "no longer accepting");
    server.release_slow.notify_one();
    assert!(closed(&mut in_flight).await.ends_with("slow"), "finished, then closed");
    let stopped = tokio::time::timeout(PATIENCE, server.stopped).await.unwrap().unwrap();
    assert_eq!(stopped, Stopped { forced: 0 });
}

#[tokio::test]
async fn shutdown_closes_what_is_still_busy_at_the_deadline() {
    let mut server = start(EdgeConfig {
        shutdown_timeout: Duration::from_millis(300),
        stopping: tokio_util::sync::CancellationToken::new(),
        ..config(8)
    })
    .await;
    let mut in_flight = in_flight(server.addr).await;
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(closed(&mut in_flight).await, "", "cut at the deadline");
    let stopped = tokio::time::timeout(PATIENCE, server.stopped).await.unwrap().unwrap();
    assert_eq!(stopped, Stopped { forced: 1 });
}

#[test]
fn the_default_cap_leaves_room_for_upstream_connections_and_the_rest() {
    assert_eq!(default_max_connections(1024), 448);
    assert_eq!(default_max_connections(20), 16);
    assert_eq!(default_max_connections(1 << 20), 10_000);
}

#[tokio::test]
async fn a_burst_of_connects_waits_in_the_backlog_until_accepted() {
    // More than the 128 a plain `bind` asks for (whose 129th handshake would be dropped and
    // retried a second later, then again), and within the file-descriptor limit of 1,024.
    const BURST: usize = 300;
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nobody accepts while the burst connects: every handshake must complete into the backlog.
    let connects = futures_util::future::join_all((0..BURST).map(|_| TcpStream::connect(addr)));
    let clients = tokio::time::timeout(PATIENCE, connects)
        .await
        .expect("connects never completed: the backlog overflowed");
    assert!(clients.iter().all(Result::is_ok));
    for i in 0..BURST {
        let accepted = tokio::time::timeout(PATIENCE, listener.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))), "connection {i} never reached accept");
    }
}
